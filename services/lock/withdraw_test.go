package lock

import (
	"fmt"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestWithdrawnRequestsLeaveNothingBehind: a client that gives up on an acquire
// withdraws it with a cancel, whatever became of the request — it may still be on
// its way, waiting, or granted. Nothing of it may stay behind to be granted later
// to a session that has moved on.
func TestWithdrawnRequestsLeaveNothingBehind(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{})
	holder, a, c := e.open(t, "admin", 0), e.open(t, "admin", 0), e.open(t, "admin", 0)
	holder.mustAcquire(t, &wire.LockAcquireRequest{Name: "g"})

	// The cancel overtakes its request: the request, arriving after it, is refused.
	const x = "overtaken-request"
	wantCode(t, a.call(ctx10(t), wire.SubjectLockCancel, &wire.LockCancelRequest{Name: "g", RequestID: x}, nil), wire.CodeNotFound)
	_, err := a.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "g", WaitMS: wire.WaitForever, RequestID: x})
	wantCode(t, err, wire.CodeStaleRequest)
	if q := e.waiting(t, "g"); len(q) != 0 {
		t.Fatalf("a request that arrived after its cancel waits: %v", q)
	}

	// A try-once copy of a waiting request ends the wait and answers it.
	const y = "waiting-request"
	py := a.acquireAsync(&wire.LockAcquireRequest{Name: "g", WaitMS: wire.WaitForever, RequestID: y})
	e.waitQueued(t, "g", 1)
	_, err = a.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "g", RequestID: y})
	wantCode(t, err, wire.CodeTimeout)
	<-py.done
	wantCode(t, py.err, wire.CodeTimeout)
	if q := e.waiting(t, "g"); len(q) != 0 {
		t.Fatalf("after the try-once copy of %s the queue holds %v", y, q)
	}

	// Granted, then cancelled: the hold is released and the next waiter gets it.
	holder.mustRelease(t, "g")
	const z = "granted-request"
	if _, err := a.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "g", RequestID: z}); err != nil {
		t.Fatal(err)
	}
	pc := c.acquireAsync(&wire.LockAcquireRequest{Name: "g", WaitMS: 10000})
	e.waitQueued(t, "g", 1)
	var resp wire.LockCancelResponse
	if err := a.call(ctx10(t), wire.SubjectLockCancel, &wire.LockCancelRequest{Name: "g", RequestID: z}, &resp); err != nil || !resp.Released || resp.Cancelled {
		t.Fatalf("cancel of a granted request: got %+v, %v; want released", resp, err)
	}
	<-pc.done
	if pc.err != nil || pc.lock == nil {
		t.Fatalf("the next waiter after the cancel: %v", pc.err)
	}
}

// TestReissueAnsweredWithEqualLockLeavesNoWaiter: a session's second request waits
// behind another session's; its held request is answered at the server's bound and
// re-issued while the session holds the lock through its first request, so the
// re-issue gets the equal lock. Once the session has released the lock and the other
// session had its turn, the lock must be free — not granted to the session again by
// the re-issued request's copy left waiting.
func TestReissueAnsweredWithEqualLockLeavesNoWaiter(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{MaxWait: 300 * time.Millisecond, Reattach: 10 * time.Second})
	h, s, c := e.open(t, "admin", 0), e.open(t, "admin", 0), e.open(t, "admin", 0)
	h.mustAcquire(t, &wire.LockAcquireRequest{Name: "eq"})
	first := s.acquireAsync(&wire.LockAcquireRequest{Name: "eq", WaitMS: wire.WaitForever, RequestID: "s-first"})
	e.waitQueued(t, "eq", 1)
	reqC := &wire.LockAcquireRequest{Name: "eq", WaitMS: 20000, RequestID: "c-1"}
	pc := c.acquireAsync(reqC)
	e.waitQueued(t, "eq", 2)
	second := &wire.LockAcquireRequest{Name: "eq", WaitMS: wire.WaitForever, RequestID: "s-second"}
	ps := s.acquireAsync(second)
	e.waitQueued(t, "eq", 3)
	h.mustRelease(t, "eq")
	if _, err := first.wait(t, 5*time.Second); err != nil {
		t.Fatalf("s's first request: %v", err)
	}
	// Both waiting requests are answered at the bound and keep their places.
	for _, p := range []*pending{ps, pc} {
		_, err := p.wait(t, 5*time.Second)
		wantCode(t, err, wire.CodeTimeout)
	}
	if _, err := s.acquire(ctx10(t), second); err != nil {
		t.Fatalf("re-issue while s holds the lock: got %v, want the equal lock", err)
	}
	s.mustRelease(t, "eq")
	if _, err := c.acquire(ctx10(t), reqC); err != nil {
		t.Fatalf("c's re-issue after s released: %v", err)
	}
	c.mustRelease(t, "eq")
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		var list wire.LockListResponse
		if err := c.call(ctx10(t), wire.SubjectLockList, &wire.LockListRequest{Prefix: "eq"}, &list); err != nil {
			return err
		}
		if len(list.Locks) != 0 {
			return fmt.Errorf("after every caller released, the lock is %s; want free", jsonString(list.Locks))
		}
		return nil
	})
}
