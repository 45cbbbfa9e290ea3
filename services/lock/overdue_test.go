package lock

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestWaitOverIsNeverGranted: a request that waited wait_ms for the lock and was not
// granted in that time has timed out, whether or not an instance has written its
// expiry yet. Its owner instance died, so the others expire it only ExpiryGrace
// after its end (an hour here); a release in between must not grant it: its caller
// has given up at the end of its wait, and the session would hold a lock nobody
// knows of, until the session ends, with every other request kept out.
func TestWaitOverIsNeverGranted(t *testing.T) {
	e := newEnv(t)
	owner := e.startLock(t, Config{})
	a, b, c := e.open(t, "admin", 0), e.open(t, "admin", 0), e.open(t, "admin", 0)
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "over"})
	pb := b.acquireAsync(&wire.LockAcquireRequest{Name: "over", WaitMS: 200, RequestID: "b-1"})
	e.waitQueued(t, "over", 1)
	owner.kill()
	e.startLock(t, Config{ExpiryGrace: time.Hour})

	// The wait's end, as the service stored it, is passed before the release.
	var until time.Time
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		var list wire.LockListResponse
		if err := a.call(ctx10(t), wire.SubjectLockList, &wire.LockListRequest{Prefix: "over"}, &list); err != nil {
			return err
		}
		if len(list.Locks) != 1 || len(list.Locks[0].Waiters) != 1 || list.Locks[0].Waiters[0].Until == nil {
			return fmt.Errorf("got %+v, want one waiter with an end", list.Locks)
		}
		until = *list.Locks[0].Waiters[0].Until
		return nil
	})
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if now := time.Now(); !now.After(until.Add(time.Millisecond)) {
			return fmt.Errorf("now %v, the wait ends at %v", now, until)
		}
		return nil
	})
	a.mustRelease(t, "over")

	l, err := pb.wait(t, 10*time.Second)
	if err == nil {
		t.Fatalf("got the lock %+v for a request whose wait was over, want timeout", l)
	}
	wantCode(t, err, wire.CodeTimeout)
	// The lock is free: another session gets it at once, and the late one does not
	// hold it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.acquire(ctx, &wire.LockAcquireRequest{Name: "over"}); err != nil {
		t.Fatalf("try-once acquire of the lock no one should hold: got %v, want the lock", err)
	}
	e.waitQueued(t, "over", 0)
}
