package lock

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestReissueInAnotherModeAtTheHeadIsGranted: a request waiting for the lock
// exclusively at the head of the queue, behind shared holders, is re-issued with
// its request id asking for it shared. The re-issue takes over its place, at the
// head, and is compatible with the holders: it must be granted at once, and the
// shared request behind it with it — not left waiting for a release that it does not
// need, holding back the queue, until its wait runs out.
func TestReissueInAnotherModeAtTheHeadIsGranted(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{})
	a, b, c := e.open(t, "admin", 0), e.open(t, "admin", 0), e.open(t, "admin", 0)
	la := a.mustAcquire(t, &wire.LockAcquireRequest{Name: "m", Mode: wire.LockShared})

	// b's first copy is taken over by its re-issue and never answered: it is given
	// up here, as a client gives up a request it re-issues.
	ctx, giveUp := context.WithCancel(context.Background())
	firstDone := make(chan struct{})
	go func() {
		defer close(firstDone)
		_, _ = b.acquire(ctx, &wire.LockAcquireRequest{Name: "m", WaitMS: 20000, RequestID: "b-1"})
	}()
	t.Cleanup(func() { giveUp(); <-firstDone })
	e.waitQueued(t, "m", 1)
	pc := c.acquireAsync(&wire.LockAcquireRequest{Name: "m", Mode: wire.LockShared, WaitMS: 20000, RequestID: "c-1"})
	e.waitQueued(t, "m", 2)

	lb, err := b.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "m", Mode: wire.LockShared, WaitMS: 1000, RequestID: "b-1"})
	if err != nil {
		t.Fatalf("re-issue asking for the lock shared beside a shared holder, at the head of the queue: got %v, want the lock", err)
	}
	if lb.Mode != wire.LockShared || lb.Token <= la.Token {
		t.Fatalf("got lock %+v, want shared with a token above %d", lb, la.Token)
	}
	lc, err := pc.wait(t, 5*time.Second)
	if err != nil {
		t.Fatalf("the shared request behind the re-issue: got %v, want the lock", err)
	}
	if lc.Token != lb.Token {
		t.Fatalf("got token %d for the shared request granted with the re-issue, want %d", lc.Token, lb.Token)
	}
	e.waitQueued(t, "m", 0)
}

// TestMaxHoldersOverTheWire: with MaxHolders 2 a third shared request waits and is
// granted when a holder releases.
func TestMaxHoldersOverTheWire(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{MaxHolders: 2})
	a, b, c := e.open(t, "admin", 0), e.open(t, "admin", 0), e.open(t, "admin", 0)
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "m", Mode: wire.LockShared})
	b.mustAcquire(t, &wire.LockAcquireRequest{Name: "m", Mode: wire.LockShared})
	pc := c.acquireAsync(&wire.LockAcquireRequest{Name: "m", Mode: wire.LockShared, WaitMS: 20000})
	e.waitQueued(t, "m", 1)
	a.mustRelease(t, "m")
	if _, err := pc.wait(t, 5*time.Second); err != nil {
		t.Fatalf("the third shared request after a release: got %v, want the lock", err)
	}
	e.waitQueued(t, "m", 0)
}

// TestRecordBytesAreBounded: a request that would grow a lock's record past what one
// write may carry is refused limit_exceeded, and the lock goes on working: the
// holder releases, the first waiter gets it. The counts (MaxWaiters, MaxHolders)
// bound the record only for requests of typical size; unbounded in bytes, the
// write failed and every request batched with it was answered unavailable.
func TestRecordBytesAreBounded(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{MaxRecordBytes: 2048})
	holder := e.open(t, "admin", 0)
	holder.mustAcquire(t, &wire.LockAcquireRequest{Name: "r"})
	var waiting []*pending
	var err error
	for i := 0; ; i++ {
		if i == 20 {
			t.Fatal("20 waiters fit in 2 KiB: the bound is not applied")
		}
		p := e.open(t, "admin", 0).acquireAsync(&wire.LockAcquireRequest{Name: "r", WaitMS: 20000,
			RequestID: strings.Repeat(strconv.Itoa(i), wire.MaxRequestIDLength)[:wire.MaxRequestIDLength]})
		queued := false
		natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			if p.completed() {
				return nil
			}
			if queued = len(e.waiting(t, "r")) == len(waiting)+1; !queued {
				return errors.New("neither refused nor queued yet")
			}
			return nil
		})
		if !queued {
			err = p.err
			break
		}
		waiting = append(waiting, p)
	}
	wantCode(t, err, wire.CodeLimitExceeded)
	if len(waiting) == 0 {
		t.Fatal("not even one waiter fit")
	}
	holder.mustRelease(t, "r")
	if _, err := waiting[0].wait(t, 5*time.Second); err != nil {
		t.Fatalf("the first waiter after the release: got %v, want the lock", err)
	}
}
