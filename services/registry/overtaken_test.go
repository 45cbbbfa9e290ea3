package registry

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestAChangeIsNotReappliedAfterItsDeadline is the registry's side of the lock
// service's stalled batch (services/lock TestARequestIsNotAppliedAfterItsSessionMovedOn):
// a client's update stalls before its write past its deadline; the client, told
// timeout, sets the property again to another value, which is written. When the
// stalled write goes it conflicts, and modify reads the record again — with the
// request's context, whose deadline has passed, so the read fails and the stale
// value is not applied over the client's later one. (Re-read on a context without
// the deadline, as the lock service's 5 s retry is, it was: a lost update from the
// client's view.)
func TestAChangeIsNotReappliedAfterItsDeadline(t *testing.T) {
	held, release := make(chan struct{}), make(chan struct{})
	var armed atomic.Bool
	e := newEnv(t, Config{beforeWrite: func(ctx context.Context, _ string) {
		// Only the write of the request with the short deadline, once.
		if d, ok := ctx.Deadline(); !ok || time.Until(d) > 2*time.Second || !armed.CompareAndSwap(true, false) {
			return
		}
		close(held)
		<-ctx.Done()
		<-release
	}})
	nc := e.srv.ClientConn(t)
	c, _ := open(t, nc, nil)

	armed.Store(true)
	answered := make(chan error, 1)
	go func() {
		answered <- natstest.CallGivingTimeout(t, nc, wire.SubjectSessionUpdate, c.header(),
			&wire.SessionUpdateRequest{Set: map[string]string{"desk": "first"}}, 300, nil)
	}()
	<-held
	if err := c.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Set: map[string]string{"desk": "second"}}, nil); err != nil {
		t.Fatal(err)
	}
	close(release)
	wantCode(t, <-answered, wire.CodeTimeout)
	if got := e.record(t, c.id).User["desk"]; got != "second" {
		t.Fatalf("desk %q: the update stalled past its deadline was applied over the client's later one", got)
	}
	if n := e.eventCount(t, c.id, wire.EventUpdated); n != 1 {
		t.Fatalf("%d updated events, want 1", n)
	}
}
