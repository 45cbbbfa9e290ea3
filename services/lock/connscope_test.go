package lock

import (
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestConnectionScopedAcquireNeedsTheSessionOnThatConnection: a session whose
// connection dropped (RECOVERING) re-connects and, before its resume lands (the SDK
// lets calls through as soon as NATS reconnects), asks for a connection-scoped lock.
// Granting it would tie the lock to a connection the session has left, and the lock
// service would release it on its own while the session believes it holds it: the
// acquire is refused until the session is ACTIVE on the connection it comes from.
func TestConnectionScopedAcquireNeedsTheSessionOnThatConnection(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{})
	a, b := e.open(t, "admin", 0), e.open(t, "admin", 0)

	a.nc.Close() // a's connection drops: the registry marks the session RECOVERING
	e.waitSessionState(t, a.id, wire.StateRecovering)

	// a reconnects (new connection) and acquires before resuming.
	a2 := &client{nc: e.srv.ClientConn(t), id: a.id, token: a.token}
	// RECOVERING: refused; a session-scoped acquire is granted.
	_, err := a2.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "cs", Scope: wire.ScopeConnection})
	wantCode(t, err, wire.CodeUnavailable)
	if _, err := a2.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "ss"}); err != nil {
		t.Fatalf("session-scoped acquire while RECOVERING: %v", err)
	}
	// Resumed on the new connection: granted, and kept.
	if err := a2.call(ctx10(t), wire.SubjectSessionResume, &wire.SessionResumeRequest{}, nil); err != nil {
		t.Fatalf("resume: %v", err)
	}
	var la *wire.Lock
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		la, err = a2.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "cs", Scope: wire.ScopeConnection})
		return err
	})
	_, err = b.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "cs", WaitMS: 300})
	wantCode(t, err, wire.CodeTimeout)
	if err := a2.release(ctx10(t), "cs", la.Token); err != nil {
		t.Fatalf("a's release of the lock it was granted: %v", err)
	}
}
