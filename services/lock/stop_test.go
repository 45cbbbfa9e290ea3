package lock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// writeGate holds one compare-and-set write of an instance (Config.beforeWrite)
// from the moment it is armed: the first write after that waits until the
// service stops (its loops' context ends, after the endpoint has drained).
type writeGate struct {
	armed atomic.Bool
	once  sync.Once
	held  chan struct{} // closed once a write is held
	// untilAborted: the held write waits for its own context instead, which
	// ends only when the service gives up on its writes.
	untilAborted bool
	// until, when set, lets the held write go when it is closed instead.
	until chan struct{}
}

func newWriteGate() *writeGate { return &writeGate{held: make(chan struct{})} }

func (g *writeGate) beforeWrite(stopping, write context.Context, _ string) {
	if !g.armed.Load() {
		return
	}
	first := false
	g.once.Do(func() { first = true })
	if !first {
		return
	}
	close(g.held)
	switch {
	case g.untilAborted:
		<-write.Done()
	case g.until != nil:
		<-g.until
	default:
		<-stopping.Done()
	}
}

// waitHeld waits until the gate holds a write.
func (g *writeGate) waitHeld(t *testing.T) {
	t.Helper()
	select {
	case <-g.held:
	case <-time.After(15 * time.Second):
		t.Fatal("no write was held")
	}
}

// TestStopFinishesTheWritesInFlight: the instance stops while a write that
// answers a waiter is in flight (the release of a closed session's lock, which
// grants the next waiter; the expiry of a waiter). The write must finish and its
// waiter be answered before Run returns: no other instance runs to answer it, and
// before, the write's context ended with the service's, the write failed or landed
// with its acknowledgement dropped, and the waiter waited for its own timeout (the
// SDK asks again after 65 s).
func TestStopFinishesTheWritesInFlight(t *testing.T) {
	for _, tc := range []struct {
		name string
		wait int64
		// trigger makes the instance write; want checks the waiter's answer.
		trigger func(t *testing.T, holder *client)
		want    func(t *testing.T, l *wire.Lock, err error, waiter *client)
	}{
		{
			name: "release grants the next waiter",
			wait: 20000,
			trigger: func(t *testing.T, holder *client) {
				if err := holder.call(ctx10(t), wire.SubjectSessionClose, &wire.SessionCloseRequest{}, nil); err != nil {
					t.Fatalf("close session: %v", err)
				}
			},
			want: func(t *testing.T, l *wire.Lock, err error, waiter *client) {
				if err != nil || l.Session != waiter.id {
					t.Fatalf("got %+v, %v; want the lock for %s", l, err, waiter.id)
				}
			},
		},
		{
			name:    "expiry answers the waiter",
			wait:    300,
			trigger: func(*testing.T, *client) {}, // the waiter's deadline
			want: func(t *testing.T, _ *wire.Lock, err error, _ *client) {
				wantCode(t, err, wire.CodeTimeout)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			g := newWriteGate()
			in := e.startLock(t, Config{beforeWrite: g.beforeWrite})
			a, b := e.open(t, "admin", 0), e.open(t, "admin", 0)
			a.mustAcquire(t, &wire.LockAcquireRequest{Name: "s"})
			pb := b.acquireAsync(&wire.LockAcquireRequest{Name: "s", WaitMS: tc.wait})
			e.waitQueued(t, "s", 1)
			g.armed.Store(true)
			tc.trigger(t, a)
			g.waitHeld(t)
			in.stop() // the only instance: nobody else answers b
			l, err := pb.wait(t, 15*time.Second)
			tc.want(t, l, err, b)
		})
	}
}

// TestStopGivesUpOnAWriteThatNeverEnds: a write that does not finish (storage
// gone) is given up at the stop's deadline (Config.DrainTimeout), and Run
// returns.
func TestStopGivesUpOnAWriteThatNeverEnds(t *testing.T) {
	e := newEnv(t)
	g := newWriteGate()
	g.untilAborted = true
	in := e.startLock(t, Config{beforeWrite: g.beforeWrite, DrainTimeout: 200 * time.Millisecond})
	a, b := e.open(t, "admin", 0), e.open(t, "admin", 0)
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "s"})
	pb := b.acquireAsync(&wire.LockAcquireRequest{Name: "s", WaitMS: 20000})
	e.waitQueued(t, "s", 1)
	g.armed.Store(true)
	if err := a.call(ctx10(t), wire.SubjectSessionClose, &wire.SessionCloseRequest{}, nil); err != nil {
		t.Fatalf("close session: %v", err)
	}
	g.waitHeld(t)
	stopped := make(chan struct{})
	go func() { in.stop(); close(stopped) }()
	natstest.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		select {
		case <-stopped:
			return nil
		default:
			return errors.New("Run has not returned")
		}
	})
	if pb.completed() {
		t.Fatal("b was answered though the write was given up")
	}
	if q := e.waiting(t, "s"); len(q) != 1 {
		t.Fatal(fmt.Errorf("waiters %v, want b still queued for another instance", q))
	}
}
