package registry

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestFailedExpiryIsRetriedAtOnce: the write that closes an expired session fails
// (here it stalls past the attempt's 2 s bound, as while the bucket elects a leader).
// The expiry is retried 250 ms later — also when no other session's deadline comes
// to wake the scheduler: the retry used to sit in the heap while the scheduler slept
// until the deadline it had last seen, an hour when it held no other, and the silent
// session stayed open that long.
func TestFailedExpiryIsRetriedAtOnce(t *testing.T) {
	t.Parallel()
	var failed atomic.Bool
	e := newEnv(t, Config{beforeWrite: func(ctx context.Context, _ string) {
		// Only the first expiry's write (bounded by expire's own 2 s), once.
		if _, ok := ctx.Deadline(); !ok || !failed.CompareAndSwap(false, true) {
			return
		}
		<-ctx.Done()
	}})
	c, _ := open(t, e.srv.ClientConn(t), &wire.SessionOpenRequest{TimeoutMS: 1000})
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !failed.Load() {
			return fmt.Errorf("the expiry has not tried its write yet")
		}
		return nil
	})
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if r := e.record(t, c.id); !r.Closed() {
			return fmt.Errorf("session %s is still %s after its expiry's write failed", c.id, r.State)
		}
		return nil
	})
	if r := e.record(t, c.id); r.CloseReason != wire.ClosedExpired {
		t.Fatalf("closed %s, want expired", r.CloseReason)
	}
}
