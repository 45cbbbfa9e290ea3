package registry

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/schematest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestListPagesFitAReply: a page of list is one reply, and a reply larger than the
// server's max_payload (1 MiB) is never sent. Twenty sessions near the record size
// limit (64 KiB) take more than that in one page of the default size: the page
// must stop short of it, with next set, and the pages together list them all.
func TestListPagesFitAReply(t *testing.T) {
	t.Parallel()
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

// TestListRefusesACursorThatIsNoID: after is the id of the last session of the
// previous page. Any other string was taken as a place in the id order, so a cursor
// the client mangled (cut, trimmed, re-encoded) gave a short or empty last page and
// the client took the listing for complete; the schema accepted it too.
func TestListRefusesACursorThatIsNoID(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	adm := admin(t, nc)
	for _, body := range []string{`{"after":"zzz"}`, `{"after":"` + adm.id[:21] + `"}`, `{"after":"` + adm.id + ` "}`, `{"after":"0000000000000000000-00"}`} {
		if err := schematest.Check("session.list.request", []byte(body)); err == nil {
			t.Errorf("the schema accepts %s", body)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := wire.CallRaw(ctx, nc, wire.SubjectSessionList, adm.header(), []byte(body))
		cancel()
		wantCode(t, err, wire.CodeBadRequest)
	}
	// The first page (no cursor, or an empty one) and a real cursor are fine.
	for _, body := range []string{`{}`, `{"after":""}`, `{"after":"` + adm.id + `"}`, `{"after":"0000000000000000000000"}`} {
		schematest.Validate(t, "session.list.request", []byte(body))
		rawCall(t, adm, wire.SubjectSessionList, []byte(body))
	}
}

// TestClosedSessionsListedInFull: the instance keeps a closed session compact for
// the tombstone's retention (sessions.Record.Compact), and a list that includes
// closed sessions still filters on their properties and shows them whole.
func TestClosedSessionsListedInFull(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	adm := admin(t, nc)
	c, opened := open(t, nc, &wire.SessionOpenRequest{Properties: map[string]string{"team": "red", "desk": "fx"}})
	if err := c.call(wire.SubjectSessionClose, &wire.SessionCloseRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	if r := e.reg.track.record(c.id); r == nil || !r.Closed() || r.User != nil {
		t.Fatalf("the tracker keeps %+v, want the compact tombstone", r)
	}
	var page wire.SessionListResponse
	if err := adm.call(wire.SubjectSessionList, &wire.SessionListRequest{Filter: `team is "red"`}, &page); err != nil || page.Total != 0 {
		t.Fatalf("without closed sessions: got %+v (%v), want none", page, err)
	}
	if err := adm.call(wire.SubjectSessionList, &wire.SessionListRequest{Filter: `team is "red" and desk is "fx"`, IncludeClosed: true}, &page); err != nil {
		t.Fatal(err)
	}
	if page.Total != 1 || len(page.Sessions) != 1 {
		t.Fatalf("got %+v, want the closed session", page)
	}
	got, want := page.Sessions[0], opened.Session
	if got.ID != want.ID || got.State != wire.StateClosed || got.CloseReason != wire.ClosedByClient ||
		got.Properties["desk"] != "fx" || got.Fixed["$SessionId"] != want.ID || got.Principal != want.Principal ||
		len(got.Roles) != len(want.Roles) || !got.StartTime.Equal(want.StartTime) || got.ClosedAt == nil {
		t.Errorf("listed %+v\nopened %+v", got, want)
	}
}
