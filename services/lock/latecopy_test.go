package lock

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestALateCopyDoesNotTakeOverItsReissue: an acquire that waits stalls in one
// instance's write past its caller's patience; the caller re-issues it, same
// request id, through another instance, where it waits for the lock with the
// re-issue's reply subject. When the stalled write goes, it conflicts, and the
// instance applied its copy again to the record read anew: the id waiting, it took
// the waiter over as a re-issue does, with its own reply subject, which nobody
// reads any more. The live request was never answered: granted on the release,
// the lock sat held by a session that did not know it. A copy that arrived before
// the waiter's reply subject was set is late: it is not applied (overtaken).
func TestALateCopyDoesNotTakeOverItsReissue(t *testing.T) {
	req := &wire.LockAcquireRequest{Name: "x", WaitMS: 20000, RequestID: "w"}
	s, retry, resume := stall(t, func(s *client) {}, sending(req))
	holder := s.e.open(t, "admin", 0)
	var held *wire.Lock
	retry(func() (err error) {
		held, err = holder.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "x"})
		return err
	})

	live := reissue(t, s.e, s.client, req, "")
	before := waiterOf(t, s.e.lockRecord(t, "x"), "w")
	resume()
	if after := waiterOf(t, s.e.lockRecord(t, "x"), "w"); after.Reply != before.Reply {
		t.Errorf("the waiter's reply subject is %q, was the live request's %q: the late copy took its place over", after.Reply, before.Reply)
	}
	if n := s.a.Stats().Overtaken; n != 1 {
		t.Errorf("the stalled instance counted %d overtaken requests, want 1", n)
	}
	retry(func() error { return holder.release(ctx10(t), "x", held.Token) })
	if _, err := live.wait(t, 5*time.Second); err != nil {
		t.Fatalf("the live request after the release: got %v, want the lock", err)
	}
}

// reissue sends req for c until an instance queues it — the request waits with a
// reply subject other than was — and returns the request, which waits. One taken by
// a stall's stopping instance is not applied (held behind the stalled write until
// its deadline, 30 s, then dropped): it is sent again then.
func reissue(t *testing.T, e *env, c *client, req *wire.LockAcquireRequest, was string) *pending {
	t.Helper()
	var p *pending
	natstest.CheckFor(t, 45*time.Second, 10*time.Millisecond, func() error {
		if p == nil || p.completed() {
			if p != nil && wire.CodeOf(p.err) != wire.CodeUnavailable && !errors.Is(p.err, context.DeadlineExceeded) {
				t.Fatalf("the re-issue was answered %v, %v; want it queued", p.lock, p.err)
			}
			p = c.acquireAsync(req)
			return errors.New("sent")
		}
		rec := e.lockRecord(t, req.Name)
		if i := rec.waiterIndex(req.RequestID, c.id); i < 0 || rec.Waiters[i].Reply == was {
			return errors.New("not queued yet")
		}
		return nil
	})
	return p
}

// TestAReissueAfterALostReplyTakesOver: a waiting request whose reply was lost
// (its caller stopped reading it) is re-issued, same request id, through another
// instance, and takes the waiter over: granted, the re-issue is answered. The
// waiter was stored, and taken over once already, through an instance whose clock
// is a minute ahead (or behind): by time alone, the re-issue, arriving by the other
// instance's clock, looked older than the reply subject it replaces, and was
// refused as a late copy. The instance's view showed that waiter when the re-issue
// arrived: it came after it, whatever the times say.
func TestAReissueAfterALostReplyTakesOver(t *testing.T) {
	for _, tc := range []struct {
		name string
		skew time.Duration
	}{{"stored through an instance ahead", time.Minute}, {"stored through an instance behind", -time.Minute}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			// Waits and deadlines set by its clock must not end before the test
			// does by the others' (a minute ahead of it).
			a := e.startLock(t, Config{Now: func() time.Time { return time.Now().Add(tc.skew) }, MaxWait: 10 * time.Minute})
			s, holder := e.open(t, "admin", 0), e.open(t, "admin", 0)
			held := holder.mustAcquire(t, &wire.LockAcquireRequest{Name: "x"})
			req := &wire.LockAcquireRequest{Name: "x", WaitMS: wire.WaitForever, RequestID: "w"}
			// Two copies through a, the second taking the first over; each loses
			// its reply (given up once queued).
			was := ""
			for range 2 {
				ctx, giveUp := context.WithCancel(context.Background())
				p := &pending{done: make(chan struct{})}
				go func() { defer close(p.done); p.lock, p.err = s.acquire(ctx, req) }()
				natstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
					if p.completed() {
						t.Fatalf("the copy was answered %v, %v; want it queued", p.lock, p.err)
					}
					rec := e.lockRecord(t, "x")
					if i := rec.waiterIndex("w", s.id); i < 0 || rec.Waiters[i].Reply == was {
						return errors.New("not queued yet")
					}
					return nil
				})
				giveUp()
				<-p.done
				was = waiterOf(t, e.lockRecord(t, "x"), "w").Reply
			}
			if w := waiterOf(t, e.lockRecord(t, "x"), "w"); w.ReissuedAt == 0 {
				t.Fatalf("waiter %+v: want the time of its takeover kept", w)
			}
			b := e.startLock(t, Config{})
			a.stop()
			live := reissue(t, e, s, req, was)
			if err := holder.release(ctx10(t), "x", held.Token); err != nil {
				t.Fatal(err)
			}
			if _, err := live.wait(t, 5*time.Second); err != nil {
				t.Fatalf("the re-issue after the release: got %v, want the lock", err)
			}
			if n := b.Stats().Overtaken; n != 0 {
				t.Errorf("the instance counted %d overtaken requests, want 0: a re-issue was refused as a late copy", n)
			}
		})
	}
}

// waiterOf returns the waiter of request id in rec, failing the test if none.
func waiterOf(t *testing.T, rec *record, id string) waiter {
	t.Helper()
	if rec != nil {
		if i := slices.IndexFunc(rec.Waiters, func(w waiter) bool { return w.ID == id }); i >= 0 {
			return rec.Waiters[i]
		}
	}
	t.Fatalf("record %+v: request %q does not wait", rec, id)
	return waiter{}
}

// TestACopyBeforeTheLastReissueIsLate: a waiter stored at 10 (v1) is taken over
// by a re-issue that arrived at 30 (v2). Copies of the request applied afterwards
// are judged against v2's reply subject: one that arrived at 20 at an instance
// whose view had v1 came before v2 — the view knew the waiter, but not that
// version of it — and must not take v2's place over; one whose instance had v2
// came after it, even by a clock that says 25 (behind); one whose instance had
// v1 only (its view lags) is judged by time. On a record an older version wrote
// (no reissued_at), a copy takes over a waiter its instance knew, as it did
// before, and one that arrived before the waiter was enqueued is late.
func TestACopyBeforeTheLastReissueIsLate(t *testing.T) {
	st := sessionState{connected: true, conn: "c1", rev: 1}
	copyAt := func(at int64, reply string) waiter {
		return waiter{ID: "w", Session: "S", Mode: wire.LockExclusive, Scope: wire.ScopeSession, Conn: "c1", SessionRev: 1,
			Reply: reply, Owner: "i1", EnqueuedAt: at, Deadline: at + 1000}
	}
	v1 := &record{Name: "x",
		Holders: []holder{{Session: "H", Mode: wire.LockExclusive, Scope: wire.ScopeSession, Token: 3, Request: "h", GrantedAt: 1}},
		Waiters: []waiter{copyAt(10, "r1")}}
	v2 := v1.clone()
	v2.prior = v1
	if granted, err := v2.acquireBy(st, arrival{at: 30, seen: v1}, copyAt(30, "r3"), true, true, 10, 31, &outcome{}); granted || err != nil {
		t.Fatalf("the re-issue: granted %v, err %v; want it to take the waiter over", granted, err)
	}
	v2.prior = nil
	if w := v2.Waiters[0]; w.Reply != "r3" || w.ReissuedAt != 30 || w.EnqueuedAt != 10 {
		t.Fatalf("waiter %+v: want reply r3, reissued_at 30, enqueued_at 10", w)
	}
	// v2 as an older version writes it, which does not keep reissued_at: when
	// the reply subject was set is not known, only that the waiter was enqueued at 10.
	v2old := v2.clone()
	v2old.Waiters[0].ReissuedAt = 0
	for _, tc := range []struct {
		name     string
		rec      *record
		a        arrival
		wantLate bool
	}{
		{"arrived at 20, its instance had v1", v2, arrival{at: 20, seen: v1}, true},
		{"arrived at 20, its instance had no record", v2, arrival{at: 20}, true},
		{"arrived at 25 by its clock, its instance had v2", v2, arrival{at: 25, seen: v2}, false},
		{"arrived at 40, its instance had v1", v2, arrival{at: 40, seen: v1}, false},
		{"written by an older version: arrived at 20, its instance had v1", v2old, arrival{at: 20, seen: v1}, false},
		{"written by an older version: arrived at 5, before the waiter", v2old, arrival{at: 5}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.rec.clone()
			r.prior = tc.rec
			o := &outcome{}
			_, err := r.acquireBy(st, tc.a, copyAt(tc.a.at, "r2"), true, true, 10, 50, o)
			reply := r.Waiters[0].Reply
			if tc.wantLate && (!errors.Is(err, ErrOvertaken) || reply != "r3" || o.overtaken != 1) {
				t.Fatalf("got err %v, waiter's reply %s; want ErrOvertaken and the reply of v2 (r3) kept", err, reply)
			}
			if !tc.wantLate && (err != nil || reply != "r2") {
				t.Fatalf("got err %v, waiter's reply %s; want the copy to take the waiter over (r2)", err, reply)
			}
		})
	}
}
