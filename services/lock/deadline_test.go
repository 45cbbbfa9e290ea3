package lock

import (
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestWaitIsNotHeldPastTheRequestersDeadline: a waiting acquire whose requester gives
// a deadline (Roster-Timeout) shorter than its wait ends at that deadline: answered
// timeout and out of the queue, so the lock freed afterwards is granted to no one.
// Before, the service held it for MaxWait (a minute), after its requester had gone,
// and answered no one; then, answered at the deadline but detached, it kept its
// place for Reattach and was granted the lock freed meanwhile (found by review).
func TestWaitIsNotHeldPastTheRequestersDeadline(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{MaxWait: time.Minute, Reattach: time.Minute})
	a, b := e.open(t, "admin", 0), e.open(t, "admin", 0)
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "busy"})

	err := natstest.CallGivingTimeout(t, b.nc, wire.SubjectLockAcquire, b.header(),
		&wire.LockAcquireRequest{Name: "busy", WaitMS: wire.WaitForever, RequestID: "b1"}, 300, nil)
	wantCode(t, err, wire.CodeTimeout)
	if q := e.waiting(t, "busy"); len(q) != 0 {
		t.Errorf("waiting after the requester's deadline: %v, want none", q)
	}
	a.mustRelease(t, "busy")
	if rec := e.lockRecord(t, "busy"); rec != nil && len(rec.Holders) != 0 {
		t.Errorf("the lock freed after the requester gave up is held: %s", jsonString(rec.Holders))
	}
}
