package lock

import (
	"testing"

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
