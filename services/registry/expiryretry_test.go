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

// TestOverdueSessionIsNotRevivedWhenItsCloseFails: a request naming a session whose
// timeout has passed closes it and gets session_closed (active). When that close
// cannot be written (storage unavailable), the request must not count as activity:
// it used to, the session lived on a timeout more, and the request was answered as
// if the session had never expired.
func TestOverdueSessionIsNotRevivedWhenItsCloseFails(t *testing.T) {
	t.Parallel()
	var failing atomic.Bool
	var tried atomic.Int32
	e := newEnv(t, Config{beforeWrite: func(ctx context.Context, _ string) {
		// Every expiry's write (bounded by expire's own 2 s) while failing.
		if _, ok := ctx.Deadline(); ok && failing.Load() {
			tried.Add(1)
			<-ctx.Done()
		}
	}})
	failing.Store(true)
	c, _ := open(t, e.srv.ClientConn(t), &wire.SessionOpenRequest{TimeoutMS: 1000})
	// The scheduler found it due and could not close it.
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if tried.Load() == 0 {
			return fmt.Errorf("no expiry has tried to write yet")
		}
		return nil
	})
	err := c.call(wire.SubjectSessionKeepalive, nil, nil)
	failing.Store(false)
	if err == nil {
		t.Fatal("a keepalive on a session past its timeout, whose close could not be written, succeeded")
	}
	wantCode(t, err, wire.CodeUnavailable)
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if r := e.record(t, c.id); !r.Closed() {
			return fmt.Errorf("session %s is still %s", c.id, r.State)
		}
		return nil
	})
	if err := c.call(wire.SubjectSessionKeepalive, nil, nil); err == nil {
		t.Fatal("keepalive after the close succeeded")
	} else {
		wantCode(t, err, wire.CodeSessionClosed)
	}
}
