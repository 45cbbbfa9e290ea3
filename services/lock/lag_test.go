package lock

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// lagged is a session holding a connection-scoped lock ("cs") taken on the
// connection it resumed on, another session waiting for the lock, and a lock
// instance — the only one left running — whose view of the sessions bucket has not
// seen the resume: it holds the session ACTIVE on the connection it left.
type lagged struct {
	e *env
	// s is the session, on the connection it resumed on (conn); stale is its record
	// from before, which the lagging view holds.
	s     *client
	conn  string
	stale *sessions.Record
	token uint64
	// w waits for the lock, connection-scoped, on a connection of its own.
	w *client
	a *instance
}

// startLagged takes the lock through an instance that has seen the resume, then
// stops it and starts the lagging one. The lagging view is a real one fed late:
// the records of s that its watch delivers are answered, through the view's
// source of records it need not decode (sessions.WithKnown), with the record from
// before the resume, which the view then holds as newer than them.
func startLagged(t *testing.T) *lagged {
	t.Helper()
	e := newEnv(t)
	b := e.startLock(t, Config{})
	s, w := e.open(t, "admin", 0), e.open(t, "admin", 0)
	stale := e.sessionRecord(t, s.id)

	s.nc.Close()
	e.waitSessionState(t, s.id, wire.StateRecovering)
	s2 := &client{nc: e.srv.ClientConn(t), id: s.id, token: s.token}
	if err := s2.call(ctx10(t), wire.SubjectSessionResume, &wire.SessionResumeRequest{}, nil); err != nil {
		t.Fatalf("resume: %v", err)
	}
	// b refuses a connection-scoped acquire until its view has the resume.
	var l *wire.Lock
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		var err error
		l, err = s2.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "cs", Scope: wire.ScopeConnection})
		return err
	})
	w.acquireAsync(&wire.LockAcquireRequest{Name: "cs", Scope: wire.ScopeConnection, WaitMS: 30000})
	e.waitQueued(t, "cs", 1)
	b.stop()

	a := e.startLockViewing(t, Config{}, sessions.WithKnown(func(id string, _ uint64) *sessions.Record {
		if id == s.id {
			return stale
		}
		return nil
	}))
	cur := e.sessionRecord(t, s.id)
	if r, ok := a.view.Get(s.id); !ok || r.Connection != stale.Connection || stale.Connection == cur.Connection {
		t.Fatalf("the lagging view holds %+v, want the session on the connection it left (%s, now on %s)", r, stale.Connection, cur.Connection)
	}
	return &lagged{e: e, s: s2, conn: cur.Connection, stale: stale, token: l.Token, w: w, a: a}
}

// loseW drops w's connection and waits until the lagging instance has removed w's
// waiter. The instance handles the sessions it finds losing what they hold in the
// order it learnt of them, and the holder before the waiters of a lock: by then it
// has acted on whatever it concluded of s before w's connection dropped.
func (l *lagged) loseW(t *testing.T) {
	t.Helper()
	l.w.nc.Close()
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		rec := l.e.lockRecord(t, "cs")
		if rec != nil && slices.Contains(rec.sessions(), l.w.id) {
			return fmt.Errorf("the session whose connection dropped still holds or waits for the lock: %s", jsonString(rec))
		}
		return nil
	})
}

// wantHeld fails unless s holds the lock on the connection it is on.
func (l *lagged) wantHeld(t *testing.T, when string) {
	t.Helper()
	rec := l.e.lockRecord(t, "cs")
	if rec == nil {
		t.Fatalf("%s: the lock is free; want it held by the session on its connection %s", when, l.conn)
	}
	i, ok := rec.holder(l.s.id)
	if !ok {
		t.Fatalf("%s: the session no longer holds the lock it took on the connection it is on (released while it uses it, and not told); record %s", when, jsonString(rec))
	}
	if h := rec.Holders[i]; h.Conn != l.conn || h.Token != l.token {
		t.Fatalf("%s: got the hold on connection %s with token %d, want connection %s (the session's; %s is the one it left) and token %d", when, h.Conn, h.Token, l.conn, l.stale.Connection, l.token)
	}
}

// catchUp delivers the session's current record to the lagging view.
func (l *lagged) catchUp(t *testing.T) {
	t.Helper()
	l.a.view.SetKnown(nil)
	l.a.view.Apply(l.e.sessionRecord(t, l.s.id))
}

// release gives the lock back with its token, through the lagging instance.
func (l *lagged) release(t *testing.T) {
	t.Helper()
	if err := l.s.release(ctx10(t), "cs", l.token); err != nil {
		t.Fatalf("the session's release of the lock it holds: %v", err)
	}
}

// TestLaggingViewKeepsAConnectionScopedLock: an instance whose view has not seen a
// session's resume checks a connection-scoped lock taken on the new connection
// against what it holds — the session on the connection it left. It must wait for
// its view rather than release the lock, which the session uses unaware.
func TestLaggingViewKeepsAConnectionScopedLock(t *testing.T) {
	l := startLagged(t)
	// The instance checked the holder as it loaded the lock.
	l.loseW(t)
	l.wantHeld(t, "checked by an instance whose view lags")
	l.catchUp(t)
	l.release(t)
}

// TestSessionScopedAcquireThroughALaggingViewKeepsTheConnection: a session-scoped
// acquire of the session, through an instance whose view lags, is answered with
// the equal lock; it must leave the hold on the connection it was taken on, not
// move it to the connection the lagging view holds (the one the session left), on
// which the next check releases it.
func TestSessionScopedAcquireThroughALaggingViewKeepsTheConnection(t *testing.T) {
	l := startLagged(t)
	got := l.s.mustAcquire(t, &wire.LockAcquireRequest{Name: "cs"})
	if got.Token != l.token || got.Scope != wire.ScopeConnection {
		t.Fatalf("got %s-scoped lock with token %d, want the equal lock: connection scope, token %d", got.Scope, got.Token, l.token)
	}
	l.wantHeld(t, "after a session-scoped acquire through the lagging instance")
	// The view catches up, and the instance checks the session again.
	l.catchUp(t)
	l.loseW(t)
	l.wantHeld(t, "once the lagging view caught up")
	l.release(t)
}

// TestSessionScopedAcquireDoesNotReviveALostHold: a session loses the connection it
// took a connection-scoped lock on, and resumes on another; the release of the lost
// hold fails (storage unavailable), to be retried. A session-scoped acquire of the
// session landing before the retry must not move the lost hold to the new
// connection, where it would survive the connection's loss and the waiting session
// be passed over: the hold is released, the waiter granted, and the try refused.
func TestSessionScopedAcquireDoesNotReviveALostHold(t *testing.T) {
	e := newEnv(t)
	in := e.startLock(t, Config{})
	s, w := e.open(t, "admin", 0), e.open(t, "admin", 0)
	s.mustAcquire(t, &wire.LockAcquireRequest{Name: "cs", Scope: wire.ScopeConnection})
	pw := w.acquireAsync(&wire.LockAcquireRequest{Name: "cs", WaitMS: 30000})
	e.waitQueued(t, "cs", 1)

	restore := e.refuseWrites(t)
	s.nc.Close()
	e.waitSessionState(t, s.id, wire.StateRecovering)
	in.waitLogged(t, "lock storage failed", 1) // the release on RECOVERING
	s2 := &client{nc: e.srv.ClientConn(t), id: s.id, token: s.token}
	if err := s2.call(ctx10(t), wire.SubjectSessionResume, &wire.SessionResumeRequest{}, nil); err != nil {
		t.Fatalf("resume: %v", err)
	}
	in.waitLogged(t, "lock storage failed", 2) // the release on the move to another connection
	restore()

	// Before the instance tries the release again (every 5 s).
	_, err := s2.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "cs"})
	if err == nil {
		t.Fatalf("a session-scoped try of the session got the lock it held on the connection it lost, passing over the waiting session; record %s", jsonString(e.lockRecord(t, "cs")))
	}
	wantCode(t, err, wire.CodeTimeout)
	if _, err := pw.wait(t, 10*time.Second); err != nil {
		t.Fatalf("the waiting session, next once the lost hold is released: %v", err)
	}
}
