package sessions_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestSlimView checks that a Slim view answers Get and Authenticate as a full one
// does for the fields it keeps, that OnChange sees every record in full (the
// initial ones included), and that unseen sessions and rotated tokens are read from
// the bucket as by a full view.
func TestSlimView(t *testing.T) {
	srv := natstest.Start(t)
	id := "0123456789abcdefABCDEF"
	live := &sessions.Record{ID: id, Principal: "alice", Roles: []string{"client", "odd\x00role", ""},
		State: wire.StateActive, TokenHash: sessions.HashToken("t1"), Connection: "srv/7", DeliverKey: "UKEY",
		Fixed: map[string]string{"$Principal": "alice"}, User: map[string]string{"team": "red"}}
	odd := &sessions.Record{ID: "odd", State: wire.StateRecovering, TokenHash: "NOT-A-HASH"}
	put(t, srv, live)
	put(t, srv, odd)

	changes := make(chan sessions.Change, 10)
	view, err := sessions.Watch(context.Background(), srv.JetStream(t), sessions.Slim(),
		sessions.OnChange(func(c sessions.Change) { changes <- c }))
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()
	for range 2 {
		c := <-changes
		if c.ID == id && (c.Prev != nil || c.Record.Properties()["team"] != "red" || c.Record.Principal != "alice") {
			t.Fatalf("got initial change %+v, want the full record", c)
		}
	}

	got, ok := view.Get(id)
	want := &sessions.Record{ID: id, Principal: live.Principal, Roles: live.Roles, State: live.State, TokenHash: live.TokenHash,
		Connection: live.Connection, DeliverKey: live.DeliverKey, Revision: got.Revision}
	if !ok || got.Revision == 0 || !reflect.DeepEqual(got, want) {
		t.Fatalf("Get: got %+v, want %+v", got, want)
	}
	if got, _ := view.Get("odd"); got.TokenHash != "NOT-A-HASH" || got.Roles != nil || got.State != wire.StateRecovering {
		t.Fatalf("Get odd: got %+v", got)
	}
	if view.Len() != 2 {
		t.Fatalf("Len: got %d, want 2", view.Len())
	}
	n := 0
	view.Range(func(r *sessions.Record) bool { n++; return r.Properties() != nil })
	if n != 2 {
		t.Fatalf("Range: saw %d records, want 2", n)
	}

	for _, tc := range []struct {
		name, id, token string
		want            error
	}{
		{"ok", id, "t1", nil},
		{"wrong token", id, "t2", wire.ErrInvalidToken},
		{"empty token", id, "", wire.ErrInvalidToken},
		{"non-canonical hash", "odd", "t1", wire.ErrInvalidToken},
		{"unknown", "ghost", "t1", wire.ErrSessionNotFound},
	} {
		if _, err := view.Authenticate(tc.id, tc.token); !errors.Is(err, tc.want) && !(err == nil && tc.want == nil) {
			t.Fatalf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}

	// A later subscriber's replay is slim; later changes come in full, Prev slim.
	later := make(chan sessions.Change, 10)
	cancel := view.Subscribe(func(c sessions.Change) { later <- c })
	defer cancel()
	for range 2 {
		if c := <-later; len(c.Record.Properties()) != 0 || (c.ID == id && c.Record.Principal != live.Principal) {
			t.Fatalf("replay: got %+v, want slim records (with the principal)", c.Record)
		}
	}
	closed := *live
	closed.State, closed.CloseReason = wire.StateClosed, wire.ClosedExpired
	put(t, srv, &closed)
	for _, ch := range []chan sessions.Change{changes, later} {
		c := <-ch
		if c.Record.State != wire.StateClosed || c.Record.Properties()["team"] != "red" ||
			c.Prev == nil || c.Prev.State != wire.StateActive || len(c.Prev.Properties()) != 0 || c.Prev.Principal != live.Principal {
			t.Fatalf("got change %+v, want ACTIVE (slim) to CLOSED (full)", c)
		}
	}
	if _, err := view.Authenticate(id, "t1"); !errors.Is(err, wire.ErrSessionClosed) {
		t.Fatalf("after the close: got %v, want session_closed", err)
	}
	if got, _ := view.Get(id); got.CloseReason != wire.ClosedExpired {
		t.Fatalf("after the close: got %+v, want the close reason", got)
	}

	// A session the watch has not delivered, and a rotated token, are read from the
	// bucket once the watch is stopped.
	view.Close()
	fresh := &sessions.Record{ID: "ABCDEFabcdef0123456789", State: wire.StateActive, TokenHash: sessions.HashToken("f")}
	put(t, srv, fresh)
	if r, err := view.Authenticate(fresh.ID, "f"); err != nil || r.ID != fresh.ID {
		t.Fatalf("unseen session: got %v, %v", r, err)
	}
	rotated := *fresh
	rotated.TokenHash = sessions.HashToken("g")
	put(t, srv, &rotated)
	if _, err := view.Authenticate(fresh.ID, "g"); err != nil {
		t.Fatalf("rotated token: got %v", err)
	}
	if _, err := view.Authenticate(fresh.ID, "f"); !errors.Is(err, wire.ErrInvalidToken) {
		t.Fatalf("old token: got %v, want invalid_token", err)
	}
	select {
	case c := <-changes:
		if c.Record == nil || c.Record.ID != fresh.ID {
			t.Fatalf("got change %+v, want the fetched session", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnChange did not see the fetched session")
	}
}
