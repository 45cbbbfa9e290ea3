package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/roster"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
	"github.com/seed-3c836eab/roster/services/lock"
)

// TestConnectionScopedLockReportedLostOnAResumeHereIsReleased: the registry counts
// the session's connection lost while it works (its server taken for gone: the
// write a registry instance makes then is made here), the SDK's keepalive hears
// RECOVERING, reports the connection-scoped lock lost and resumes the session on
// the same connection. No lock instance saw the session RECOVERING (none ran; or
// its release failed, and its retry saw the session ACTIVE again): the session is
// ACTIVE on the connection the hold was taken on, and the lock service keeps the
// hold. Reported lost, nobody used or released it, and every other session waited
// for it until the session ended. The SDK now releases it by its token once the
// session is confirmed, as it does the holds reported lost in doubt.
func TestConnectionScopedLockReportedLostOnAResumeHereIsReleased(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t, rostertest.WithConfig(func(c *roster.Config) { c.Services = []string{"auth", "registry"} }))
	kill := startLockInstance(t, p, lock.Config{})
	s := open(t, p.ClientURL(), client.Options{HeartbeatInterval: 50 * time.Millisecond})
	l, err := s.Lock(ctxT(t), "c/x", client.LockOptions{Scope: wire.ScopeConnection})
	if err != nil {
		t.Fatal(err)
	}
	kill()

	waitResumed := countConnectionLost(t, p, s)
	select {
	case <-l.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("the connection-scoped lock was not reported lost when the registry counted its connection lost")
	}
	waitResumed()

	startLockInstance(t, p, lock.Config{})
	other := open(t, p.ClientURL(), client.Options{})
	lctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := other.Lock(lctx, "c/x", client.LockOptions{}); err != nil {
		t.Fatalf("the lock reported lost to %s was not given to another session: %v", s.ID(), err)
	}
}

// countConnectionLost writes s's record RECOVERING, as a registry instance does when
// it counts the session's connection lost while the connection works, and returns a
// function that waits until s has been resumed: ACTIVE again on that connection.
func countConnectionLost(t *testing.T, p *roster.Process, s *client.Session) (waitResumed func()) {
	t.Helper()
	nc, err := p.Server().ConnectService()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	kv, err := js.KeyValue(ctx, sessions.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	kve, err := kv.Get(ctx, s.ID())
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(kve.Value(), &rec); err != nil {
		t.Fatal(err)
	}
	conn := rec["connection"]
	rec["state"], rec["recovering_since"] = wire.StateRecovering, time.Now().UTC()
	data, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(ctx, s.ID(), data, kve.Revision()); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		waitFor(t, func() error {
			kve, err := kv.Get(ctx, s.ID())
			if err != nil {
				return err
			}
			var now map[string]any
			if err := json.Unmarshal(kve.Value(), &now); err != nil {
				return err
			}
			if now["state"] != string(wire.StateActive) || now["connection"] != conn {
				return fmt.Errorf("session %s is %v on %v, want ACTIVE on %v", s.ID(), now["state"], now["connection"], conn)
			}
			return nil
		})
	}
}

// TestConnectionScopedGrantHandledWhileCountedLostIsReleased: the grant of a
// connection-scoped lock whose reply the SDK handles once a keepalive has heard
// RECOVERING (connectionCountedLost) is reported lost at once. The lock service may
// keep it as the holds connectionCountedLost reported lost (no instance saw the
// session RECOVERING) once the session is resumed on that connection, and those are
// released by their tokens; this one was not, and every other session waited for
// the lock until the session ended. It is now released as they are.
func TestConnectionScopedGrantHandledWhileCountedLostIsReleased(t *testing.T) {
	p := rostertest.Start(t, rostertest.WithConfig(func(c *roster.Config) { c.Services = []string{"auth", "registry"} }))
	kill := startLockInstance(t, p, lock.Config{})
	s := open(t, p.ClientURL(), client.Options{HeartbeatInterval: 50 * time.Millisecond})
	// Granted on the session's connection, as a Lock call's request is; the SDK
	// handles the reply below, once the session is RECOVERING.
	var grant wire.LockAcquireResponse
	hdr := nats.Header{wire.HeaderSession: {s.ID()}, wire.HeaderToken: {s.Token()}}
	if err := wire.Call(ctxT(t), s.Client().Conn(), wire.SubjectLockAcquire, hdr, &wire.LockAcquireRequest{Name: "c/late", Scope: wire.ScopeConnection}, &grant); err != nil {
		t.Fatal(err)
	}
	if grant.Lock == nil {
		t.Fatal("acquire reply without a lock")
	}
	kill()

	late := make(chan *client.Lock, 1)
	var once sync.Once
	remove := s.OnStateChange(func(c client.StateChange) {
		if c.New == client.StateRecovering {
			once.Do(func() { late <- client.TrackLock(s, *grant.Lock) })
		}
	})
	defer remove()
	waitResumed := countConnectionLost(t, p, s)
	var l *client.Lock
	select {
	case l = <-late:
	case <-time.After(10 * time.Second):
		t.Fatal("the SDK did not move the session to RECOVERING when the registry counted its connection lost")
	}
	select {
	case <-l.Lost():
	default:
		t.Fatal("the connection-scoped grant handled while the session was RECOVERING was not reported lost")
	}
	waitResumed()

	startLockInstance(t, p, lock.Config{})
	other := open(t, p.ClientURL(), client.Options{})
	lctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := other.Lock(lctx, "c/late", client.LockOptions{}); err != nil {
		t.Fatalf("the lock granted to %s and reported lost while it was RECOVERING was not given to another session: %v", s.ID(), err)
	}
}
