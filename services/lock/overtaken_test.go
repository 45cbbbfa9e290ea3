package lock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestARequestIsNotAppliedAfterItsSessionMovedOn: an instance's write of a
// try-once acquire stalls (a storage stall, held here by a gate) past its caller's
// deadline. The caller re-issues the request, same id, through another instance,
// where it is settled, and goes on: more acquires and releases of the lock, enough
// for the record to forget the first request's id (it keeps each session's last
// few). When the stalled write goes, it conflicts and the instance reads the lock
// again. It re-applied the acquire to what it read — the lock free, the id
// unknown — and granted it: the session held a lock it had been told about and
// released, and would hold it until it closed.
func TestARequestIsNotAppliedAfterItsSessionMovedOn(t *testing.T) {
	first := &wire.LockAcquireRequest{Name: "x", Mode: wire.LockShared, RequestID: "first"}
	t.Run("acquire", func(t *testing.T) {
		s, retry, resume := stall(t, func(s *client) {}, sending(first))
		cycle(t, retry, s.client, first)
		for i := range doneApiece + 1 {
			cycle(t, retry, s.client, &wire.LockAcquireRequest{Name: "x", Mode: wire.LockShared, RequestID: fmt.Sprintf("later-%d", i)})
		}
		if rec := s.e.lockRecord(t, "x"); rec == nil || slices.ContainsFunc(rec.Done, func(d done) bool { return d.ID == "first" }) {
			t.Fatalf("record %+v: want one that no longer remembers request \"first\"", rec)
		}
		resume()
		if rec := s.e.lockRecord(t, "x"); rec != nil && len(rec.Holders) > 0 {
			t.Fatalf("holders %+v: the stalled request was applied after its session had settled it and moved on", rec.Holders)
		}
		if n := s.a.Stats().Overtaken; n != 1 {
			t.Errorf("the stalled instance counted %d overtaken requests, want 1", n)
		}
	})
	// A release without a token releases whatever hold the session has: applied
	// late, it released the hold the session took after re-issuing it.
	t.Run("release without a token", func(t *testing.T) {
		s, retry, resume := stall(t, func(s *client) {
			s.mustAcquire(t, &wire.LockAcquireRequest{Name: "x"})
		}, func(ctx context.Context, s *client) error {
			return s.release(ctx, "x", 0)
		})
		retry(func() error {
			if err := s.release(ctx10(t), "x", 0); wire.CodeOf(err) != wire.CodeLockNotHeld {
				return err
			}
			return nil
		})
		var again *wire.Lock
		retry(func() (err error) { again, err = s.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "x"}); return err })
		resume()
		rec := s.e.lockRecord(t, "x")
		if rec == nil || len(rec.Holders) != 1 || rec.Holders[0].Token != again.Token {
			t.Fatalf("record %+v: want the session holding the lock it took again (token %d)", rec, again.Token)
		}
		if n := s.a.Stats().Overtaken; n != 1 {
			t.Errorf("the stalled instance counted %d overtaken requests, want 1", n)
		}
	})
}

// stalledClient is the session of a stall.
type stalledClient struct {
	*client
	e *env
	a *instance // the instance whose write stalls
}

// stall starts an instance a, lets prepare use it, then sends a request (send)
// whose write a holds until resume, and which times out. It then starts instance b
// and stops a, which answers later requests unavailable: retry re-issues a request
// until b takes it. resume lets a's write go and waits for a to stop.
func stall(t *testing.T, prepare func(s *client), send func(ctx context.Context, s *client) error) (s stalledClient, retry func(func() error), resume func()) {
	t.Helper()
	e := newEnv(t)
	g := newWriteGate()
	g.until = make(chan struct{})
	var release sync.Once
	letGo := func() { release.Do(func() { close(g.until) }) }
	// A stop's drain ends the requests' contexts, which would drop the stalled
	// request (dropEnded): it lasts beyond any test here. So does the write's own
	// bound (StoreTimeout): retry can take 10 s, and a write whose bound passed
	// while it was held fails unavailable without applying the request, so that
	// the rule under test was not reached (the tests failed so, at times, with no
	// overtaken request counted).
	a := e.startLock(t, Config{beforeWrite: g.beforeWrite, DrainTimeout: time.Minute, StoreTimeout: time.Minute})
	// Run before a's stop (cleanups run last first): a test that fails before
	// resume would otherwise leave a's stop waiting for the held write for good,
	// and the package's run with it, until its timeout.
	t.Cleanup(letGo)
	s = stalledClient{e.open(t, "admin", 0), e, a}
	prepare(s.client)
	g.armed.Store(true)
	// Given up after 300 ms, but without a deadline the request carries (a
	// Roster-Timeout header): the instance would drop it once that passed
	// (dropEnded), and the rule under test would not be reached.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	err := send(ctx, s.client)
	cancel()
	if err == nil {
		t.Fatal("the request was answered though its write is held")
	}
	g.waitHeld(t)

	e.startLock(t, Config{})
	stopped := make(chan struct{})
	go func() { a.stop(); close(stopped) }()
	retry = func(f func() error) {
		t.Helper()
		// Longer than one request's 10 s: one sent before a's stop has
		// unsubscribed it is taken by a, waits behind the held write, and is
		// answered only at its deadline (seen: the whole 10 s gone on it).
		natstest.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
			err := f()
			if wire.CodeOf(err) == wire.CodeUnavailable || errors.Is(err, context.DeadlineExceeded) {
				return err
			}
			if err != nil {
				t.Fatal(err)
			}
			return nil
		})
	}
	resume = func() {
		t.Helper()
		letGo() // the stalled write goes, and conflicts
		select {
		case <-stopped:
		case <-time.After(15 * time.Second):
			t.Fatal("the stopping instance did not finish its write")
		}
	}
	return s, retry, resume
}

// TestALateRequestDoesNotJoinAHoldTakenSince: the stalled request of
// TestARequestIsNotAppliedAfterItsSessionMovedOn, a connection-scoped try, finds
// the session holding the lock again when it is applied — a session-scoped hold
// taken since by another request. Joined to it as a copy joins the hold it was
// answered with, it weakened the hold to connection scope (released on the next
// connection loss, while its holder believes it survives one) and counted among the
// requests answered with it (holder.Also), so that withdrawing the request that
// took the hold no longer released it.
func TestALateRequestDoesNotJoinAHoldTakenSince(t *testing.T) {
	first := &wire.LockAcquireRequest{Name: "x", Scope: wire.ScopeConnection, RequestID: "first"}
	s, retry, resume := stall(t, func(s *client) {}, sending(first))
	cycle(t, retry, s.client, first)
	for i := range doneApiece + 1 {
		cycle(t, retry, s.client, &wire.LockAcquireRequest{Name: "x", RequestID: fmt.Sprintf("later-%d", i)})
	}
	var kept *wire.Lock
	retry(func() (err error) {
		kept, err = s.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "x", RequestID: "kept"})
		return err
	})
	resume()
	rec := s.e.lockRecord(t, "x")
	if rec == nil || len(rec.Holders) != 1 {
		t.Fatalf("record %+v: want the session holding the lock it took (token %d)", rec, kept.Token)
	}
	if h := rec.Holders[0]; h.Scope != wire.ScopeSession || h.answers("first") {
		t.Fatalf("hold %+v: the stalled request joined the hold taken after it (scope %s)", h, h.Scope)
	}
	var resp wire.LockCancelResponse
	if err := s.call(ctx10(t), wire.SubjectLockCancel, &wire.LockCancelRequest{Name: "x", RequestID: "kept"}, &resp); err != nil || !resp.Released {
		t.Fatalf("cancel of the request that took the hold: %+v, %v; want it released", resp, err)
	}
}

// TestAnInstanceClockAheadDoesNotRefuseTheNextRequest: times in a record come
// from the clocks of the instances that wrote them. A session acts on a lock
// through an instance whose clock is ahead, then makes its next request, on the
// answer, through another. Compared with that request's arrival by the other's
// clock, the act looked later than the request, which was refused as overtaken
// (unavailable): a TryLock after an Unlock, or a release without a token after an
// acquire, failed whenever the instance that answered the first ran ahead of the
// next one by more than the client's round trip — milliseconds. An act the
// instance knew of when the request arrived came before it, whatever its time.
func TestAnInstanceClockAheadDoesNotRefuseTheNextRequest(t *testing.T) {
	ahead := Config{Now: func() time.Time { return time.Now().Add(time.Minute) }}
	// through runs first on an instance whose clock is a minute ahead, then
	// stops it in favour of one whose clock is right, and runs next there.
	through := func(t *testing.T, first, next func(s *client)) {
		e := newEnv(t)
		a := e.startLock(t, ahead)
		s := e.open(t, "admin", 0)
		first(s)
		e.startLock(t, Config{})
		a.stop()
		next(s)
	}
	t.Run("try after a release", func(t *testing.T) {
		through(t, func(s *client) {
			l := s.mustAcquire(t, &wire.LockAcquireRequest{Name: "x", RequestID: "one"})
			if err := s.release(ctx10(t), "x", l.Token); err != nil {
				t.Fatal(err)
			}
		}, func(s *client) {
			if _, err := s.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "x", RequestID: "two"}); err != nil {
				t.Fatalf("a try of the free lock after the session released it: %v", err)
			}
		})
	})
	t.Run("release without a token after an acquire", func(t *testing.T) {
		through(t, func(s *client) {
			s.mustAcquire(t, &wire.LockAcquireRequest{Name: "x", RequestID: "one"})
		}, func(s *client) {
			if err := s.release(ctx10(t), "x", 0); err != nil {
				t.Fatalf("a release of the lock the session holds: %v", err)
			}
		})
	})
}

// TestARequestPastItsDeadlineIsNotApplied: the stalled acquire carries a deadline
// (Roster-Timeout), which passes while its write stalls. The session goes on as in
// TestARequestIsNotAppliedAfterItsSessionMovedOn, and then other sessions' refused
// tries fill the record's remembered ids (maxDone), pushing out every trace of the
// session's acts, which actedSince looks for. Applied again after the conflict,
// the request found the lock free, its id and its session unknown, and took the
// lock; past its deadline it is dropped instead, not applied (dropEnded).
func TestARequestPastItsDeadlineIsNotApplied(t *testing.T) {
	first := &wire.LockAcquireRequest{Name: "x", Mode: wire.LockShared, RequestID: "first"}
	s, retry, resume := stall(t, func(s *client) {}, func(_ context.Context, s *client) error {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := s.acquire(ctx, first)
		return err
	})
	cycle(t, retry, s.client, first)
	cycle(t, retry, s.client, &wire.LockAcquireRequest{Name: "x", Mode: wire.LockShared, RequestID: "later"})

	holder := s.e.open(t, "admin", 0)
	var held *wire.Lock
	retry(func() (err error) {
		held, err = holder.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "x"})
		return err
	})
	for i := range maxDone / doneApiece {
		other := s.e.open(t, "admin", 0)
		for j := range doneApiece {
			req := &wire.LockAcquireRequest{Name: "x", RequestID: fmt.Sprintf("try-%d-%d", i, j)}
			retry(func() error {
				if _, err := other.acquire(ctx10(t), req); wire.CodeOf(err) != wire.CodeTimeout {
					return err
				}
				return nil
			})
		}
	}
	retry(func() error { return holder.release(ctx10(t), "x", held.Token) })
	if rec := s.e.lockRecord(t, "x"); rec == nil || slices.ContainsFunc(rec.Done, func(d done) bool { return d.Session == s.id }) {
		t.Fatalf("record %+v: want one that remembers nothing of the session", rec)
	}

	resume()
	if rec := s.e.lockRecord(t, "x"); rec != nil && len(rec.Holders) > 0 {
		t.Fatalf("holders %+v: the stalled request was applied past its deadline", rec.Holders)
	}
	if n := s.a.Stats().Overtaken; n != 0 {
		t.Errorf("%d requests counted overtaken, want 0: the request was to be dropped before", n)
	}
}

// TestALostHoldReleasedSinceIsNotAnActOfTheSession: a session held the lock
// connection-scoped and resumed on another connection; its next request (a
// TryLock) arrived at an instance whose record still showed that hold. Another
// instance, reacting to the resume, released the lost hold first, remembering its
// request as answered at its own time, after the arrival; the request's write
// conflicted, and on the record read again that release counted as the session
// acting on the lock since: the TryLock was refused unavailable, though the
// session had done nothing in between and the request, applied, releases that
// hold itself first. Only the end of what the session's state at the arrival
// already showed lost is exempt: a hold the session released itself since still
// counts.
func TestALostHoldReleasedSinceIsNotAnActOfTheSession(t *testing.T) {
	resumed := sessionState{connected: true, conn: "c2", rev: 5}
	try := req("next", "S", wire.LockExclusive)
	for _, tc := range []struct {
		name        string
		scope       wire.LockScope
		wantGranted bool
	}{
		{"a connection-scoped hold the resume lost, released by another instance", wire.ScopeConnection, true},
		{"a session-scoped hold, released since: the session's act", wire.ScopeSession, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen := &record{Name: "x", Holders: []holder{{Session: "S", Mode: wire.LockExclusive, Scope: tc.scope,
				Conn: "c1", SessionRev: 3, Token: 7, Request: "held", GrantedAt: 1}}}
			// What was written after the arrival (at 5): the hold released at 10,
			// by the other instance's reaction (lost) or by the session (not lost).
			prior := seen.clone()
			if tc.scope == wire.ScopeConnection {
				prior.dropSession("S", resumed, 10, &outcome{})
			} else if _, err := prior.release("S", 7, 10, &outcome{}); err != nil {
				t.Fatal(err)
			}
			if !prior.completed("held", "S") {
				t.Fatalf("record %+v: want the hold's request remembered", prior)
			}
			r := prior.clone()
			r.prior = prior
			granted, err := r.acquireBy(resumed, arrival{at: 5, seen: seen}, try, false, true, 10, 12, &outcome{})
			if tc.wantGranted && (!granted || err != nil) {
				t.Fatalf("got granted %v, err %v; want the try granted", granted, err)
			}
			if !tc.wantGranted && !errors.Is(err, ErrOvertaken) {
				t.Fatalf("got granted %v, err %v; want ErrOvertaken", granted, err)
			}
		})
	}
}

// TestAnOvertakenReleaseSaysHowToRetry: a release has no request id, yet the
// answer to one not applied as overtaken told its caller to re-issue it with the
// same request_id. It says to release with the hold's token instead: released
// again without one, it would release the hold taken since.
func TestAnOvertakenReleaseSaysHowToRetry(t *testing.T) {
	err := errOvertakenRelease("x")
	if wire.CodeOf(err) != wire.CodeUnavailable || strings.Contains(err.Error(), "request_id") || !strings.Contains(err.Error(), "token") {
		t.Fatalf("got %v: want unavailable, telling to release with the hold's token, not to re-issue with a request_id", err)
	}
}

// cycle acquires the lock req names for c and releases it, each through retry.
func cycle(t *testing.T, retry func(func() error), c *client, req *wire.LockAcquireRequest) {
	t.Helper()
	var l *wire.Lock
	retry(func() (err error) { l, err = c.acquire(ctx10(t), req); return err })
	retry(func() error { return c.release(ctx10(t), req.Name, l.Token) })
}

// sending returns a stall's send: an acquire of req.
func sending(req *wire.LockAcquireRequest) func(ctx context.Context, s *client) error {
	return func(ctx context.Context, s *client) error {
		_, err := s.acquire(ctx, req)
		return err
	}
}
