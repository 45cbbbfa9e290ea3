package client_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/roster"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestKeepalivesGoOnWhileAHoldInDoubtIsReleased: once a session is confirmed
// again, the SDK releases the holds it reported lost while it could not confirm the
// session; a lock service slow to answer (storage failing over, say) must not hold
// up the keepalives meanwhile. The releases ran on the heartbeat goroutine, bounded
// only by the withdrawal timeout (5 s), where the next keepalive was due a third of
// the session's bound later: a session with a short timeout expired, and its locks
// went, because its lock service was slow. Here the lock service never answers, and
// the session must still send its keepalives while the release waits.
func TestKeepalivesGoOnWhileAHoldInDoubtIsReleased(t *testing.T) {
	t.Cleanup(client.SetAbandonTimeout(time.Minute)) // restored last, once the session is closed
	p := rostertest.Start(t, rostertest.WithConfig(func(c *roster.Config) {
		c.Services = []string{"auth", "registry", "messaging"}
	}))
	svc, err := p.Server().ConnectService()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	// A lock service that takes every release and answers none; and a look at the
	// keepalives the registry receives.
	var (
		mu         sync.Mutex
		released   bool
		keepalives int // of the session, since the release arrived
	)
	if _, err := svc.Subscribe(wire.SubjectLockRelease, func(*nats.Msg) {
		mu.Lock()
		released = true
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	holder := open(t, p.ClientURL(), client.Options{Timeout: time.Second})
	if _, err := svc.Subscribe(wire.SubjectSessionKeepalive, func(m *nats.Msg) {
		mu.Lock()
		if released && m.Header.Get(wire.HeaderSession) == holder.ID() {
			keepalives++
		}
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := svc.Flush(); err != nil {
		t.Fatal(err)
	}
	client.TrackLock(holder, wire.Lock{Name: "doubt/slow", Mode: wire.LockExclusive, Scope: wire.ScopeSession, Token: 1})
	client.DoubtNow(holder)
	if client.UnsureLocks(holder) != 1 {
		t.Fatalf("%d holds reported lost pending release, want 1", client.UnsureLocks(holder))
	}
	waitFor(t, func() error {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case !released:
			return fmt.Errorf("the hold's release has not been sent")
		case keepalives < 3:
			return fmt.Errorf("%d keepalives since the release was sent, want 3", keepalives)
		}
		return nil
	})
	if st := holder.State(); st != client.StateActive {
		t.Errorf("session state %s, want ACTIVE", st)
	}
}
