package registry

import (
	"context"
	"strings"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestRecordOfANewerFormatIsNotWrittenBack: while a rolling upgrade overlaps two
// versions, an instance of the older one reads a record the newer one wrote, but
// does not write it back — it would keep only the fields it knows. The change is
// refused as unavailable, to be retried (an instance of the newer version takes it),
// and the stored record keeps what the newer version put in it. A record of this
// format, or of none (written before the format was kept), is written as usual, in
// this format.
func TestRecordOfANewerFormatIsNotWrittenBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	c, _ := open(t, nc, nil)
	if got := e.record(t, c.id).Format; got != sessions.Format {
		t.Fatalf("an opened session's record has format %d, want %d", got, sessions.Format)
	}

	natstest.RewriteJSON(t, e.kv, c.id, func(m map[string]any) {
		m["format"] = sessions.Format + 1
		m["added_by_newer"] = "kept"
	})
	before := e.lastSeq(t)
	var got wire.SessionGetResponse
	if err := c.call(wire.SubjectSessionGet, &wire.SessionGetRequest{}, &got); err != nil {
		t.Fatalf("get of a newer record: %v", err)
	}
	if got.Session.State != wire.StateActive {
		t.Errorf("got state %s, want ACTIVE", got.Session.State)
	}
	for _, tc := range []struct {
		name    string
		subject string
		req     any
	}{
		{"update", wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Set: wire.Properties{"Team": "x"}}},
		{"close", wire.SubjectSessionClose, &wire.SessionCloseRequest{}},
	} {
		err := c.call(tc.subject, tc.req, nil)
		wantCode(t, err, wire.CodeUnavailable)
		if !strings.Contains(err.Error(), "newer version") {
			t.Errorf("%s: got %v, want it to say a newer version wrote the record", tc.name, err)
		}
	}
	if after := e.lastSeq(t); after != before {
		t.Errorf("the refused changes wrote the bucket: sequence %d, then %d", before, after)
	}
	entry, err := e.kv.Get(context.Background(), c.id)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(entry.Value()), `"added_by_newer":"kept"`) {
		t.Errorf("the stored record lost the newer version's field: %s", entry.Value())
	}

	// A record without a format, as written before it was kept.
	natstest.RewriteJSON(t, e.kv, c.id, func(m map[string]any) {
		delete(m, "format")
		delete(m, "added_by_newer")
	})
	if err := c.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Set: wire.Properties{"Team": "x"}}, nil); err != nil {
		t.Fatalf("update of a record without a format: %v", err)
	}
	if r := e.record(t, c.id); r.Format != sessions.Format || r.User["Team"] != "x" {
		t.Errorf("got format %d and Team %q, want %d and x", r.Format, r.User["Team"], sessions.Format)
	}
}
