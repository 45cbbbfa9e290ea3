package lock

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

func req(id, session string, mode wire.LockMode) waiter {
	return waiter{ID: id, Session: session, Mode: mode, Scope: wire.ScopeSession, Reply: "r." + id, Owner: "i1", Deadline: 1000}
}

func holders(r *record) []string {
	var out []string
	for _, h := range r.Holders {
		out = append(out, h.Session)
	}
	return out
}

func waiters(r *record) []string {
	var out []string
	for _, w := range r.Waiters {
		out = append(out, w.ID)
	}
	return out
}

// grantedIDs lists the granted waiters the write answers (finish): not the
// requests granted at once, which their own handlers answer.
func grantedIDs(o *outcome) []string {
	var out []string
	for _, g := range queuedGrants(o) {
		out = append(out, g.ID)
	}
	return out
}

func queuedGrants(o *outcome) []grantee {
	var out []grantee
	for _, g := range o.granted {
		if !g.direct {
			out = append(out, g)
		}
	}
	return out
}

func TestAcquireModes(t *testing.T) {
	x, sh := wire.LockExclusive, wire.LockShared
	tests := []struct {
		name        string
		held        []wire.LockMode // one holder per mode, sessions h0, h1, ...
		queued      int             // exclusive waiters already queued
		mode        wire.LockMode
		wait        bool
		wantGranted bool
		wantErr     error
		wantWaiters int
	}{
		{"free exclusive", nil, 0, x, false, true, nil, 0},
		{"free shared", nil, 0, sh, false, true, nil, 0},
		{"shared beside shared", []wire.LockMode{sh, sh}, 0, sh, false, true, nil, 0},
		{"exclusive beside shared try", []wire.LockMode{sh}, 0, x, false, false, ErrWouldBlock, 0},
		{"shared beside exclusive try", []wire.LockMode{x}, 0, sh, false, false, ErrWouldBlock, 0},
		{"exclusive beside exclusive waits", []wire.LockMode{x}, 0, x, true, false, nil, 1},
		{"shared behind a waiting exclusive waits", []wire.LockMode{sh}, 1, sh, true, false, nil, 2},
		{"shared behind a waiting exclusive try", []wire.LockMode{sh}, 1, sh, false, false, ErrWouldBlock, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &record{Name: "a"}
			for i, m := range tt.held {
				r.Holders = append(r.Holders, holder{Session: "h" + string(rune('0'+i)), Mode: m, Scope: wire.ScopeSession, Token: 5})
			}
			for i := 0; i < tt.queued; i++ {
				r.Waiters = append(r.Waiters, req("q"+string(rune('0'+i)), "q"+string(rune('0'+i)), x))
			}
			o := &outcome{}
			granted, err := r.acquire(req("new", "s", tt.mode), tt.wait, false, 100, 10, o)
			if granted != tt.wantGranted || !errors.Is(err, tt.wantErr) {
				t.Fatalf("got granted=%v err=%v, want %v %v", granted, err, tt.wantGranted, tt.wantErr)
			}
			if len(r.Waiters) != tt.wantWaiters {
				t.Errorf("got %d waiters, want %d", len(r.Waiters), tt.wantWaiters)
			}
			if err != nil && o.changed {
				t.Error("a refused acquire changed the record")
			}
		})
	}
}

func TestRepeatedAcquireIsEqualAndTakesWeakestScope(t *testing.T) {
	r := &record{Name: "a"}
	o := &outcome{}
	if ok, err := r.acquire(req("1", "s", wire.LockExclusive), false, false, 10, 1, o); !ok || err != nil {
		t.Fatalf("first acquire: %v %v", ok, err)
	}
	r.materialize(7)
	o = &outcome{}
	if ok, err := r.acquire(req("2", "s", wire.LockExclusive), false, false, 10, 2, o); !ok || err != nil {
		t.Fatalf("second acquire: %v %v", ok, err)
	}
	// The same hold and token; the hold remembers that request 2 was answered
	// with it too (a cancel of request 1 then leaves it in place).
	if r.Holders[0].Token != 7 || len(r.Holders) != 1 || !slices.Equal(r.Holders[0].Also, []string{"2"}) {
		t.Fatalf("repeated acquire: got holders %+v, want one, token 7, also answering 2", r.Holders)
	}
	conn := req("3", "s", wire.LockShared)
	conn.Scope, conn.Conn = wire.ScopeConnection, "srv/9"
	o = &outcome{}
	if ok, err := r.acquire(conn, false, false, 10, 3, o); !ok || err != nil {
		t.Fatalf("acquire with connection scope: %v %v", ok, err)
	}
	if h := r.Holders[0]; h.Scope != wire.ScopeConnection || h.Conn != "srv/9" || h.Token != 7 || h.Mode != wire.LockExclusive {
		t.Fatalf("got holder %+v, want exclusive, connection scope on srv/9, token 7", h)
	}
	// Shared to exclusive is refused.
	r2 := &record{Name: "b", Holders: []holder{{Session: "s", Mode: wire.LockShared, Token: 3}}}
	if _, err := r2.acquire(req("4", "s", wire.LockExclusive), true, false, 10, 4, &outcome{}); !errors.Is(err, ErrUpgrade) {
		t.Fatalf("got %v, want ErrUpgrade", err)
	}
}

func TestFIFOAndSharedBatching(t *testing.T) {
	r := &record{Name: "a"}
	o := &outcome{}
	mustAcquire := func(w waiter) bool {
		t.Helper()
		ok, err := r.acquire(w, true, false, 100, 1, o)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !mustAcquire(req("x1", "A", wire.LockExclusive)) {
		t.Fatal("free lock not granted")
	}
	r.materialize(10)
	for _, w := range []waiter{
		req("s1", "B", wire.LockShared), req("s2", "C", wire.LockShared),
		req("x2", "D", wire.LockExclusive), req("s3", "E", wire.LockShared),
	} {
		if mustAcquire(w) {
			t.Fatalf("%s granted while the lock is held exclusively", w.ID)
		}
	}
	// A stream of shared requests does not pass the waiting exclusive.
	o = &outcome{}
	if _, err := r.release("A", 10, 2, o); err != nil {
		t.Fatal(err)
	}
	if got, want := grantedIDs(o), []string{"s1", "s2"}; !slices.Equal(got, want) {
		t.Fatalf("after release got granted %v, want %v", got, want)
	}
	r.materialize(11)
	if ok, _ := r.acquire(req("s4", "F", wire.LockShared), true, false, 100, 3, &outcome{}); ok {
		t.Fatal("a new shared request overtook the waiting exclusive")
	}
	o = &outcome{}
	_, _ = r.release("B", 0, 4, o)
	if len(queuedGrants(o)) != 0 {
		t.Fatalf("granted %v while C still holds shared", grantedIDs(o))
	}
	o = &outcome{}
	_, _ = r.release("C", 0, 5, o)
	if got, want := grantedIDs(o), []string{"x2"}; !slices.Equal(got, want) {
		t.Fatalf("got granted %v, want %v", got, want)
	}
	r.materialize(12)
	o = &outcome{}
	_, _ = r.release("D", 0, 6, o)
	if got, want := grantedIDs(o), []string{"s3", "s4"}; !slices.Equal(got, want) {
		t.Fatalf("got granted %v, want %v", got, want)
	}
	r.materialize(13)
	for _, h := range r.Holders {
		if h.Token != 13 {
			t.Errorf("shared holder %s has token %d, want 13 (granted together)", h.Session, h.Token)
		}
	}
}

func TestReleaseNotHeldAndTokenMismatch(t *testing.T) {
	r := &record{Name: "a", Holders: []holder{{Session: "A", Mode: wire.LockExclusive, Token: 4}}}
	for _, tc := range []struct {
		session string
		token   uint64
	}{{"B", 0}, {"A", 3}, {"B", 4}} {
		o := &outcome{}
		if _, err := r.release(tc.session, tc.token, 1, o); !errors.Is(err, ErrNotHeld) || o.changed {
			t.Errorf("release(%s, %d): got %v changed=%v, want ErrNotHeld unchanged", tc.session, tc.token, err, o.changed)
		}
	}
	if _, err := r.release("A", 4, 1, &outcome{}); err != nil || !r.empty() {
		t.Fatalf("release by holder: %v, record %+v", err, r)
	}
}

func TestCancelLetsSharedThrough(t *testing.T) {
	r := &record{Name: "a", Holders: []holder{{Session: "A", Mode: wire.LockShared, Token: 4}},
		Waiters: []waiter{req("x", "B", wire.LockExclusive), req("s", "C", wire.LockShared)}}
	if _, _, err := r.cancel("x", "C", 1, true, &outcome{}); !errors.Is(err, ErrNoWaiter) {
		t.Fatalf("cancel by another session: got %v, want ErrNoWaiter", err)
	}
	o := &outcome{}
	if waiting, _, err := r.cancel("x", "B", 1, true, o); err != nil || !waiting {
		t.Fatalf("cancel a waiter: got waiting=%v, %v", waiting, err)
	}
	if got := grantedIDs(o); !slices.Equal(got, []string{"s"}) || len(o.removed) != 1 {
		t.Fatalf("got granted %v removed %d, want [s] and 1", got, len(o.removed))
	}
}

func TestExpireOwnedAndOrphaned(t *testing.T) {
	mine, theirs := req("m", "A", wire.LockExclusive), req("t", "B", wire.LockExclusive)
	mine.Deadline, theirs.Deadline, theirs.Owner = 100, 100, "gone"
	mine.Until, theirs.Until = 100, 100
	r := &record{Name: "a", Holders: []holder{{Session: "H", Mode: wire.LockExclusive, Token: 1}}, Waiters: []waiter{mine, theirs}}
	e := expiry{instance: "i1", grace: 50, reattach: 1000}
	if got := r.nextDeadline(e); got != 100 {
		t.Fatalf("next deadline %d, want 100", got)
	}
	o := &outcome{}
	r.expire(e, 120, o)
	if got := waiters(r); !slices.Equal(got, []string{"t"}) {
		t.Fatalf("after own deadline got waiters %v, want [t]", got)
	}
	o = &outcome{}
	r.expire(e, 150, o)
	if len(r.Waiters) != 0 || len(o.removed) != 1 || !errors.Is(o.removed[0].err, wire.ErrTimeout) {
		t.Fatalf("orphan not expired after the grace: %+v", r.Waiters)
	}
}

// TestExpireAtBoundDetaches: a waiter that wants to wait longer than one request
// is held keeps its place, detached, for a re-issue with its id.
func TestExpireAtBoundDetaches(t *testing.T) {
	long, next := req("l", "A", wire.LockExclusive), req("n", "B", wire.LockExclusive)
	long.Deadline, long.Until = 100, 0 // until cancelled, bound at 100
	next.Deadline, next.Until = 5000, 5000
	r := &record{Name: "a", Holders: []holder{{Session: "H", Mode: wire.LockExclusive, Token: 1}}, Waiters: []waiter{long, next}}
	e := expiry{instance: "i1", grace: 50, reattach: 1000}
	o := &outcome{}
	r.expire(e, 100, o)
	if got := waiters(r); !slices.Equal(got, []string{"l", "n"}) || r.Waiters[0].Reply != "" || r.Waiters[0].Deadline != 1100 {
		t.Fatalf("got waiters %v %+v, want l detached until 1100, then n", got, r.Waiters[0])
	}
	if len(o.removed) != 1 || o.removed[0].w.Reply != "r.l" || !errors.Is(o.removed[0].err, wire.ErrTimeout) {
		t.Fatalf("the held request was not answered: %+v", o.removed)
	}
	// The re-issue takes its place back.
	again := req("l", "A", wire.LockExclusive)
	again.Reply, again.Deadline = "r.l2", 1200
	if _, err := r.acquire(again, true, false, 10, 150, &outcome{}); err != nil {
		t.Fatal(err)
	}
	if got := waiters(r); !slices.Equal(got, []string{"l", "n"}) || r.Waiters[0].Reply != "r.l2" {
		t.Fatalf("got %v %+v, want l first with the new reply", got, r.Waiters[0])
	}
	// Not re-issued in time: dropped without an answer.
	r.Waiters[0].Reply, r.Waiters[0].Deadline = "", 1100
	o = &outcome{}
	r.expire(e, 1100, o)
	if got := waiters(r); !slices.Equal(got, []string{"n"}) {
		t.Fatalf("got waiters %v, want [n]", got)
	}
	// A detached waiter granted meanwhile is answered by its re-issue.
	r = &record{Name: "a", Holders: []holder{{Session: "H", Mode: wire.LockExclusive, Token: 1}},
		Waiters: []waiter{{ID: "d", Session: "D", Mode: wire.LockExclusive, Deadline: 900}}}
	o = &outcome{}
	if _, err := r.release("H", 0, 200, o); err != nil || !slices.Equal(holders(r), []string{"D"}) {
		t.Fatalf("release: %v, holders %v", err, holders(r))
	}
	ok, err := r.acquire(req("d", "D", wire.LockExclusive), true, false, 10, 300, &outcome{})
	if !ok || err != nil {
		t.Fatalf("re-issue after the grant: %v %v, want the lock", ok, err)
	}
}

func TestDropSession(t *testing.T) {
	base := func() *record {
		c := req("c", "C", wire.LockShared)
		c.Scope, c.Conn = wire.ScopeConnection, "c1"
		return &record{Name: "a",
			Holders: []holder{{Session: "A", Mode: wire.LockShared, Scope: wire.ScopeConnection, Conn: "c1", Token: 1},
				{Session: "B", Mode: wire.LockShared, Scope: wire.ScopeSession, Token: 1}},
			Waiters: []waiter{req("x", "X", wire.LockExclusive), c, req("d", "D", wire.LockShared)},
		}
	}
	tests := []struct {
		name        string
		session     string
		st          sessionState
		wantHolders []string
		wantWaiters []string
	}{
		{"fine", "A", sessionState{connected: true, conn: "c1"}, []string{"A", "B"}, []string{"x", "c", "d"}},
		{"connection lost", "A", sessionState{connected: false, conn: "c1"}, []string{"B"}, []string{"x", "c", "d"}},
		{"moved to another connection", "A", sessionState{connected: true, conn: "c2"}, []string{"B"}, []string{"x", "c", "d"}},
		{"session scope survives connection loss", "B", sessionState{connected: false}, []string{"A", "B"}, []string{"x", "c", "d"}},
		{"closed holder", "B", sessionState{closed: true}, []string{"A"}, []string{"x", "c", "d"}},
		{"connection-scoped waiter loses its connection", "C", sessionState{connected: false}, []string{"A", "B"}, []string{"x", "d"}},
		{"session-scoped waiter survives connection loss", "D", sessionState{connected: false}, []string{"A", "B"}, []string{"x", "c", "d"}},
		{"closed waiter", "D", sessionState{closed: true}, []string{"A", "B"}, []string{"x", "c"}},
		{"closed head lets shared through", "X", sessionState{closed: true}, []string{"A", "B", "C", "D"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := base()
			r.dropSession(tt.session, tt.st, 1, &outcome{})
			if got := holders(r); !slices.Equal(got, tt.wantHolders) {
				t.Errorf("got holders %v, want %v", got, tt.wantHolders)
			}
			if got := waiters(r); !slices.Equal(got, tt.wantWaiters) {
				t.Errorf("got waiters %v, want %v", got, tt.wantWaiters)
			}
		})
	}
	// A closed exclusive holder's lock goes to the next waiter.
	r := &record{Name: "a", Holders: []holder{{Session: "A", Mode: wire.LockExclusive, Token: 1}},
		Waiters: []waiter{req("cx", "C", wire.LockExclusive)}}
	o := &outcome{}
	r.dropSession("A", sessionState{closed: true}, 1, o)
	if got := grantedIDs(o); !slices.Equal(got, []string{"cx"}) {
		t.Fatalf("got granted %v, want [cx]", got)
	}
}

func TestRequeueKeepsPlace(t *testing.T) {
	r := &record{Name: "a", Holders: []holder{{Session: "H", Mode: wire.LockExclusive, Token: 1}},
		Waiters: []waiter{req("1", "A", wire.LockExclusive), req("2", "B", wire.LockExclusive)}}
	again := req("1", "A", wire.LockExclusive)
	again.Reply, again.Deadline = "r.new", 5000
	if _, err := r.acquire(again, true, false, 10, 1, &outcome{}); err != nil {
		t.Fatal(err)
	}
	if got := waiters(r); !slices.Equal(got, []string{"1", "2"}) || r.Waiters[0].Reply != "r.new" {
		t.Fatalf("got waiters %v (reply %s), want [1 2] with the new reply", got, r.Waiters[0].Reply)
	}
	if _, err := r.acquire(req("3", "C", wire.LockExclusive), true, false, 2, 1, &outcome{}); !errors.Is(err, ErrTooManyWaiters) {
		t.Fatalf("got %v, want ErrTooManyWaiters", err)
	}
}

// TestRequeueInAnotherModeAtTheHead: a waiting request re-issued in a mode the
// holders admit, at the head of the queue, is granted with the shared waiters
// behind it: the head of a stored queue is never compatible with the holders.
func TestRequeueInAnotherModeAtTheHead(t *testing.T) {
	r := &record{Name: "a", Holders: []holder{{Session: "H", Mode: wire.LockShared, Token: 1}},
		Waiters: []waiter{req("1", "A", wire.LockExclusive), req("2", "B", wire.LockShared), req("3", "C", wire.LockExclusive)}}
	again := req("1", "A", wire.LockShared)
	again.Reply = "r.new"
	o := &outcome{}
	granted, err := r.acquire(again, true, false, 10, 1, o)
	if !granted || err != nil {
		t.Fatalf("got granted=%v err=%v, want the lock", granted, err)
	}
	if got := holders(r); !slices.Equal(got, []string{"H", "A", "B"}) {
		t.Fatalf("got holders %v, want [H A B]", got)
	}
	if got := waiters(r); !slices.Equal(got, []string{"3"}) {
		t.Fatalf("got waiters %v, want [3]", got)
	}
	if got := grantedIDs(o); !slices.Equal(got, []string{"2"}) {
		t.Fatalf("got granted waiters %v, want [2]", got)
	}
}

// TestLateDuplicatesChangeNothing: a copy of an acquire that arrives after its
// request was answered for good — granted and released, cancelled, timed out, or
// refused — must not grant the lock again.
func TestLateDuplicatesChangeNothing(t *testing.T) {
	t.Run("granted then released", func(t *testing.T) {
		r := &record{Name: "l"}
		if ok, err := r.acquire(req("a1", "A", wire.LockExclusive), true, true, 10, 1, &outcome{}); !ok || err != nil {
			t.Fatalf("got %v, %v; want granted", ok, err)
		}
		r.materialize(5)
		if _, err := r.release("A", 5, 2, &outcome{}); err != nil {
			t.Fatal(err)
		}
		if r.empty() {
			t.Fatal("the record forgot the answered request at once")
		}
		if ok, err := r.acquire(req("a1", "A", wire.LockExclusive), true, true, 10, 3, &outcome{}); ok || !errors.Is(err, ErrCompleted) {
			t.Fatalf("late duplicate: got %v, %v; want ErrCompleted", ok, err)
		}
		if ok, err := r.acquire(req("a2", "A", wire.LockExclusive), true, true, 10, 4, &outcome{}); !ok || err != nil {
			t.Fatalf("a new request: got %v, %v; want granted", ok, err)
		}
	})
	t.Run("refused try-once with the client's id", func(t *testing.T) {
		r := &record{Name: "l"}
		r.acquire(req("b1", "B", wire.LockExclusive), false, true, 10, 1, &outcome{})
		if _, err := r.acquire(req("c1", "C", wire.LockExclusive), false, true, 10, 2, &outcome{}); !errors.Is(err, ErrWouldBlock) {
			t.Fatalf("got %v, want ErrWouldBlock", err)
		}
		r.materialize(7)
		r.release("B", 7, 3, &outcome{})
		if ok, err := r.acquire(req("c1", "C", wire.LockExclusive), false, true, 10, 4, &outcome{}); ok || !errors.Is(err, ErrCompleted) {
			t.Fatalf("late duplicate of a refused try: got %v, %v; want ErrCompleted", ok, err)
		}
	})
	t.Run("forgotten after the retention", func(t *testing.T) {
		r := &record{Name: "l"}
		r.acquire(req("d1", "D", wire.LockExclusive), true, true, 10, 1, &outcome{})
		r.materialize(3)
		r.release("D", 3, 2, &outcome{})
		o := &outcome{}
		r.forget(2+doneRetention+1, o)
		if !r.empty() || !o.changed {
			t.Fatalf("got %+v, want an empty record to delete", r)
		}
	})
}

// TestCancelWhateverBecameOfTheRequest: a cancel withdraws a request whether it
// waits, was granted, or has not arrived yet — and never takes a hold away from
// another request of the session that was answered with it.
func TestCancelWhateverBecameOfTheRequest(t *testing.T) {
	acquire := func(r *record, id, session string, wait bool) (bool, error) {
		return r.acquire(req(id, session, wire.LockExclusive), wait, true, 10, 1, &outcome{})
	}
	// Granted: the cancel releases the hold and the next waiter gets it.
	r := &record{Name: "a"}
	if ok, err := acquire(r, "x", "A", true); !ok || err != nil {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	if ok, err := acquire(r, "w", "B", true); ok || err != nil {
		t.Fatalf("B waits: %v %v", ok, err)
	}
	o := &outcome{}
	if waiting, released, err := r.cancel("x", "A", 2, true, o); err != nil || waiting || !released {
		t.Fatalf("cancel a granted request: got waiting=%v released=%v %v, want released", waiting, released, err)
	}
	if got := grantedIDs(o); !slices.Equal(got, []string{"w"}) {
		t.Fatalf("after the cancel granted %v, want [w]", got)
	}

	// Answered twice (an equal lock): the first cancel keeps the hold for the other.
	r = &record{Name: "a"}
	for _, id := range []string{"x", "y"} {
		if ok, err := acquire(r, id, "A", true); !ok || err != nil {
			t.Fatalf("acquire %s: %v %v", id, ok, err)
		}
	}
	if _, released, err := r.cancel("x", "A", 2, true, &outcome{}); err != nil || released || len(r.Holders) != 1 {
		t.Fatalf("cancel one of two answers: released=%v %v holders %+v; want the hold kept", released, err, r.Holders)
	}
	if _, released, err := r.cancel("y", "A", 2, true, &outcome{}); err != nil || !released || len(r.Holders) != 0 {
		t.Fatalf("cancel the last answer: released=%v %v holders %+v; want it released", released, err, r.Holders)
	}

	// Not arrived yet: the cancel is remembered and the late request refused.
	r = &record{Name: "a"}
	if _, _, err := r.cancel("z", "A", 1, true, &outcome{}); !errors.Is(err, ErrNoWaiter) {
		t.Fatalf("cancel an unknown request: got %v, want ErrNoWaiter", err)
	}
	if _, err := acquire(r, "z", "A", true); !errors.Is(err, ErrCompleted) {
		t.Fatalf("the request arriving after its cancel: got %v, want ErrCompleted", err)
	}

	// A try-once copy of a waiting request ends the wait.
	r = &record{Name: "a", Holders: []holder{{Session: "H", Mode: wire.LockExclusive, Token: 1}}}
	if ok, err := acquire(r, "q", "A", true); ok || err != nil {
		t.Fatalf("A waits: %v %v", ok, err)
	}
	o = &outcome{}
	if _, err := r.acquire(req("q", "A", wire.LockExclusive), false, true, 10, 1, o); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("try-once copy: got %v, want ErrWouldBlock", err)
	}
	if len(r.Waiters) != 0 || len(o.removed) != 1 || o.removed[0].w.ID != "q" {
		t.Fatalf("after the try-once copy: waiters %+v removed %+v; want q gone and answered", r.Waiters, o.removed)
	}
}

// TestEqualLockEndsTheWaitOfItsID: a request re-issued while the session holds
// the lock through another request is answered with the equal lock; the copy of
// it still waiting must leave the queue, or it is granted again, silently, after
// the session has released the lock — a hold nobody knows about.
func TestEqualLockEndsTheWaitOfItsID(t *testing.T) {
	// S's requests a and x wait, with C's between them; a is granted, x waits on.
	r := &record{Name: "a", Holders: []holder{{Session: "H", Mode: wire.LockExclusive, Token: 1}}}
	for _, w := range []waiter{req("a", "S", wire.LockExclusive), req("c", "C", wire.LockExclusive), req("x", "S", wire.LockExclusive)} {
		if ok, err := r.acquire(w, true, true, 10, 1, &outcome{}); ok || err != nil {
			t.Fatalf("%s waits: %v %v", w.ID, ok, err)
		}
	}
	if _, err := r.release("H", 0, 1, &outcome{}); err != nil || !slices.Equal(holders(r), []string{"S"}) || !slices.Equal(waiters(r), []string{"c", "x"}) {
		t.Fatalf("release by H: %v, holders %v waiters %v; want S holding, [c x] waiting", err, holders(r), waiters(r))
	}
	r.materialize(3)
	// x's held request is answered at the server's bound (detached) and re-issued.
	r.Waiters[1].Reply = ""
	if ok, err := r.acquire(req("x", "S", wire.LockExclusive), true, true, 10, 2, &outcome{}); !ok || err != nil {
		t.Fatalf("re-issue while the session holds the lock: got %v %v, want the equal lock", ok, err)
	}
	if got := waiters(r); !slices.Equal(got, []string{"c"}) {
		t.Fatalf("after the equal lock answered x, waiters %v; want [c]", got)
	}
	// Still attached, the waiting copy is answered with the lock too.
	r2 := r.clone()
	r2.Holders[0].Also = nil
	r2.Waiters = append(r2.Waiters, req("y", "S", wire.LockExclusive))
	again := req("y", "S", wire.LockExclusive)
	again.Reply = "r.y2"
	o2 := &outcome{}
	if ok, err := r2.acquire(again, true, true, 10, 2, o2); !ok || err != nil || len(queuedGrants(o2)) != 1 || queuedGrants(o2)[0].Reply != "r.y" {
		t.Fatalf("re-issue of an attached waiter: got %v %v, granted %+v; want its held request answered", ok, err, o2.granted)
	}
	r.materialize(4)
	o := &outcome{}
	if _, err := r.release("S", 0, 3, o); err != nil || !slices.Equal(grantedIDs(o), []string{"c"}) {
		t.Fatalf("release by S: %v, granted %v; want [c]", err, grantedIDs(o))
	}
	r.materialize(5)
	o = &outcome{}
	if _, err := r.release("C", 0, 4, o); err != nil || len(queuedGrants(o)) != 0 || len(r.Holders) != 0 {
		t.Fatalf("release by C: %v, granted %v, holders %v; want the lock free", err, grantedIDs(o), holders(r))
	}
}

// TestReleaseRemembersEveryAnswer: every request answered with a hold is answered
// for good once the hold is released (or lost); a late copy of any of them is
// refused, not granted again.
func TestReleaseRemembersEveryAnswer(t *testing.T) {
	for _, tt := range []struct {
		name string
		lose func(r *record) error
	}{
		{"released", func(r *record) error { _, err := r.release("A", 0, 3, &outcome{}); return err }},
		{"connection lost", func(r *record) error {
			r.dropSession("A", sessionState{connected: false}, 3, &outcome{})
			return nil
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := &record{Name: "a"}
			for _, id := range []string{"x", "y"} {
				w := req(id, "A", wire.LockExclusive)
				w.Scope, w.Conn = wire.ScopeConnection, "c1"
				if ok, err := r.acquire(w, true, true, 10, 1, &outcome{}); !ok || err != nil {
					t.Fatalf("acquire %s: %v %v", id, ok, err)
				}
			}
			r.materialize(2)
			if err := tt.lose(r); err != nil || len(r.Holders) != 0 {
				t.Fatalf("losing the hold: %v, holders %v", err, holders(r))
			}
			for _, id := range []string{"x", "y"} {
				if ok, err := r.acquire(req(id, "A", wire.LockExclusive), true, true, 10, 4, &outcome{}); ok || !errors.Is(err, ErrCompleted) {
					t.Errorf("late copy of %s: got %v, %v; want ErrCompleted", id, ok, err)
				}
			}
		})
	}
}

// TestCloneIsIndependent: the committer applies operations to a clone of the
// cached record; nothing it does may show through in the cache (which other
// goroutines read, and the next batch starts from when a write fails).
func TestCloneIsIndependent(t *testing.T) {
	also := make([]string, 2, 9)
	copy(also, []string{"y", "z"})
	r := &record{Name: "a", Holders: []holder{{Session: "A", Mode: wire.LockExclusive, Token: 3, Request: "x", Also: also}}}
	c := r.clone()
	if _, _, err := c.cancel("y", "A", 1, true, &outcome{}); err != nil {
		t.Fatal(err)
	}
	if got := r.Holders[0].Also; !slices.Equal(got, []string{"y", "z"}) {
		t.Fatalf("a cancel on the clone changed the original: also %q, want [y z]", got)
	}
}

// TestSharedHoldersAreBounded: a shared request beyond maxHolders waits, first come
// first served, and is granted when a holder leaves; one that will not wait is told
// it would block. Without the bound every holder grows the one record until a write
// exceeds NATS's max payload and every further grant fails.
func TestSharedHoldersAreBounded(t *testing.T) {
	sh := wire.LockShared
	r := &record{Name: "a", maxHolders: 2}
	for _, id := range []string{"A", "B"} {
		if ok, err := r.acquire(req(id, id, sh), true, false, 10, 1, &outcome{}); !ok || err != nil {
			t.Fatalf("%s: got %v, %v; want granted", id, ok, err)
		}
	}
	if ok, err := r.acquire(req("C", "C", sh), false, false, 10, 1, &outcome{}); ok || !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("C, try once at the bound: got %v, %v; want ErrWouldBlock", ok, err)
	}
	for _, id := range []string{"D", "E"} {
		if ok, err := r.acquire(req(id, id, sh), true, false, 10, 1, &outcome{}); ok || err != nil {
			t.Fatalf("%s at the bound: got %v, %v; want it waiting", id, ok, err)
		}
	}
	if got := waiters(r); !slices.Equal(got, []string{"D", "E"}) {
		t.Fatalf("got waiters %v, want [D E]", got)
	}
	o := &outcome{}
	if _, err := r.release("A", 0, 2, o); err != nil {
		t.Fatal(err)
	}
	if got := grantedIDs(o); !slices.Equal(got, []string{"D"}) {
		t.Fatalf("released one of two: got granted %v, want [D]", got)
	}
	if got := holders(r); !slices.Equal(got, []string{"B", "D"}) {
		t.Fatalf("got holders %v, want [B D]", got)
	}
	if got := r.clone(); got.maxHolders != 2 {
		t.Fatalf("a clone's bound: got %d, want 2", got.maxHolders)
	}
}

// TestSplitOversizedKeepsWhatDoesNotGrow: of a batch written to a record already over
// the byte bound, a release (which shrinks it) goes through and an acquire that
// would grow it is refused; on a record within the bound, what fits is kept.
func TestSplitOversizedKeepsWhatDoesNotGrow(t *testing.T) {
	base := &record{Name: "a", maxHolders: 10}
	if ok, err := base.acquire(req("h", "H", wire.LockExclusive), true, false, 10, 1, &outcome{}); !ok || err != nil {
		t.Fatal(ok, err)
	}
	for _, id := range []string{"w1", "w2"} {
		if _, err := base.acquire(req(id, strings.ToUpper(id), wire.LockExclusive), true, false, 10, 1, &outcome{}); err != nil {
			t.Fatal(err)
		}
	}
	acquire := newTask(true, func(r *record, now int64, o *outcome) {
		_, _ = r.acquire(req("w3", "W3", wire.LockExclusive), true, false, 10, now, o)
	})
	release := newTask(true, func(r *record, now int64, o *outcome) {
		_, _ = r.release("H", 0, now, o)
	})
	for _, tc := range []struct {
		name     string
		maxBytes int
		keep     []*task
	}{
		{"over the bound already", size(base) - 1, []*task{release}},
		{"room for both", size(base) * 2, []*task{acquire, release}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// No policy held: splitOversized applies the tasks with nothing withdrawn
			// (Service.mayAcquire), and needs no session view.
			s := &Service{cfg: Config{MaxHolders: 10}, st: &store{maxBytes: tc.maxBytes}, pol: policy.NewHolder(nil)}
			keep, refuse := s.splitOversized("a", entry{rec: base.clone(), rev: 7}, []*task{acquire, release}, 2)
			if !slices.Equal(keep, tc.keep) || len(keep)+len(refuse) != 2 {
				t.Fatalf("kept %d of 2, refused %d; want %d kept", len(keep), len(refuse), len(tc.keep))
			}
		})
	}
}

// TestWaitersWhoseWaitIsOverAreNotGranted: a release finds at the head of the queue
// a waiter whose caller's wait is over and a detached one not re-issued within its
// reattach time, neither expired yet (their owner is gone, the others wait the
// grace): both are answered timeout and remembered, and the next waiter is granted.
func TestWaitersWhoseWaitIsOverAreNotGranted(t *testing.T) {
	over, detached, next := req("o", "B", wire.LockExclusive), req("d", "C", wire.LockExclusive), req("n", "D", wire.LockExclusive)
	over.Owner, over.Deadline, over.Until = "gone", 100, 100
	detached.Owner, detached.Deadline, detached.Reply = "gone", 100, ""
	next.Until = 5000
	r := &record{Name: "a", Holders: []holder{{Session: "A", Mode: wire.LockExclusive, Token: 1}}, Waiters: []waiter{over, detached, next}}
	o := &outcome{}
	if _, err := r.release("A", 0, 120, o); err != nil {
		t.Fatal(err)
	}
	if got := holders(r); !slices.Equal(got, []string{"D"}) {
		t.Fatalf("got holders %v, want [D]", got)
	}
	if got := grantedIDs(o); !slices.Equal(got, []string{"n"}) {
		t.Fatalf("got granted %v, want [n]", got)
	}
	if len(o.removed) != 2 || !errors.Is(o.removed[0].err, wire.ErrTimeout) || !errors.Is(o.removed[1].err, wire.ErrTimeout) {
		t.Fatalf("got removed %+v, want o and d answered timeout", o.removed)
	}
	if !r.completed("o", "B") || !r.completed("d", "C") {
		t.Fatalf("got done %+v, want o and d remembered", r.Done)
	}
}

// TestGrantTakenBackInTheSameWrite: operations applied after a release in one
// write (a group-commit batch) take the hold it granted away again. Each granted
// request must be answered for what became of it: a cancelled one timeout, a lost
// session's session_closed or unavailable — and a cancelled one must not get the
// lock even when the hold stays for another request of its session.
func TestGrantTakenBackInTheSameWrite(t *testing.T) {
	// H holds; B's x and y wait, then C's c.
	setup := func() *record {
		r := &record{Name: "a", Holders: []holder{{Session: "H", Mode: wire.LockExclusive, Token: 1}}}
		for _, w := range []waiter{req("x", "B", wire.LockExclusive), req("y", "B", wire.LockExclusive), req("c", "C", wire.LockExclusive)} {
			if _, err := r.acquire(w, true, true, 10, 1, &outcome{}); err != nil {
				t.Fatal(err)
			}
		}
		return r
	}
	removed := func(o *outcome) map[string]wire.Code {
		out := map[string]wire.Code{}
		for _, rm := range o.removed {
			var we *wire.Error
			errors.As(rm.err, &we)
			out[rm.w.ID] = we.Code
		}
		return out
	}
	for _, tc := range []struct {
		name        string
		undo        func(r *record, o *outcome)
		wantGranted []string
		wantRemoved map[string]wire.Code
	}{
		{
			name: "cancel of one of two answers",
			undo: func(r *record, o *outcome) {
				if _, released, err := r.cancel("x", "B", 2, true, o); err != nil || released {
					t.Fatalf("cancel: released=%v %v, want the hold kept for y", released, err)
				}
			},
			wantGranted: []string{"y"},
			wantRemoved: map[string]wire.Code{"x": wire.CodeTimeout},
		},
		{
			name: "cancel of both answers",
			undo: func(r *record, o *outcome) {
				r.cancel("x", "B", 2, true, o)
				if _, released, err := r.cancel("y", "B", 2, true, o); err != nil || !released {
					t.Fatalf("cancel: released=%v %v, want released", released, err)
				}
			},
			wantGranted: []string{"c"},
			wantRemoved: map[string]wire.Code{"x": wire.CodeTimeout, "y": wire.CodeTimeout},
		},
		{
			name:        "session closed",
			undo:        func(r *record, o *outcome) { r.dropSession("B", sessionState{closed: true}, 2, o) },
			wantGranted: []string{"c"},
			wantRemoved: map[string]wire.Code{"x": wire.CodeSessionClosed, "y": wire.CodeSessionClosed},
		},
		{
			name: "connection lost",
			undo: func(r *record, o *outcome) {
				r.Holders[0].Scope = wire.ScopeConnection
				r.dropSession("B", sessionState{}, 2, o)
			},
			wantGranted: []string{"c"},
			wantRemoved: map[string]wire.Code{"x": wire.CodeUnavailable, "y": wire.CodeUnavailable},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := setup()
			o := &outcome{}
			if _, err := r.release("H", 0, 2, o); err != nil {
				t.Fatal(err)
			}
			if got := grantedIDs(o); !slices.Equal(got, []string{"x", "y"}) {
				t.Fatalf("the release granted %v, want [x y]", got)
			}
			tc.undo(r, o)
			if got := grantedIDs(o); !slices.Equal(got, tc.wantGranted) {
				t.Errorf("granted %v, want %v", got, tc.wantGranted)
			}
			if got := removed(o); !maps.Equal(got, tc.wantRemoved) {
				t.Errorf("removed %v, want %v", got, tc.wantRemoved)
			}
		})
	}

	// Released by its own session: the requests are answered with the hold they
	// were granted, not with the one C's later grant makes.
	r := setup()
	o := &outcome{}
	r.release("H", 0, 2, o)
	if _, err := r.release("B", 0, 2, o); err != nil {
		t.Fatal(err)
	}
	for _, g := range o.granted {
		if want := map[string]string{"x": "B", "y": "B", "c": "C"}[g.ID]; g.Session != want {
			t.Fatalf("granted %s of %s, want %s", g.ID, g.Session, want)
		}
		if (g.released != nil) != (g.Session == "B") {
			t.Fatalf("granted %+v: want B's answered with the released hold", g)
		}
	}
}

// TestLostWaitsForTheView: a connection-scoped hold or wait is lost for a state of
// its session at least as recent as the session record its connection was read
// from; an older state comes from a view that lags, and changes nothing.
func TestLostWaitsForTheView(t *testing.T) {
	conn, sess := wire.ScopeConnection, wire.ScopeSession
	tests := []struct {
		name  string
		st    sessionState
		scope wire.LockScope
		rev   uint64
		want  bool
	}{
		{"on its connection", sessionState{connected: true, conn: "c2", rev: 9}, conn, 5, false},
		{"moved on since", sessionState{connected: true, conn: "c3", rev: 9}, conn, 5, true},
		{"recovering since", sessionState{conn: "c2", rev: 9}, conn, 5, true},
		{"a lagging view: on the connection it left", sessionState{connected: true, conn: "c1", rev: 3}, conn, 5, false},
		{"a lagging view: recovering before", sessionState{conn: "c1", rev: 4}, conn, 5, false},
		{"closed, however old", sessionState{closed: true}, conn, 5, true},
		{"closed, session scope", sessionState{closed: true}, sess, 5, true},
		{"session scope survives", sessionState{connected: true, conn: "c3", rev: 9}, sess, 5, false},
		{"no revision (older record): as before", sessionState{connected: true, conn: "c1", rev: 3}, conn, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := lostIn(tt.st, tt.scope, "c2", tt.rev); got != tt.want {
				t.Fatalf("got lost %v, want %v", got, tt.want)
			}
			r := &record{Name: "a", Holders: []holder{{Session: "A", Mode: wire.LockExclusive, Scope: tt.scope, Conn: "c2", SessionRev: tt.rev, Token: 1}}}
			r.dropSession("A", tt.st, 1, &outcome{})
			if held := len(r.Holders) == 1; held == tt.want {
				t.Fatalf("got held %v after dropSession, want %v", held, !tt.want)
			}
		})
	}
}

// TestRequestOfTheSessionAndItsHold: a request of a session holding the lock
// connection-scoped, from another connection, never moves the hold. From an older
// record of the session (a lagging view) it leaves the hold where it is; from a
// newer one, or one that has the session RECOVERING since, it shows the hold lost,
// and the hold is released — the next waiter granted — before the request is
// applied as a new one.
func TestRequestOfTheSessionAndItsHold(t *testing.T) {
	held := func(scope wire.LockScope, conn string, rev uint64) *record {
		return &record{Name: "a",
			Holders: []holder{{Session: "S", Mode: wire.LockExclusive, Scope: scope, Conn: conn, SessionRev: rev, Token: 1, Request: "h"}},
			Waiters: []waiter{req("w", "W", wire.LockExclusive)}}
	}
	// A request of S taken from its record at rev: on conn, ACTIVE unless recovering.
	type request struct {
		st sessionState
		w  waiter
	}
	from := func(scope wire.LockScope, conn string, rev uint64, recovering bool) request {
		w := req("r", "S", wire.LockExclusive)
		w.Scope, w.Conn, w.SessionRev = scope, conn, rev
		return request{sessionState{connected: !recovering, conn: conn, rev: rev}, w}
	}
	conn, sess := wire.ScopeConnection, wire.ScopeSession
	tests := []struct {
		name        string
		rec         *record
		req         request
		wantGranted bool // the request is answered with the lock
		wantHold    holder
		wantHolder  string
		wantOthers  []string // granted besides the request
	}{
		{"session scope, older record", held(conn, "c2", 5), from(sess, "c1", 3, false), true,
			holder{Scope: conn, Conn: "c2", SessionRev: 5}, "S", nil},
		{"connection scope, same record", held(conn, "c2", 5), from(conn, "c2", 5, false), true,
			holder{Scope: conn, Conn: "c2", SessionRev: 5}, "S", nil},
		{"session scope, newer record", held(conn, "c1", 3), from(sess, "c2", 5, false), false,
			holder{}, "W", []string{"w"}},
		{"connection scope, newer record", held(conn, "c1", 3), from(conn, "c2", 5, false), false,
			holder{}, "W", []string{"w"}},
		{"session scope, recovering since", held(conn, "c1", 3), from(sess, "c1", 4, true), false,
			holder{}, "W", []string{"w"}},
		{"a session-scoped hold weakened by a newer record", held(sess, "c1", 3), from(conn, "c2", 5, false), true,
			holder{Scope: conn, Conn: "c2", SessionRev: 5}, "S", nil},
		{"a session-scoped hold weakened by an older record", held(sess, "c2", 5), from(conn, "c1", 3, false), true,
			holder{Scope: conn, Conn: "c2", SessionRev: 5}, "S", nil},
		{"a hold without revision, from another connection: lost, as before", held(conn, "c1", 0), from(sess, "c2", 5, false), false,
			holder{}, "W", []string{"w"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, o := tt.rec, &outcome{}
			granted, err := r.acquireBy(tt.req.st, arrival{at: 2}, tt.req.w, false, true, 10, 2, o)
			if granted != tt.wantGranted || (err != nil) == tt.wantGranted {
				t.Fatalf("got granted %v, err %v; want granted %v", granted, err, tt.wantGranted)
			}
			if got := holders(r); !slices.Equal(got, []string{tt.wantHolder}) {
				t.Fatalf("got holders %v, want [%s]", got, tt.wantHolder)
			}
			if got := grantedIDs(o); !slices.Equal(got, tt.wantOthers) {
				t.Fatalf("granted %v, want %v", got, tt.wantOthers)
			}
			if tt.wantHolder != "S" {
				if !r.completed("h", "S") {
					t.Error("the request the lost hold answered is not remembered as answered")
				}
				return
			}
			if h := r.Holders[0]; h.Scope != tt.wantHold.Scope || h.Conn != tt.wantHold.Conn || h.SessionRev != tt.wantHold.SessionRev || h.Token != 1 {
				t.Fatalf("got hold %s on %s at session revision %d, token %d; want %s on %s at %d, token 1",
					h.Scope, h.Conn, h.SessionRev, h.Token, tt.wantHold.Scope, tt.wantHold.Conn, tt.wantHold.SessionRev)
			}
		})
	}

	// Applied alone — as a promoted waiter is, with no record of the session at
	// hand — a request does not move the hold onto its connection either.
	r := held(conn, "c1", 3)
	if _, err := r.acquire(from(sess, "c2", 5, false).w, false, true, 10, 2, &outcome{}); err != nil {
		t.Fatal(err)
	}
	if h := r.Holders[0]; h.Conn != "c1" || h.SessionRev != 3 {
		t.Fatalf("got the hold on %s at session revision %d, want it left on c1 at 3", h.Conn, h.SessionRev)
	}
}

// TestWaiterWhoseSessionMayNotAcquireIsNeverGranted: record.allowed (the policy and
// roles of the writing instance) is checked when a waiter would be granted, and by
// withdrawForbidden over the whole queue. A waiter whose session may not acquire the
// lock is answered forbidden, its id remembered, and never granted; the others keep
// their order; holds are not taken away.
func TestWaiterWhoseSessionMayNotAcquireIsNeverGranted(t *testing.T) {
	x, sh := wire.LockExclusive, wire.LockShared
	denied := func(sessions ...string) func(string) bool {
		return func(s string) bool { return !slices.Contains(sessions, s) }
	}
	forbidden := func(o *outcome) []string {
		var out []string
		for _, rm := range o.removed {
			if errors.Is(rm.err, wire.ErrForbidden) {
				out = append(out, rm.w.ID)
			}
		}
		return out
	}

	// The release that would grant the head answers it forbidden and grants the
	// next one.
	r := &record{Name: "l", Holders: []holder{{Session: "h", Mode: x, Request: "h1", Token: 3}},
		Waiters: []waiter{req("a", "sa", x), req("b", "sb", x)}, allowed: denied("sa")}
	o := &outcome{}
	if _, err := r.release("h", 0, 10, o); err != nil {
		t.Fatal(err)
	}
	if got := forbidden(o); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("forbidden %v, want [a]", got)
	}
	if got := grantedIDs(o); !slices.Equal(got, []string{"b"}) || !slices.Equal(holders(r), []string{"sb"}) {
		t.Fatalf("granted %v, holders %v; want b granted to sb", got, holders(r))
	}
	if !r.completed("a", "sa") {
		t.Fatal("the withdrawn request is not remembered: a late copy would queue again")
	}

	// withdrawForbidden takes them out of the middle of the queue too, and keeps
	// the others' order and the holds — also the hold of a denied session.
	r = &record{Name: "l", Holders: []holder{{Session: "sa", Mode: x, Request: "h1", Token: 3}},
		Waiters: []waiter{req("b", "sb", x), req("a2", "sa", x), req("c", "sc", x), req("d", "sd", x)}, allowed: denied("sa", "sc")}
	o = &outcome{}
	r.withdrawForbidden(10, o)
	if got := forbidden(o); !slices.Equal(got, []string{"a2", "c"}) || !o.changed {
		t.Fatalf("forbidden %v (changed %v), want [a2 c]", got, o.changed)
	}
	if !slices.Equal(waiters(r), []string{"b", "d"}) || !slices.Equal(holders(r), []string{"sa"}) || len(o.granted) != 0 {
		t.Fatalf("waiters %v, holders %v, granted %v; want [b d], [sa], none", waiters(r), holders(r), grantedIDs(o))
	}

	// A denied head that the holders do not admit is withdrawn all the same, and
	// the shared waiters it held back are granted.
	r = &record{Name: "l", Holders: []holder{{Session: "h", Mode: sh, Request: "h1", Token: 3}},
		Waiters: []waiter{req("x", "sx", x), req("s1", "s1", sh), req("s2", "s2", sh)}, allowed: denied("sx")}
	o = &outcome{}
	r.withdrawForbidden(10, o)
	if got := grantedIDs(o); !slices.Equal(got, []string{"s1", "s2"}) || !slices.Equal(forbidden(o), []string{"x"}) || len(r.Waiters) != 0 {
		t.Fatalf("granted %v, forbidden %v, waiters %v; want [s1 s2], [x], none", got, forbidden(o), waiters(r))
	}

	// Nothing denied: nothing changes.
	r = &record{Name: "l", Holders: []holder{{Session: "h", Mode: x, Request: "h1", Token: 3}},
		Waiters: []waiter{req("a", "sa", x)}, allowed: denied()}
	o = &outcome{}
	r.withdrawForbidden(10, o)
	if o.changed || len(o.removed) != 0 || !slices.Equal(waiters(r), []string{"a"}) {
		t.Fatalf("changed %v, removed %d, waiters %v; want nothing changed", o.changed, len(o.removed), waiters(r))
	}
}
