package registry

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// VIEW_SESSION, which reading another session's events (or every session's) needs,
// is checked when the read arrives, and again while it is held (up to a minute): a
// reader that lost it gets forbidden rather than the events. Reads of the own
// session's events need nothing, held or not.

// wantReadForbidden waits for a held read's answer and checks that it is forbidden,
// saying VIEW_SESSION was withdrawn while the read was held.
func wantReadForbidden(t *testing.T, held <-chan readResult) {
	t.Helper()
	var r readResult
	select {
	case r = <-held:
	case <-time.After(15 * time.Second):
		t.Fatal("the held read was not answered")
	}
	if r.err == nil {
		t.Fatalf("a reader that lost VIEW_SESSION was answered with %d events: %+v", len(r.resp.Events), r.resp.Events)
	}
	wantCode(t, r.err, wire.CodeForbidden)
	if !strings.Contains(r.err.Error(), "withdrawn") || !strings.Contains(r.err.Error(), "while the read was held") {
		t.Fatalf("forbidden without saying VIEW_SESSION was withdrawn while the read was held: %v", r.err)
	}
}

// TestHeldEventsReadEndsWhenThePolicyWithdrawsViewSession: a viewer holds a read of
// another session's events and one of its own; the policy then takes VIEW_SESSION
// from viewers and the other session closes. The read of the other session is
// answered forbidden, not with its closed event; the own read is answered with the
// own event when it comes. Before, the held read got the other session's event.
func TestHeldEventsReadEndsWhenThePolicyWithdrawsViewSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	adm := admin(t, nc)
	reader, _ := open(t, nc, &wire.SessionOpenRequest{Credentials: &wire.Credentials{Type: wire.CredentialsPassword, Username: "viewer", Password: "pw"}})
	other, _ := open(t, nc, nil)
	others := waitRead(reader, wire.SessionEventsRequest{SessionID: other.id, Kinds: []wire.SessionEventKind{wire.EventClosed}, WaitMS: 50000})
	own := waitRead(reader, wire.SessionEventsRequest{SessionID: reader.id, Kinds: []wire.SessionEventKind{wire.EventUpdated}, WaitMS: 50000})
	heldReads(t, e.reg, 2)

	pol := e.reg.pol.(*policy.Holder)
	p := *pol.Load()
	p.Roles = maps.Clone(p.Roles)
	p.Roles["viewer"] = nil
	pol.Store(&p)
	if err := adm.call(wire.SubjectSessionClose, &wire.SessionCloseRequest{ID: other.id}, nil); err != nil {
		t.Fatal(err)
	}
	e.waitEventCount(t, other.id, wire.EventClosed, 1)
	wantReadForbidden(t, others)

	if err := adm.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{ID: reader.id, Set: map[string]string{"k": "1"}}, nil); err != nil {
		t.Fatal(err)
	}
	r := <-own
	if r.err != nil || len(r.resp.Events) != 1 || r.resp.Events[0].Event.SessionID != reader.id {
		t.Fatalf("the own held read: got %+v %v, want the own updated event", r.resp, r.err)
	}
	heldReads(t, e.reg, 0)
}

// TestHeldEventsReadEndsWhenThePrincipalChanges: a viewer holding a read of every
// session's events changes its principal to one without VIEW_SESSION (the roles
// change with it); an event stored afterwards is not given to it: the read is
// answered forbidden. Before, the held read got the event.
func TestHeldEventsReadEndsWhenThePrincipalChanges(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	adm := admin(t, nc)
	reader, _ := open(t, nc, &wire.SessionOpenRequest{Credentials: &wire.Credentials{Type: wire.CredentialsPassword, Username: "viewer", Password: "pw"}})
	other, _ := open(t, nc, nil)
	held := waitRead(reader, wire.SessionEventsRequest{Kinds: []wire.SessionEventKind{wire.EventClosed}, WaitMS: 50000})
	heldReads(t, e.reg, 1)

	var resp wire.SessionChangePrincipalResponse
	if err := reader.call(wire.SubjectSessionChangePrincipal, &wire.SessionChangePrincipalRequest{
		Credentials: &wire.Credentials{Type: wire.CredentialsPassword, Username: "nobody", Password: "pw"}}, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Session.Principal != "nobody" {
		t.Fatalf("principal after the change: %q", resp.Session.Principal)
	}
	if err := adm.call(wire.SubjectSessionClose, &wire.SessionCloseRequest{ID: other.id}, nil); err != nil {
		t.Fatal(err)
	}
	wantReadForbidden(t, held)
}
