package lock

import (
	"context"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestConnectionScopedLockLostWhileNoInstanceRan: the holder of a
// connection-scoped lock loses its connection and resumes on a new one while no
// lock instance runs (a restart). An instance that comes back sees the session
// ACTIVE on another connection and the lock bound to the lost one: it releases the
// lock (the holder's SDK reported it lost at the disconnect).
func TestConnectionScopedLockLostWhileNoInstanceRan(t *testing.T) {
	e := newEnv(t)
	first := e.startLock(t, Config{})
	a, b := e.open(t, "admin", 0), e.open(t, "admin", 0)
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "cs", Scope: wire.ScopeConnection})

	first.stop() // the lock service restarts...
	a.nc.Close() // ...while a's connection drops
	e.waitSessionState(t, a.id, wire.StateRecovering)
	// a reconnects and resumes on a new connection.
	a2 := &client{nc: e.srv.ClientConn(t), id: a.id, token: a.token}
	if err := a2.call(ctx10(t), wire.SubjectSessionResume, &wire.SessionResumeRequest{}, nil); err != nil {
		t.Fatalf("resume: %v", err)
	}
	e.startLock(t, Config{})

	// The connection the lock was taken on is gone: b must get it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := b.acquire(ctx, &wire.LockAcquireRequest{Name: "cs", WaitMS: 5000})
	if err != nil {
		var list wire.LockListResponse
		_ = b.call(ctx10(t), wire.SubjectLockList, &wire.LockListRequest{}, &list)
		t.Fatalf("connection-scoped lock taken on a connection that closed is still held 5 s after the service came back: %v; locks: %s", err, jsonString(list.Locks))
	}
}

// TestLockOfASessionGoneFromTheBucket: a lock instance that starts after the record
// of a holder's session left the sessions bucket — its tombstone's retention ended,
// or its KV TTL fired, while no lock instance ran — releases the lock. Its view
// does not know the session, and nothing else would ever release it.
func TestLockOfASessionGoneFromTheBucket(t *testing.T) {
	e := newEnv(t)
	first := e.startLock(t, Config{})
	a, b := e.open(t, "admin", 0), e.open(t, "admin", 0)
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "g"})
	first.stop()
	// No registry either: one would write a tombstone for a live record it saw go.
	e.stopRegistry()
	kv, err := e.js.KeyValue(ctx10(t), sessions.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx10(t), a.id); err != nil {
		t.Fatal(err)
	}
	e.startLock(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.acquire(ctx, &wire.LockAcquireRequest{Name: "g", WaitMS: 5000}); err != nil {
		var list wire.LockListResponse
		_ = b.call(ctx10(t), wire.SubjectLockList, &wire.LockListRequest{}, &list)
		t.Fatalf("the lock of a session gone from the bucket is still held: %v; locks: %s", err, jsonString(list.Locks))
	}
}
