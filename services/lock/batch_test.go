package lock

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// queued returns how many operations on name wait for the instance's next batch.
func (in *instance) queued(name string) int {
	in.qmu.Lock()
	defer in.qmu.Unlock()
	return len(in.queues[name])
}

// waitBatched waits until n operations on name wait for the next batch.
func (in *instance) waitBatched(t *testing.T, name string, n int) {
	t.Helper()
	natstest.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		if got := in.queued(name); got != n {
			return fmt.Errorf("%d operations wait for the next batch, want %d", got, n)
		}
		return nil
	})
}

// startGated starts an instance whose writes a gate can hold, until g.until closes.
func startGated(t *testing.T) (*env, *instance, *writeGate) {
	e := newEnv(t)
	g := newWriteGate()
	g.until = make(chan struct{})
	return e, e.startLock(t, Config{beforeWrite: g.beforeWrite}), g
}

// wantGrantedTo fails the test unless what was answered with a valid lock of b.
func wantGrantedTo(t *testing.T, what string, b *client, l *wire.Lock, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v, want the lock it was granted", what, err)
	}
	validate(t, "lock.acquire.response", wire.LockAcquireResponse{Lock: l})
	if l.Session != b.id {
		t.Fatalf("got %+v, want a lock of %s", l, b.id)
	}
}

// call is a request sent in the background.
type call struct {
	done chan struct{}
	err  error
}

func (c *client) callAsync(subject string, req, resp any) *call {
	cl := &call{done: make(chan struct{})}
	go func() {
		defer close(cl.done)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cl.err = c.call(ctx, subject, req, resp)
	}()
	return cl
}

func (cl *call) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-cl.done:
		return cl.err
	case <-time.After(15 * time.Second):
		t.Fatal("no answer within 15 s")
		return nil
	}
}

// TestGrantUndoneInItsBatchIsAnswered: a release grants a waiting request, and
// an operation applied after it in the same group-commit batch takes the hold
// away again — the request's cancel, its session's close, its session's own
// release. The held request must still be answered, as it would be had the two
// come in separate writes: cancelled (timeout), session_closed, or granted.
// Before, the answer went only to granted waiters whose session still held the
// lock after the batch, and the request waited unanswered for its own timeout.
func TestGrantUndoneInItsBatchIsAnswered(t *testing.T) {
	for _, tc := range []struct {
		name string
		// undo sends the operation batched after the release; check checks its
		// answer and the held request's.
		undo  func(t *testing.T, b *client) *call
		check func(t *testing.T, b *client, undo error, l *wire.Lock, err error)
	}{
		{
			name: "cancel",
			undo: func(t *testing.T, b *client) *call {
				var cr wire.LockCancelResponse
				cl := b.callAsync(wire.SubjectLockCancel, &wire.LockCancelRequest{Name: "g", RequestID: "bx"}, &cr)
				t.Cleanup(func() {
					if !t.Failed() && (cr.Cancelled || !cr.Released) {
						t.Errorf("cancel answered %+v, want released", cr)
					}
				})
				return cl
			},
			check: func(t *testing.T, _ *client, undo error, _ *wire.Lock, err error) {
				if undo != nil {
					t.Fatalf("cancel: %v", undo)
				}
				wantCode(t, err, wire.CodeTimeout)
			},
		},
		{
			name: "session closed",
			undo: func(t *testing.T, b *client) *call {
				return b.callAsync(wire.SubjectSessionClose, &wire.SessionCloseRequest{}, nil)
			},
			check: func(t *testing.T, _ *client, undo error, _ *wire.Lock, err error) {
				if undo != nil {
					t.Fatalf("close: %v", undo)
				}
				wantCode(t, err, wire.CodeSessionClosed)
			},
		},
		{
			name: "released by its session",
			undo: func(t *testing.T, b *client) *call {
				var rr wire.LockReleaseResponse
				cl := b.callAsync(wire.SubjectLockRelease, &wire.LockReleaseRequest{Name: "g"}, &rr)
				t.Cleanup(func() {
					if !t.Failed() {
						validate(t, "lock.release.response", rr)
					}
				})
				return cl
			},
			check: func(t *testing.T, b *client, undo error, l *wire.Lock, err error) {
				if undo != nil {
					t.Fatalf("release: %v", undo)
				}
				wantGrantedTo(t, "the held request", b, l, err)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, in, g := startGated(t)
			a, b, c := e.open(t, "admin", 0), e.open(t, "admin", 0), e.open(t, "admin", 0)
			a.mustAcquire(t, &wire.LockAcquireRequest{Name: "g"})
			pb := b.acquireAsync(&wire.LockAcquireRequest{Name: "g", WaitMS: wire.WaitForever, RequestID: "bx"})
			e.waitQueued(t, "g", 1)

			// c's acquire is written (queued behind b) while the release and the
			// undoing operation gather, in that order, for the next batch.
			g.armed.Store(true)
			pc := c.acquireAsync(&wire.LockAcquireRequest{Name: "g", WaitMS: wire.WaitForever, RequestID: "cx"})
			g.waitHeld(t)
			rel := a.callAsync(wire.SubjectLockRelease, &wire.LockReleaseRequest{Name: "g"}, nil)
			in.waitBatched(t, "g", 1)
			undo := tc.undo(t, b)
			in.waitBatched(t, "g", 2)
			close(g.until)

			if err := rel.wait(t); err != nil {
				t.Fatalf("release: %v", err)
			}
			undoErr := undo.wait(t)
			l, err := pb.wait(t, 10*time.Second)
			tc.check(t, b, undoErr, l, err)
			if lc, err := pc.wait(t, 10*time.Second); err != nil || lc.Session != c.id {
				t.Fatalf("c: got %+v, %v; want the lock", lc, err)
			}
		})
	}
}

// TestDirectGrantUndoneInItsBatchIsAnswered: a try-once acquire granted at once, in
// a batch where a later operation takes the hold away again — its own cancel, or a
// release by its session — is answered for what became of it, as a waiter granted
// and undone in one batch is: the cancel's timeout, or the lock it was given. It was
// answered conflict ("released concurrently"), a code that means a shared holder
// asking for the lock exclusively.
func TestDirectGrantUndoneInItsBatchIsAnswered(t *testing.T) {
	for _, tc := range []struct {
		name  string
		undo  func(b *client) *call
		check func(t *testing.T, b *client, l *wire.Lock, err error)
	}{
		{
			name: "cancel",
			undo: func(b *client) *call {
				return b.callAsync(wire.SubjectLockCancel, &wire.LockCancelRequest{Name: "d", RequestID: "bx"}, &wire.LockCancelResponse{})
			},
			check: func(t *testing.T, _ *client, _ *wire.Lock, err error) { wantCode(t, err, wire.CodeTimeout) },
		},
		{
			name: "released by its session",
			undo: func(b *client) *call {
				return b.callAsync(wire.SubjectLockRelease, &wire.LockReleaseRequest{Name: "d"}, &wire.LockReleaseResponse{})
			},
			check: func(t *testing.T, b *client, l *wire.Lock, err error) {
				wantGrantedTo(t, "the try", b, l, err)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, in, g := startGated(t)
			a, b := e.open(t, "admin", 0), e.open(t, "admin", 0)
			a.mustAcquire(t, &wire.LockAcquireRequest{Name: "d"})
			// a's release is written while b's try and the undoing operation
			// gather, in that order, for the next batch.
			g.armed.Store(true)
			rel := a.callAsync(wire.SubjectLockRelease, &wire.LockReleaseRequest{Name: "d"}, nil)
			g.waitHeld(t)
			pb := b.acquireAsync(&wire.LockAcquireRequest{Name: "d", RequestID: "bx"})
			in.waitBatched(t, "d", 1)
			undo := tc.undo(b)
			in.waitBatched(t, "d", 2)
			close(g.until)

			if err := rel.wait(t); err != nil {
				t.Fatalf("release: %v", err)
			}
			if err := undo.wait(t); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			l, err := pb.wait(t, 10*time.Second)
			tc.check(t, b, l, err)
			if rec := e.lockRecord(t, "d"); rec != nil && len(rec.Holders) > 0 {
				t.Fatalf("holders left: %+v, want none", rec.Holders)
			}
		})
	}
}

// TestDirectGrantsOfOneRequestIDInTwoSessions: request ids are the session's own,
// so two sessions may use the same one. Both granted at once in one batch, each
// must be answered with its own lock. The handler looked its request up in the
// write's outcome by id alone and found the other session's: here b's try was
// answered with the shared hold a released in the batch — a lock of a, with a's
// older token — while b held the lock with the batch's. (Found by
// FuzzRecordOperations.)
func TestDirectGrantsOfOneRequestIDInTwoSessions(t *testing.T) {
	e, in, g := startGated(t)
	a, b, c := e.open(t, "admin", 0), e.open(t, "admin", 0), e.open(t, "admin", 0)
	la := a.mustAcquire(t, &wire.LockAcquireRequest{Name: "s", Mode: wire.LockShared, RequestID: "a0"})
	// c's acquire is written while a's equal acquire "x", a's release and b's
	// acquire "x" gather, in that order, for the next batch.
	g.armed.Store(true)
	pc := c.acquireAsync(&wire.LockAcquireRequest{Name: "s", Mode: wire.LockShared, RequestID: "c0"})
	g.waitHeld(t)
	pa := a.acquireAsync(&wire.LockAcquireRequest{Name: "s", Mode: wire.LockShared, RequestID: "x"})
	in.waitBatched(t, "s", 1)
	rel := a.callAsync(wire.SubjectLockRelease, &wire.LockReleaseRequest{Name: "s"}, &wire.LockReleaseResponse{})
	in.waitBatched(t, "s", 2)
	pb := b.acquireAsync(&wire.LockAcquireRequest{Name: "s", Mode: wire.LockShared, RequestID: "x"})
	in.waitBatched(t, "s", 3)
	close(g.until)

	if _, err := pc.wait(t, 10*time.Second); err != nil {
		t.Fatalf("c: %v", err)
	}
	if err := rel.wait(t); err != nil {
		t.Fatalf("release: %v", err)
	}
	l, err := pa.wait(t, 10*time.Second)
	wantGrantedTo(t, "a's equal acquire", a, l, err)
	if l.Token != la.Token {
		t.Fatalf("a's equal acquire: token %d, want the hold's %d", l.Token, la.Token)
	}
	l, err = pb.wait(t, 10*time.Second)
	wantGrantedTo(t, "b's acquire", b, l, err)
	rec := e.lockRecord(t, "s")
	if i, ok := rec.holder(b.id); !ok || rec.Holders[i].Token != l.Token {
		t.Fatalf("b was answered token %d; record %+v", l.Token, rec)
	}
}
