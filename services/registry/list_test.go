package registry

import (
	"fmt"
	"strings"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestListPagesFitAReply: a page of list is one reply, and a reply larger than the
// server's max_payload (1 MiB) is never sent. Twenty sessions near the record size
// limit (64 KiB) take more than that in one page of the default size: the page
// must stop short of it, with next set, and the pages together list them all.
func TestListPagesFitAReply(t *testing.T) {
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	adm := admin(t, nc)
	const n = 20
	want := map[string]bool{}
	for i := range n {
		props := map[string]string{"kind": "big"}
		for j := range 15 {
			props[fmt.Sprintf("p%d", j)] = strings.Repeat(fmt.Sprint(i%10), 4000)
		}
		c, _ := open(t, nc, &wire.SessionOpenRequest{Properties: props})
		want[c.id] = true
	}
	got := map[string]bool{}
	after := ""
	for pages := 0; ; pages++ {
		if pages > n {
			t.Fatalf("more than %d pages", n)
		}
		var page wire.SessionListResponse
		if err := adm.call(wire.SubjectSessionList, &wire.SessionListRequest{Filter: `kind is "big"`, After: after}, &page); err != nil {
			t.Fatalf("list after %q: %v", after, err)
		}
		if page.Total != n {
			t.Fatalf("got total %d, want %d", page.Total, n)
		}
		if len(page.Sessions) == 0 && page.Next != "" {
			t.Fatalf("an empty page with next %q", page.Next)
		}
		for _, s := range page.Sessions {
			if got[s.ID] {
				t.Fatalf("session %s listed twice", s.ID)
			}
			got[s.ID] = true
		}
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	if len(got) != n {
		t.Fatalf("listed %d sessions, want %d", len(got), n)
	}
	for id := range want {
		if !got[id] {
			t.Fatalf("session %s was not listed", id)
		}
	}
}
