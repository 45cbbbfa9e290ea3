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
	t.Parallel()
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

// Update and close by filter select sessions from the instance's copy of the
// records, then write each with a compare-and-set on a fresh read. A session whose
// properties changed meanwhile so that it no longer matches the filter must be left
// alone: the change or close was asked for the sessions matching the filter, not
// for those that matched a moment before.
func TestChangesByFilterRecheckTheFilter(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	adm := admin(t, nc)
	var moved [2]*client
	for i := range moved {
		moved[i], _ = open(t, nc, &wire.SessionOpenRequest{Properties: map[string]string{"team": "x"}})
	}
	stays, _ := open(t, nc, &wire.SessionOpenRequest{Properties: map[string]string{"team": "x"}})
	leave := func(c *client) {
		e.setStale(t, c.id, func() {
			if err := c.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Set: map[string]string{"team": "y"}}, nil); err != nil {
				t.Fatal(err)
			}
		})
	}

	leave(moved[0])
	var upd wire.SessionUpdateResponse
	if err := adm.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Filter: `team is "x"`, Set: map[string]string{"seen": "1"}}, &upd); err != nil {
		t.Fatal(err)
	}
	if got := e.record(t, moved[0].id).User; got["seen"] != "" {
		t.Errorf("update by filter team is \"x\" changed a session of team %q: %v", got["team"], got)
	}
	for _, c := range []*client{moved[1], stays} {
		if got := e.record(t, c.id).User; got["seen"] != "1" {
			t.Errorf("update by filter left a matching session unchanged: %v", got)
		}
	}
	if upd.Updated != 2 {
		t.Errorf("got updated %d, want 2", upd.Updated)
	}

	leave(moved[1])
	var cl wire.SessionCloseResponse
	if err := adm.call(wire.SubjectSessionClose, &wire.SessionCloseRequest{Filter: `team is "x"`}, &cl); err != nil {
		t.Fatal(err)
	}
	for _, c := range moved {
		if r := e.record(t, c.id); r.Closed() {
			t.Errorf("close by filter team is \"x\" closed a session of team %q", r.User["team"])
		}
	}
	if r := e.record(t, stays.id); !r.Closed() {
		t.Errorf("close by filter left a matching session open")
	}
	if cl.Closed != 1 {
		t.Errorf("got closed %d, want 1", cl.Closed)
	}
}

// TestFilterOnWhatAnUpdateByFilterSet: the sessions an update by filter changed are
// selected by what it set at once, by the instance that wrote them. The filter's
// check on the record being written once cached that record's properties before the
// change, and the instance kept the record with its old properties: a close by
// filter on the new value missed the sessions.
func TestFilterOnWhatAnUpdateByFilterSet(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	adm := admin(t, nc)
	for range 2 {
		open(t, nc, &wire.SessionOpenRequest{Properties: map[string]string{"Department": "Payroll"}})
	}
	var upd wire.SessionUpdateResponse
	if err := adm.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Filter: `Department is "Payroll"`, Set: map[string]string{"Status": "Closing"}}, &upd); err != nil || upd.Updated != 2 {
		t.Fatalf("update by filter: %v, updated %d, want 2", err, upd.Updated)
	}
	var page wire.SessionListResponse
	if err := adm.call(wire.SubjectSessionList, &wire.SessionListRequest{Filter: `Status is "Closing"`}, &page); err != nil || page.Total != 2 {
		t.Fatalf("list by the value set: %v, total %d, want 2", err, page.Total)
	}
	var cl wire.SessionCloseResponse
	if err := adm.call(wire.SubjectSessionClose, &wire.SessionCloseRequest{Filter: `Status is "Closing"`}, &cl); err != nil || cl.Closed != 2 {
		t.Fatalf("close by the value set: %v, closed %d, want 2", err, cl.Closed)
	}
}

// TestKeepaliveDoesNotAnswerRecoveringFromAStaleCopy: a keepalive authenticates
// against the instance's copy of the record, and answered with the copy's state. A
// copy still RECOVERING after the session was resumed (another instance wrote the
// resume, and this one's watch is behind) said RECOVERING, and the SDK, told so while
// its connection works, reported the session's connection-scoped locks lost and
// resumed it again — at every keepalive, for as long as the watch lagged.
func TestKeepaliveDoesNotAnswerRecoveringFromAStaleCopy(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	first := e.srv.ClientConn(t)
	c, _ := open(t, first, &wire.SessionOpenRequest{TimeoutMS: 60000})
	first.Close()
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if r := e.reg.track.record(c.id); r == nil || r.State != wire.StateRecovering {
			return errors.New("the instance does not hold the session RECOVERING")
		}
		return nil
	})
	c.nc = e.srv.ClientConn(t)
	e.setStale(t, c.id, func() {
		if err := c.call(wire.SubjectSessionResume, nil, nil); err != nil {
			t.Fatal(err)
		}
	})
	var resp wire.SessionKeepaliveResponse
	if err := c.call(wire.SubjectSessionKeepalive, nil, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.State != wire.StateActive {
		t.Fatalf("keepalive of a resumed session answered %s, want ACTIVE (the record is %s)", resp.State, e.record(t, c.id).State)
	}
}
