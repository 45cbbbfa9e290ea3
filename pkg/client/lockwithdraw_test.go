package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/roster"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
	"github.com/seed-3c836eab/roster/services/lock"
)

// A Lock whose deadline passes returns then, not once the lock service answers the
// withdrawal of its request: a service slow to answer (here: never) used to hold
// the caller up to the withdrawal's own bound.
func TestLockReturnsAtItsDeadlineWhileTheWithdrawalWaits(t *testing.T) {
	defer client.SetAbandonTimeout(time.Minute)()
	p := rostertest.Start(t, rostertest.WithConfig(func(c *roster.Config) { c.Services = []string{"auth", "registry"} }))
	slow, err := p.Server().ConnectService()
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	cancels := make(chan struct{}, 1)
	if _, err := slow.QueueSubscribe(wire.SubjectLockAcquire, "q", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if _, err := slow.QueueSubscribe(wire.SubjectLockCancel, "q", func(*nats.Msg) {
		select {
		case cancels <- struct{}{}:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := slow.Flush(); err != nil {
		t.Fatal(err)
	}
	s, err := client.Open(context.Background(), p.ClientURL(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close(context.Background()) }()

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := s.Lock(ctx, "x", client.LockOptions{})
		done <- err
	}()
	select {
	case <-cancels:
	case <-time.After(10 * time.Second):
		t.Fatal("no withdrawal was sent")
	}
	select {
	case err := <-done:
		if !errors.Is(err, client.ErrTimeout) {
			t.Errorf("got %v, want ErrTimeout", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Lock waits for the answer to its withdrawal (bounded by a minute here)")
	}
}

// TestWithdrawalLeftUnansweredIsSentAgain: a Lock gives up while the lock instance
// that holds its waiter is gone, and its withdrawal reaches an instance that dies
// before answering (here: one that never answers). The withdrawal's outcome is
// unknown, as it is for unavailable, and it is sent again once the session is
// confirmed; dropped, the waiter stayed queued, was granted when the lock came
// free, and the session held a lock nobody knew of until it ended — every other
// session waiting for it for good.
func TestWithdrawalLeftUnansweredIsSentAgain(t *testing.T) {
	defer client.SetAbandonTimeout(300 * time.Millisecond)()
	p := rostertest.Start(t, rostertest.WithConfig(func(c *roster.Config) { c.Services = []string{"auth", "registry"} }))
	kill := startLockInstance(t, p, lock.Config{})
	holder := open(t, p.ClientURL(), client.Options{})
	hl, err := holder.Lock(ctxT(t), "h", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := open(t, p.ClientURL(), client.Options{HeartbeatInterval: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := s.Lock(ctx, "h", client.LockOptions{})
		done <- err
	}()
	waitFor(t, func() error {
		list, err := holder.ListLocks(ctxT(t), wire.LockListRequest{Prefix: "h"})
		if err != nil {
			return err
		}
		if len(list.Locks) != 1 || len(list.Locks[0].Waiters) != 1 {
			return fmt.Errorf("no waiter yet: %+v", list.Locks)
		}
		return nil
	})

	// The instance holding the request dies; the one that takes the withdrawal
	// never answers it.
	kill()
	dead, err := p.Server().ConnectService()
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	taken := make(chan struct{}, 1)
	sub, err := dead.QueueSubscribe(wire.SubjectLockCancel, "q", func(*nats.Msg) {
		select {
		case taken <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := dead.Flush(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Lock: got %v, want context.Canceled", err)
	}
	select {
	case <-taken:
	case <-time.After(10 * time.Second):
		t.Fatal("no withdrawal was sent")
	}
	client.WaitLockWork(s) // the withdrawal gave up unanswered
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := dead.Flush(); err != nil {
		t.Fatal(err)
	}

	// A healthy instance takes over, and the holder releases: the lock must not
	// end up held by s, whose caller gave up.
	startLockInstance(t, p, lock.Config{})
	if err := hl.Unlock(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	other := open(t, p.ClientURL(), client.Options{})
	lctx, lcancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer lcancel()
	if _, err := other.Lock(lctx, "h", client.LockOptions{}); err != nil {
		list, _ := holder.ListLocks(ctxT(t), wire.LockListRequest{Prefix: "h"})
		t.Fatalf("another session could not take the lock given up by %s: %v; locks: %+v", s.ID(), err, list.Locks)
	}
}
