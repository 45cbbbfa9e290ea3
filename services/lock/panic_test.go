package lock

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestPanicInACommitFailsOnlyItsBatch: a panic while a lock's batch is committed
// (a bug in applying an operation, say) fails that batch, internal, and leaves the
// lock and the instance working. The first operation on a free lock is committed
// on its request's handler goroutine (commitLead), where the endpoint recovers a
// panic and answers internal: before, the lock's queue stayed marked as having a
// committer that no longer ran, so every later operation on the lock waited until
// its caller gave up (unavailable), and the instance's Stop waited forever for
// that committer.
func TestPanicInACommitFailsOnlyItsBatch(t *testing.T) {
	e := newEnv(t)
	var armed atomic.Bool
	e.startLock(t, Config{beforeWrite: func(_, _ context.Context, name string) {
		if name == "boom" && armed.CompareAndSwap(true, false) {
			panic("a bug in the lock's write")
		}
	}})
	a := e.open(t, "admin", 0)
	armed.Store(true)
	_, err := a.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "boom"})
	wantCode(t, err, wire.CodeInternal)
	// The lock works on: the next acquire is granted (it waited out its context
	// before), and the instance stops at the test's end.
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "boom"})
	a.mustRelease(t, "boom")
}
