package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

func TestLockExclusiveWaitsAndFences(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	a := open(t, p.ClientURL(), client.Options{})
	b := open(t, p.ClientURL(), client.Options{})
	ctx := ctxT(t)

	la, err := a.Lock(ctx, "orders/42", client.LockOptions{})
	if err != nil {
		t.Fatalf("a: lock: %v", err)
	}
	if la.Token() == 0 || la.Mode() != wire.LockExclusive || la.Scope() != wire.ScopeSession || la.Name() != "orders/42" {
		t.Errorf("a's lock: got token %d mode %s scope %s name %s", la.Token(), la.Mode(), la.Scope(), la.Name())
	}
	if _, err := b.TryLock(ctx, "orders/42", client.LockOptions{}); !errors.Is(err, client.ErrTimeout) {
		t.Errorf("b: try lock of a held lock: got %v, want ErrTimeout", err)
	}

	got := make(chan *client.Lock, 1)
	errc := make(chan error, 1)
	go func() {
		l, err := b.Lock(ctx, "orders/42", client.LockOptions{})
		if err != nil {
			errc <- err
			return
		}
		got <- l
	}()
	// b is queued before a releases: the list shows it waiting.
	waitFor(t, func() error {
		locks, err := a.ListLocks(ctx, wire.LockListRequest{Prefix: "orders/"})
		if err != nil {
			return err
		}
		if len(locks.Locks) != 1 || len(locks.Locks[0].Waiters) != 1 {
			return errors.New("b is not waiting yet")
		}
		return nil
	})
	if err := la.Unlock(ctx); err != nil {
		t.Fatalf("a: unlock: %v", err)
	}
	select {
	case lb := <-got:
		if lb.Token() <= la.Token() {
			t.Errorf("b's token %d is not above a's %d", lb.Token(), la.Token())
		}
	case err := <-errc:
		t.Fatalf("b: lock: %v", err)
	case <-ctx.Done():
		t.Fatal("b was not granted the lock after a released it")
	}
	if err := la.Unlock(ctx); !errors.Is(err, client.ErrLockNotHeld) {
		t.Errorf("a: second unlock: got %v, want ErrLockNotHeld", err)
	}
}

func TestLockShared(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	a := open(t, p.ClientURL(), client.Options{})
	b := open(t, p.ClientURL(), client.Options{})
	ctx := ctxT(t)
	shared := client.LockOptions{Mode: wire.LockShared}
	la, err := a.Lock(ctx, "prices", shared)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := b.TryLock(ctx, "prices", shared)
	if err != nil {
		t.Fatalf("second shared holder: %v", err)
	}
	if lb.Mode() != wire.LockShared || la.Mode() != wire.LockShared {
		t.Errorf("modes: got %s and %s, want shared", la.Mode(), lb.Mode())
	}
	if _, err := b.TryLock(ctx, "prices", client.LockOptions{}); !errors.Is(err, client.ErrConflict) {
		t.Errorf("upgrading a shared lock: got %v, want ErrConflict", err)
	}
}

func TestLockDeadlineAndCancel(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	a := open(t, p.ClientURL(), client.Options{})
	b := open(t, p.ClientURL(), client.Options{})
	ctx := ctxT(t)
	if _, err := a.Lock(ctx, "busy", client.LockOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("deadline", func(t *testing.T) {
		dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		_, err := b.Lock(dctx, "busy", client.LockOptions{})
		if !errors.Is(err, client.ErrTimeout) {
			t.Fatalf("got %v, want ErrTimeout", err)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() {
			_, err := b.Lock(cctx, "busy", client.LockOptions{})
			errc <- err
		}()
		waitFor(t, func() error { return waiters(ctx, a, "busy", 1) })
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("got %v, want context.Canceled", err)
		}
	})
	// Neither attempt left a waiter behind.
	waitFor(t, func() error { return waiters(ctx, a, "busy", 0) })
}

func waiters(ctx context.Context, s *client.Session, name string, want int) error {
	page, err := s.ListLocks(ctx, wire.LockListRequest{Prefix: name})
	if err != nil {
		return err
	}
	n := 0
	for _, l := range page.Locks {
		if l.Name == name {
			n = len(l.Waiters)
		}
	}
	if n != want {
		return fmt.Errorf("waiters of %s: got %d, want %d", name, n, want)
	}
	return nil
}

func TestLockLostWhenSessionClosed(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	admin := open(t, p.ClientURL(), client.Options{})
	// Keepalives are how the SDK learns that another session closed this one.
	s := open(t, p.ClientURL(), client.Options{HeartbeatInterval: 100 * time.Millisecond})
	ctx := ctxT(t)
	l, err := s.Lock(ctx, "jobs/1", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Err() != nil {
		t.Fatalf("lost before anything happened: %v", l.Err())
	}
	if n, err := admin.CloseSessions(ctx, wire.SessionCloseRequest{ID: s.ID()}); err != nil || n != 1 {
		t.Fatalf("closing the holder: got %d, %v; want 1, nil", n, err)
	}
	select {
	case <-l.Lost():
	case <-ctx.Done():
		t.Fatal("the lock was not reported lost after its session was closed")
	}
	if !errors.Is(l.Err(), client.ErrLockLost) {
		t.Errorf("Err: got %v, want ErrLockLost", l.Err())
	}
	if got := s.State(); got != client.StateClosed {
		t.Errorf("state: got %s, want CLOSED", got)
	}
	if _, err := admin.TryLock(ctx, "jobs/1", client.LockOptions{}); err != nil {
		t.Errorf("taking the released lock: %v", err)
	}
}

// TestLockDeadlineDuringRetriesIsTimeout: Lock asks again, after a pause, when the
// lock service answers unavailable (here: a connection-scoped lock from a connection
// the session is not bound to, which it answers every time). A deadline that passes
// during the pause is a timeout, as it is anywhere else, not the last unavailable.
func TestLockDeadlineDuringRetriesIsTimeout(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	opener := open(t, p.ClientURL(), client.Options{})
	c, err := client.Connect(p.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close(context.Background()) }()
	attached, err := c.Attach(ctxT(t), opener.ID(), opener.Token(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Millisecond)
	defer cancel()
	_, err = attached.Lock(ctx, "orders/1", client.LockOptions{Scope: wire.ScopeConnection})
	if !errors.Is(err, client.ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
}

// TestGrantAfterCloseIsLost: a grant whose reply is handled after the session
// closed (the close notice overtook it) is reported lost at once. It was tracked
// on the closed session, whose locks had already been declared lost, so its Lost
// never closed and the caller believed it held a lock the server had released.
func TestGrantAfterCloseIsLost(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	s := open(t, p.ClientURL(), client.Options{})
	if err := s.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	l := client.TrackLock(s, wire.Lock{Name: "jobs/1", Mode: wire.LockExclusive, Scope: wire.ScopeSession, Token: 7})
	select {
	case <-l.Lost():
	default:
		t.Fatal("a lock granted to a closed session is not reported lost")
	}
	if !errors.Is(l.Err(), client.ErrLockLost) || !errors.Is(l.Err(), client.ErrSessionClosed) {
		t.Fatalf("Err: %v, want ErrLockLost and ErrSessionClosed", l.Err())
	}
}
