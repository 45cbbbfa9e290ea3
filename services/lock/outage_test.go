package lock

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// refuseWrites makes the locks stream refuse every record write (a value larger
// than a few bytes) until the returned function is called: a stand-in for a
// storage outage such as a stream leader election, during which writes fail.
func (e *env) refuseWrites(t *testing.T) (restore func()) {
	t.Helper()
	ctx := context.Background()
	st, err := e.js.Stream(ctx, "KV_"+Bucket)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	small := cfg
	small.MaxMsgSize = 8
	if _, err := e.js.UpdateStream(ctx, small); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReleaseRetriedAfterStorageOutage: a session closes while the lock storage
// refuses writes, so the release of its lock fails on every instance. Once the
// storage is back, the lock must still be released and the next waiter granted:
// nothing else will happen to the record to bring it up again.
func TestReleaseRetriedAfterStorageOutage(t *testing.T) {
	e := newEnv(t)
	in := e.startLock(t, Config{})
	a, b := e.open(t, "admin", 0), e.open(t, "admin", 0)
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "o"})
	pb := b.acquireAsync(&wire.LockAcquireRequest{Name: "o", WaitMS: 30000})
	e.waitQueued(t, "o", 1)

	restore := e.refuseWrites(t)
	if err := a.call(ctx10(t), wire.SubjectSessionClose, &wire.SessionCloseRequest{}, nil); err != nil {
		t.Fatalf("close session: %v", err)
	}
	e.waitSessionState(t, a.id, wire.StateClosed)
	// The instance tries to release a's lock when it learns of the close, and
	// fails. Were the storage back before that attempt, the release would go
	// through at once and the test pass without the retry under test.
	in.waitLogged(t, "lock storage failed", 1)
	if pb.completed() {
		t.Fatal("b was answered while the storage refused writes")
	}
	restore()
	if _, err := pb.wait(t, 15*time.Second); err != nil {
		t.Fatalf("after the storage came back the closed session's lock still blocks b: %v", err)
	}
}

// TestExpiryRetriedAfterStorageOutage: a waiter's deadline passes while the lock
// storage refuses writes; once it is back, the waiter must still be removed.
func TestExpiryRetriedAfterStorageOutage(t *testing.T) {
	e := newEnv(t)
	in := e.startLock(t, Config{})
	a, b := e.open(t, "admin", 0), e.open(t, "admin", 0)
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "o"})
	// The deadline must come after the storage refuses writes: 2 s leaves a slow
	// stream update room.
	pb := b.acquireAsync(&wire.LockAcquireRequest{Name: "o", WaitMS: 2000})
	e.waitQueued(t, "o", 1)
	restore := e.refuseWrites(t)
	if q := e.waiting(t, "o"); len(q) != 1 {
		t.Fatalf("b was removed before the storage refused writes (its deadline passed first): waiters %v", q)
	}
	// At b's deadline the instance that took its request tries to remove it, and
	// fails. Were the storage back before that attempt, the removal would go
	// through at once and the test pass without the retry under test.
	in.waitLogged(t, "lock storage failed", 1)
	if pb.completed() {
		t.Fatal("b was answered while the storage refused writes")
	}
	restore()
	natstest.CheckFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		if q := e.waiting(t, "o"); len(q) != 0 {
			return fmt.Errorf("after the storage came back the expired waiter is still queued: %v", q)
		}
		return nil
	})
	_, err := pb.wait(t, 5*time.Second)
	wantCode(t, err, wire.CodeTimeout)
}
