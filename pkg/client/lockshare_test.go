package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// lockResult is what one Lock call returned.
type lockResult struct {
	l   *client.Lock
	err error
}

// lockCalls runs n Lock calls of s on name, each with a context of its own made by
// ctxFor(i); their results arrive on the returned channel.
func lockCalls(s *client.Session, name string, opts client.LockOptions, n int, ctxFor func(i int) context.Context) <-chan lockResult {
	out := make(chan lockResult, n)
	for i := range n {
		go func() {
			l, err := s.Lock(ctxFor(i), name, opts)
			out <- lockResult{l, err}
		}()
	}
	return out
}

// waitingRequests returns the requests waiting for name, as the lock list shows them.
func waitingRequests(ctx context.Context, s *client.Session, name string) ([]wire.LockWaiter, error) {
	page, err := s.ListLocks(ctx, wire.LockListRequest{Prefix: name})
	if err != nil {
		return nil, err
	}
	for _, l := range page.Locks {
		if l.Name == name {
			return l.Waiters, nil
		}
	}
	return nil, nil
}

// waitCallers waits until n Lock calls of s wait for name, and the server has
// exactly one request of s waiting for it; it returns that request.
func waitCallers(t *testing.T, ctx context.Context, admin, s *client.Session, name string, n int) wire.LockWaiter {
	t.Helper()
	var got wire.LockWaiter
	waitFor(t, func() error {
		if c := client.WaitingLockCalls(s, name); c != n {
			return fmt.Errorf("Lock calls waiting for %s: got %d, want %d", name, c, n)
		}
		ws, err := waitingRequests(ctx, admin, name)
		if err != nil {
			return err
		}
		if len(ws) != 1 || ws[0].Session != s.ID() {
			return fmt.Errorf("requests waiting for %s: got %+v, want one of session %s", name, ws, s.ID())
		}
		got = ws[0]
		return nil
	})
	return got
}

// TestLockCallsOfOneSessionShareOneRequest: 40 goroutines of one session Lock the
// name another session holds. The server keeps 16 waiting requests of one session
// per lock: each call sent its own, and 24 of them failed with limit_exceeded. The
// calls now share one request: the server sees one waiter, and every call gets the
// lock — one Lock value, one token — once the holder releases it. One Unlock
// releases it for all of them, as the server does.
func TestLockCallsOfOneSessionShareOneRequest(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	holder := open(t, p.ClientURL(), client.Options{})
	s := open(t, p.ClientURL(), client.Options{})
	admin := open(t, p.ClientURL(), client.Options{})
	ctx := ctxT(t)
	held, err := holder.Lock(ctx, "jobs/1", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}

	const calls = 40
	results := lockCalls(s, "jobs/1", client.LockOptions{}, calls, func(int) context.Context { return ctx })
	// Every call waits, and the server sees one request of s waiting (it saw 16).
	waitFor(t, func() error {
		select {
		case r := <-results:
			t.Fatalf("a Lock call returned while the lock was held: lock %v, err %v", r.l, r.err)
		default:
		}
		if c := client.WaitingLockCalls(s, "jobs/1"); c != calls {
			return fmt.Errorf("Lock calls waiting: got %d, want %d", c, calls)
		}
		ws, err := waitingRequests(ctx, admin, "jobs/1")
		if err != nil {
			return err
		}
		if len(ws) != 1 {
			return fmt.Errorf("requests waiting: got %d, want 1", len(ws))
		}
		if ws[0].Session != s.ID() || ws[0].Mode != wire.LockExclusive || ws[0].Scope != wire.ScopeSession {
			t.Errorf("the waiting request: got %+v, want one of session %s, exclusive, session scope", ws[0], s.ID())
		}
		return nil
	})

	if err := held.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	var first *client.Lock
	for i := range calls {
		r := <-results
		if r.err != nil {
			t.Fatalf("call %d: %v", i, r.err)
		}
		if first == nil {
			first = r.l
		}
		if r.l != first || r.l.Token() != first.Token() {
			t.Errorf("call %d: got lock %p token %d, want %p token %d", i, r.l, r.l.Token(), first, first.Token())
		}
	}
	if first.Token() <= held.Token() {
		t.Errorf("token: got %d, want above the former holder's %d", first.Token(), held.Token())
	}
	if n := client.WaitingLockCalls(s, "jobs/1"); n != 0 {
		t.Errorf("Lock calls still waiting: got %d, want 0", n)
	}
	if ws, err := waitingRequests(ctx, admin, "jobs/1"); err != nil || len(ws) != 0 {
		t.Errorf("requests left waiting: got %+v (%v), want none", ws, err)
	}

	// The lock is the session's: one Unlock releases it for every call that got it.
	if err := first.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := first.Unlock(ctx); !errors.Is(err, client.ErrLockNotHeld) {
		t.Errorf("a second Unlock of the shared Lock: got %v, want ErrLockNotHeld", err)
	}
	if _, err := holder.TryLock(ctx, "jobs/1", client.LockOptions{}); err != nil {
		t.Errorf("taking the lock after one Unlock: %v", err)
	}
}

// TestCallerGivingUpLeavesTheOthersWaiting: of three Lock calls sharing one request,
// one is cancelled and one passes its deadline; each returns alone, and the request
// waits on, in its place, for the third, which gets the lock.
func TestCallerGivingUpLeavesTheOthersWaiting(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	holder := open(t, p.ClientURL(), client.Options{})
	s := open(t, p.ClientURL(), client.Options{})
	admin := open(t, p.ClientURL(), client.Options{})
	ctx := ctxT(t)
	held, err := holder.Lock(ctx, "jobs/2", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}

	stays := lockCalls(s, "jobs/2", client.LockOptions{}, 1, func(int) context.Context { return ctx })
	before := waitCallers(t, ctx, admin, s, "jobs/2", 1)

	cctx, cancel := context.WithCancel(ctx)
	cancelled := lockCalls(s, "jobs/2", client.LockOptions{}, 1, func(int) context.Context { return cctx })
	waitCallers(t, ctx, admin, s, "jobs/2", 2)
	cancel()
	if r := <-cancelled; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("the cancelled call: got %v, %v; want context.Canceled", r.l, r.err)
	}

	dctx, dcancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer dcancel()
	if _, err := s.Lock(dctx, "jobs/2", client.LockOptions{}); !errors.Is(err, client.ErrTimeout) {
		t.Fatalf("the call past its deadline: got %v, want ErrTimeout", err)
	}

	// The request the first call started still waits, in its place.
	after := waitCallers(t, ctx, admin, s, "jobs/2", 1)
	if after.RequestID != before.RequestID || !after.EnqueuedAt.Equal(before.EnqueuedAt) {
		t.Errorf("waiting request: got %s enqueued %v, want the first one, %s enqueued %v",
			after.RequestID, after.EnqueuedAt, before.RequestID, before.EnqueuedAt)
	}
	if err := held.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-stays
	if r.err != nil {
		t.Fatalf("the call that stayed: %v", r.err)
	}
	if r.l.Token() <= held.Token() {
		t.Errorf("token: got %d, want above %d", r.l.Token(), held.Token())
	}
}

// TestWaitWithdrawnWhenEveryCallerGivesUp: when the last of the Lock calls sharing a
// request gives up, the request is withdrawn: no waiter is left, and the lock goes
// to the next session once its holder releases it.
func TestWaitWithdrawnWhenEveryCallerGivesUp(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	holder := open(t, p.ClientURL(), client.Options{})
	s := open(t, p.ClientURL(), client.Options{})
	admin := open(t, p.ClientURL(), client.Options{})
	ctx := ctxT(t)
	held, err := holder.Lock(ctx, "jobs/3", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}

	const calls = 5
	ctxs := make([]context.Context, calls)
	cancels := make([]context.CancelFunc, calls)
	for i := range ctxs {
		ctxs[i], cancels[i] = context.WithCancel(ctx)
		defer cancels[i]()
	}
	results := lockCalls(s, "jobs/3", client.LockOptions{}, calls, func(i int) context.Context { return ctxs[i] })
	waitCallers(t, ctx, admin, s, "jobs/3", calls)
	for i, cancel := range cancels {
		cancel()
		if r := <-results; !errors.Is(r.err, context.Canceled) {
			t.Fatalf("cancelled call: got %v, %v; want context.Canceled", r.l, r.err)
		}
		if i < calls-1 {
			waitCallers(t, ctx, admin, s, "jobs/3", calls-1-i)
		}
	}
	// The last call returned once the withdrawal was answered.
	if ws, err := waitingRequests(ctx, admin, "jobs/3"); err != nil || len(ws) != 0 {
		t.Fatalf("after every call gave up: got waiters %+v (%v), want none", ws, err)
	}
	if err := held.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.TryLock(ctx, "jobs/3", client.LockOptions{}); err != nil {
		t.Errorf("the lock after every call of s gave up: %v", err)
	}
}

// TestTryLockWhileLockWaits: TryLock does not join a waiting Lock of its session: it
// asks once and gets what a try gets (timeout while another session holds the lock),
// and the waiting request is left as it was; once the lock is the session's, TryLock
// gets the same lock.
func TestTryLockWhileLockWaits(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	holder := open(t, p.ClientURL(), client.Options{})
	s := open(t, p.ClientURL(), client.Options{})
	admin := open(t, p.ClientURL(), client.Options{})
	ctx := ctxT(t)
	held, err := holder.Lock(ctx, "jobs/4", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waiting := lockCalls(s, "jobs/4", client.LockOptions{}, 1, func(int) context.Context { return ctx })
	before := waitCallers(t, ctx, admin, s, "jobs/4", 1)
	if _, err := s.TryLock(ctx, "jobs/4", client.LockOptions{}); !errors.Is(err, client.ErrTimeout) {
		t.Fatalf("TryLock while the lock is held: got %v, want ErrTimeout", err)
	}
	if after := waitCallers(t, ctx, admin, s, "jobs/4", 1); after.RequestID != before.RequestID {
		t.Errorf("waiting request: got %s, want %s", after.RequestID, before.RequestID)
	}
	if err := held.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-waiting
	if r.err != nil {
		t.Fatal(r.err)
	}
	tl, err := s.TryLock(ctx, "jobs/4", client.LockOptions{})
	if err != nil {
		t.Fatalf("TryLock of the session's lock: %v", err)
	}
	if tl != r.l || tl.Token() != r.l.Token() {
		t.Errorf("TryLock: got token %d, want the held lock's %d", tl.Token(), r.l.Token())
	}
}

// TestLockModesAndScopesWaitApart: Lock calls of one session share a request only
// when they ask for the same mode and scope; others send their own.
func TestLockModesAndScopesWaitApart(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	holder := open(t, p.ClientURL(), client.Options{})
	s := open(t, p.ClientURL(), client.Options{})
	admin := open(t, p.ClientURL(), client.Options{})
	ctx := ctxT(t)
	if _, err := holder.Lock(ctx, "jobs/5", client.LockOptions{}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var all []<-chan lockResult
	kinds := []client.LockOptions{
		{},
		{Mode: wire.LockExclusive, Scope: wire.ScopeSession}, // the defaults, spelt out
		{Mode: wire.LockShared},
		{Scope: wire.ScopeConnection},
	}
	for _, o := range kinds {
		all = append(all, lockCalls(s, "jobs/5", o, 3, func(int) context.Context { return wctx }))
	}
	waitFor(t, func() error {
		if n := client.WaitingLockCalls(s, "jobs/5"); n != 3*len(kinds) {
			return fmt.Errorf("Lock calls waiting: got %d, want %d", n, 3*len(kinds))
		}
		ws, err := waitingRequests(ctx, admin, "jobs/5")
		if err != nil {
			return err
		}
		seen := map[string]int{}
		for _, w := range ws {
			seen[string(w.Mode)+"/"+string(w.Scope)]++
		}
		want := map[string]int{"exclusive/session": 1, "shared/session": 1, "exclusive/connection": 1}
		if fmt.Sprint(seen) != fmt.Sprint(want) {
			return fmt.Errorf("waiting requests by mode/scope: got %v, want %v", seen, want)
		}
		return nil
	})
	cancel()
	for _, results := range all {
		for range 3 {
			if r := <-results; !errors.Is(r.err, context.Canceled) {
				t.Errorf("got %v, %v; want context.Canceled", r.l, r.err)
			}
		}
	}
}

// TestCloseWhileLockCallsWait: closing the session ends every Lock call waiting on
// it with ErrSessionClosed.
func TestCloseWhileLockCallsWait(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	holder := open(t, p.ClientURL(), client.Options{})
	s := open(t, p.ClientURL(), client.Options{})
	admin := open(t, p.ClientURL(), client.Options{})
	ctx := ctxT(t)
	if _, err := holder.Lock(ctx, "jobs/6", client.LockOptions{}); err != nil {
		t.Fatal(err)
	}
	const calls = 10
	results := lockCalls(s, "jobs/6", client.LockOptions{}, calls, func(int) context.Context { return ctx })
	waitCallers(t, ctx, admin, s, "jobs/6", calls)
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for range calls {
		select {
		case r := <-results:
			if !errors.Is(r.err, client.ErrSessionClosed) {
				t.Errorf("a waiting call of the closed session: got %v, %v; want ErrSessionClosed", r.l, r.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a waiting Lock call still runs 5 s after its session closed")
		}
	}
	waitFor(t, func() error { return waiters(ctx, admin, "jobs/6", 0) })
}

// TestConnectionLostWhileLockCallsWait: when the session's connection drops, the
// Lock calls sharing a request fail together with ErrUnavailable, as one call does
// (TestReconnectResumesSession: the request is withdrawn once the session is back).
func TestConnectionLostWhileLockCallsWait(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	px := natstest.StartPartition(t, p.ClientURL())
	holder := open(t, p.ClientURL(), client.Options{})
	s := open(t, px.URL(), client.Options{})
	ctx := ctxT(t)
	if _, err := holder.Lock(ctx, "jobs/7", client.LockOptions{}); err != nil {
		t.Fatal(err)
	}
	const calls = 5
	results := lockCalls(s, "jobs/7", client.LockOptions{}, calls, func(int) context.Context { return ctx })
	waitCallers(t, ctx, holder, s, "jobs/7", calls)
	px.Close()
	for range calls {
		select {
		case r := <-results:
			if !errors.Is(r.err, client.ErrUnavailable) {
				t.Errorf("a waiting call when the connection dropped: got %v, %v; want ErrUnavailable", r.l, r.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a waiting Lock call still runs 5 s after its connection dropped")
		}
	}
	if n := client.WaitingLockCalls(s, "jobs/7"); n != 0 {
		t.Errorf("Lock calls still waiting: got %d, want 0", n)
	}
}

// TestSharedWaitNeverLeavesAnUnseenLock: calls sharing a request give up at their
// deadlines (1 to 30 ms) while the holder releases the lock at some point among
// them, so that a grant often races the last call leaving. Whatever the order, the
// session holds the lock afterwards exactly when a call got it: a grant that came
// as the last call left is withdrawn, not kept by a session nobody knows holds it.
func TestSharedWaitNeverLeavesAnUnseenLock(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	holder := open(t, p.ClientURL(), client.Options{})
	s := open(t, p.ClientURL(), client.Options{})
	ctx := ctxT(t)
	heldBy := func() (string, error) {
		page, err := holder.ListLocks(ctx, wire.LockListRequest{Prefix: "jobs/8"})
		if err != nil || len(page.Locks) == 0 || len(page.Locks[0].Holders) == 0 {
			return "", err
		}
		return page.Locks[0].Holders[0].Session, nil
	}
	const calls = 8
	for i := range 40 {
		held, err := holder.Lock(ctx, "jobs/8", client.LockOptions{})
		if err != nil {
			t.Fatal(err)
		}
		results := lockCalls(s, "jobs/8", client.LockOptions{}, calls, func(j int) context.Context {
			c, cancel := context.WithTimeout(ctx, time.Duration(1+(i+j*7)%30)*time.Millisecond)
			t.Cleanup(cancel)
			return c
		})
		time.Sleep(time.Duration(i%20) * time.Millisecond)
		if err := held.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		var got *client.Lock
		for range calls {
			r := <-results
			switch {
			case r.err == nil && got != nil && r.l != got:
				t.Fatalf("iteration %d: two calls got different locks, tokens %d and %d", i, got.Token(), r.l.Token())
			case r.err == nil:
				got = r.l
			case !errors.Is(r.err, client.ErrTimeout):
				t.Fatalf("iteration %d: got %v, want a lock or ErrTimeout", i, r.err)
			}
		}
		if got != nil {
			if by, err := heldBy(); err != nil || by != s.ID() {
				t.Fatalf("iteration %d: a call got the lock (token %d), yet it is held by %q (%v)", i, got.Token(), by, err)
			}
			if err := got.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			continue
		}
		waitFor(t, func() error {
			if by, err := heldBy(); err != nil || by != "" {
				return fmt.Errorf("iteration %d: every call gave up, yet the lock is held by %q (%v)", i, by, err)
			}
			return nil
		})
	}
}
