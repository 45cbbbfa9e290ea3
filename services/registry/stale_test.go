package registry

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// setStale runs write, then makes the instance hold the session's record from
// before it, as an instance whose watch has not yet delivered the latest write does.
// It first waits until the watch is past the write (a marker record written after it
// has arrived), so that the watch cannot replace the stale copy.
func (e *env) setStale(t *testing.T, id string, write func()) {
	t.Helper()
	in := e.reg
	old := in.track.record(id)
	if old == nil {
		t.Fatalf("the instance does not hold session %s", id)
	}
	write()
	marker := newID()
	data, err := sessions.Encode(&sessions.Record{ID: marker, State: wire.StateActive, Principal: "marker", TimeoutMS: 600000, StartTime: time.Now(), LastActivity: time.Now(), UpdatedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.kv.Create(context.Background(), marker, data); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if in.track.record(marker) == nil {
			return errors.New("the watch has not delivered the marker")
		}
		return nil
	})
	in.track.mu.Lock()
	defer in.track.mu.Unlock()
	in.track.unindexLocked(in.track.sessions[id].rec)
	delete(in.track.sessions, id)
	in.track.upsertLocked(old)
}

// Changes of the own session authenticate against the instance's copy of the
// record (heldCaller). When that copy is stale, the compare-and-set fails and the
// change is checked again on the current record: a token rotated meanwhile stops
// working and a session closed meanwhile stays closed, exactly as with a fresh read.
func TestOwnWritesFromAStaleCopy(t *testing.T) {
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)

	t.Run("rotated token", func(t *testing.T) {
		c, _ := open(t, nc, &wire.SessionOpenRequest{Properties: map[string]string{"same": "x"}})
		old := *c
		e.setStale(t, c.id, func() {
			var resp wire.SessionChangePrincipalResponse
			if err := c.call(wire.SubjectSessionChangePrincipal, &wire.SessionChangePrincipalRequest{Credentials: &wire.Credentials{Type: wire.CredentialsPassword, Username: "user", Password: "pw"}}, &resp); err != nil {
				t.Fatal(err)
			}
			c.token = resp.Token
		})
		before := e.record(t, c.id)
		wantCode(t, old.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Set: map[string]string{"k": "v"}}, nil), wire.CodeInvalidToken)
		// An update that changes nothing writes nothing, so no compare-and-set
		// vouches for the copy: it is answered from a fresh read.
		wantCode(t, old.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Set: map[string]string{"same": "x"}}, nil), wire.CodeInvalidToken)
		wantCode(t, old.call(wire.SubjectSessionClose, &wire.SessionCloseRequest{}, nil), wire.CodeInvalidToken)
		if after := e.record(t, c.id); after.Revision != before.Revision {
			t.Fatalf("the old token changed the record: revision %d, then %d", before.Revision, after.Revision)
		}
		// The new token works, from the same stale copy (its hash does not match the
		// copy, so heldCaller reads the record).
		e.setStale(t, c.id, func() {})
		if err := c.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Set: map[string]string{"k": "v"}}, nil); err != nil {
			t.Fatal(err)
		}
		if got := e.record(t, c.id).User["k"]; got != "v" {
			t.Fatalf("got k=%q after the update with the new token, want v", got)
		}
	})

	t.Run("closed meanwhile", func(t *testing.T) {
		c, _ := open(t, nc, &wire.SessionOpenRequest{Properties: map[string]string{"same": "x"}})
		a := admin(t, nc)
		e.setStale(t, c.id, func() {
			if err := a.call(wire.SubjectSessionClose, &wire.SessionCloseRequest{ID: c.id}, nil); err != nil {
				t.Fatal(err)
			}
		})
		wantCode(t, c.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Set: map[string]string{"k": "v"}}, nil), wire.CodeSessionClosed)
		wantCode(t, c.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Set: map[string]string{"same": "x"}}, nil), wire.CodeSessionClosed)
		wantCode(t, c.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Set: map[string]string{"bad key": "x"}}, nil), wire.CodeInvalidName)
		wantCode(t, c.call(wire.SubjectSessionClose, &wire.SessionCloseRequest{}, nil), wire.CodeSessionClosed)
		rec := e.record(t, c.id)
		if rec.CloseReason != wire.ClosedByServer || rec.User["k"] != "" {
			t.Fatalf("got %s with k=%q, want closed by_server and unchanged", rec.CloseReason, rec.User["k"])
		}
		if n := e.eventCount(t, c.id, wire.EventClosed); n != 1 {
			t.Fatalf("%d CLOSED events, want 1", n)
		}
	})
}
