package client_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/roster"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// startWindowed runs Roster with the registry's reconnect window set, and its expiry
// grace when grace is not 0.
func startWindowed(t *testing.T, window, grace time.Duration) *roster.Process {
	t.Helper()
	return rostertest.Start(t, rostertest.WithConfig(func(c *roster.Config) {
		c.Registry.ReconnectWindow = window
		if grace > 0 {
			c.Registry.ExpiryGrace = grace
		}
	}))
}

// openPartitioned opens a session through a Partition; the partition is healed
// before the session's own cleanup closes it, which would otherwise wait for a
// frozen connection.
func openPartitioned(t *testing.T, p *roster.Process, opts client.Options) (*client.Session, *natstest.Partition) {
	t.Helper()
	px := natstest.StartPartition(t, p.ClientURL())
	s := open(t, px.URL(), opts)
	t.Cleanup(px.Close)
	return s, px
}

// wantDoubt fails unless l was reported lost because its session could not be
// confirmed in time.
func wantDoubt(t *testing.T, l *client.Lock) {
	t.Helper()
	err := l.Err()
	if !errors.Is(err, client.ErrLockLost) || !errors.Is(err, client.ErrUnavailable) || errors.Is(err, client.ErrSessionClosed) ||
		!strings.Contains(fmt.Sprint(err), "may have been released") {
		t.Errorf("lock %s: Err got %v, want ErrLockLost and ErrUnavailable saying its locks may have been released", l.Name(), err)
	}
}

// lockInBackground waits for s to be granted name, once it waits in the queue.
func lockInBackground(t *testing.T, s *client.Session, name string) <-chan error {
	t.Helper()
	ctx := ctxT(t)
	granted := make(chan error, 1)
	go func() {
		_, err := s.Lock(ctx, name, client.LockOptions{})
		granted <- err
	}()
	waitFor(t, func() error { return waiters(ctx, s, name, 1) })
	return granted
}

// wantLostBeforeGranted waits for granted and fails unless l was reported lost
// before it came.
func wantLostBeforeGranted(t *testing.T, l *client.Lock, granted <-chan error) {
	t.Helper()
	select {
	case err := <-granted:
		if err != nil {
			t.Fatalf("the other session's Lock: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the other session was never granted the lock")
	}
	select {
	case <-l.Lost():
	default:
		t.Fatal("another session was granted the lock while its partitioned holder still believed it held it")
	}
	wantDoubt(t, l)
}

// TestPartitionedHolderIsToldBeforeTheWindowReleasesItsLock: a holder whose
// connection goes silent (a partition: nothing either way, nothing closed on its
// side) learns that its session-scoped lock may be lost before another session is
// granted it. The server counts the connection lost half a window after the
// partition, and releases the lock a window later; the SDK reports it lost a window
// after its last request answered, which it sent before the partition. Before, Lost
// closed only once the client reached the server again: it went on believing it
// held a lock another session had been granted.
func TestPartitionedHolderIsToldBeforeTheWindowReleasesItsLock(t *testing.T) {
	const window = 2 * time.Second
	p := startWindowed(t, window, 0)
	holder, px := openPartitioned(t, p, client.Options{}) // timeout 60 s: the window is the bound
	l, err := holder.Lock(ctxT(t), "partition/window", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other := open(t, p.ClientURL(), client.Options{})
	granted := lockInBackground(t, other, "partition/window")

	px.Freeze()
	// Half a window between the holder's last answered request and the moment the
	// server can start counting: the room the SDK's timer has before the release.
	time.Sleep(window / 2)
	px.Sever()
	wantLostBeforeGranted(t, l, granted)
}

// TestPartitionedHolderIsToldBeforeTheTimeoutReleasesItsLock: the same with a
// session timeout far below the window, and a partition the server never sees as
// a closed connection: the session expires, the timeout is the bound. The server
// counts the timeout, plus its expiry grace (raised here to a second, the room the
// SDK's timer has), from the receipt of the holder's last request; the SDK from
// its sending.
func TestPartitionedHolderIsToldBeforeTheTimeoutReleasesItsLock(t *testing.T) {
	p := startWindowed(t, time.Minute, time.Second)
	holder, px := openPartitioned(t, p, client.Options{Timeout: time.Second})
	l, err := holder.Lock(ctxT(t), "partition/timeout", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other := open(t, p.ClientURL(), client.Options{})
	granted := lockInBackground(t, other, "partition/timeout")

	px.Freeze()
	wantLostBeforeGranted(t, l, granted)
}

// TestHeartbeatsKeepLocksOverManyWindows: while everything works, no lock is
// reported lost over five reconnect windows of a second, neither of a session with
// the default timeout (60 s: the window is the bound; its default keepalives every
// 5 s would leave it unconfirmed for most of each window) nor of one whose timeout
// is as short, nor connection-scoped ones; and the server still holds them all.
func TestHeartbeatsKeepLocksOverManyWindows(t *testing.T) {
	const window = time.Second
	p := startWindowed(t, window, 0)
	ctx := ctxT(t)
	var locks []*client.Lock
	for i, opts := range []client.Options{{}, {Timeout: time.Second}} {
		s := open(t, p.ClientURL(), opts)
		for _, scope := range []wire.LockScope{wire.ScopeSession, wire.ScopeConnection} {
			l, err := s.Lock(ctx, fmt.Sprintf("steady/%d/%s", i, scope), client.LockOptions{Scope: scope})
			if err != nil {
				t.Fatal(err)
			}
			locks = append(locks, l)
		}
	}
	time.Sleep(5 * window)
	other := open(t, p.ClientURL(), client.Options{})
	for _, l := range locks {
		select {
		case <-l.Lost():
			t.Errorf("lock %s was reported lost while everything worked: %v", l.Name(), l.Err())
		default:
		}
		if _, err := other.TryLock(ctxT(t), l.Name(), client.LockOptions{}); !errors.Is(err, client.ErrTimeout) {
			t.Errorf("lock %s: another session's TryLock got %v, want ErrTimeout (still held)", l.Name(), err)
		}
	}
}

// TestLocksReportedLostInDoubtAreReleasedOnceResumed: locks reported lost during a
// partition the server never saw (the session stayed ACTIVE, and holds them still)
// are released by their fencing tokens once the session is back, so that the
// others get them; a new Lock of the holder after the resume gets a new grant
// (not the old hold, which it would then release under the caller), and keeps it.
func TestLocksReportedLostInDoubtAreReleasedOnceResumed(t *testing.T) {
	const window = time.Second
	p := startWindowed(t, window, 0)
	holder, px := openPartitioned(t, p, client.Options{})
	states := make(chan client.StateChange, 16)
	holder.OnStateChange(func(ch client.StateChange) { states <- ch })
	ctx := ctxT(t)
	var held []*client.Lock
	for _, lc := range []struct {
		name  string
		scope wire.LockScope
	}{{"doubt/kept", wire.ScopeSession}, {"doubt/given", wire.ScopeSession}, {"doubt/conn", wire.ScopeConnection}} {
		l, err := holder.Lock(ctx, lc.name, client.LockOptions{Scope: lc.scope})
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
	}

	px.Freeze()
	for _, l := range held {
		select {
		case <-l.Lost():
			wantDoubt(t, l)
		case <-ctx.Done():
			t.Fatalf("lock %s was not reported lost during the partition", l.Name())
		}
	}
	// A grant handled while the session cannot be confirmed is lost at once.
	late := client.TrackLock(holder, wire.Lock{Name: "doubt/late", Mode: wire.LockExclusive, Scope: wire.ScopeSession, Token: 1 << 40})
	select {
	case <-late.Lost():
		wantDoubt(t, late)
	default:
		t.Error("a grant handled while the session could not be confirmed was not reported lost")
	}
	other := open(t, p.ClientURL(), client.Options{})
	for _, l := range held {
		if _, err := other.TryLock(ctx, l.Name(), client.LockOptions{}); !errors.Is(err, client.ErrTimeout) {
			t.Fatalf("lock %s during the partition: another session's TryLock got %v, want ErrTimeout (the server saw nothing)", l.Name(), err)
		}
	}

	px.Heal()
	for ch := nextState(t, states); ch.New != client.StateActive; ch = nextState(t, states) {
	}
	again, err := holder.Lock(ctx, "doubt/kept", client.LockOptions{})
	if err != nil {
		t.Fatalf("Lock after the resume: %v", err)
	}
	if again.Token() <= held[0].Token() {
		t.Errorf("Lock after the resume: token %d, want a new grant (above %d)", again.Token(), held[0].Token())
	}
	waitFor(t, func() error {
		if n := client.UnsureLocks(holder); n != 0 {
			return fmt.Errorf("%d holds reported lost not yet released", n)
		}
		return nil
	})
	for _, name := range []string{"doubt/given", "doubt/conn"} {
		if _, err := other.TryLock(ctx, name, client.LockOptions{}); err != nil {
			t.Errorf("lock %s after the resume: another session's TryLock got %v, want it released", name, err)
		}
	}
	if _, err := other.TryLock(ctx, "doubt/kept", client.LockOptions{}); !errors.Is(err, client.ErrTimeout) {
		t.Errorf("the holder's new grant: another session's TryLock got %v, want ErrTimeout (still held)", err)
	}
	select {
	case <-again.Lost():
		t.Errorf("the holder's new grant was reported lost: %v", again.Err())
	default:
	}
	if err := again.Unlock(ctx); err != nil {
		t.Errorf("Unlock of the new grant: %v", err)
	}
}

// TestLockAfterDoubtGetsANewGrant: a Lock of a name whose hold was reported lost
// while the session could not be confirmed, made once it is confirmed again but
// before the SDK released that hold, gets a new grant. The server would answer it
// with the old hold (the session holds it), which the pending release would then
// take away under the caller; the hold is released first. Here the holder sends no
// keepalives of its own, so nothing releases it in the background.
func TestLockAfterDoubtGetsANewGrant(t *testing.T) {
	p := rostertest.Start(t)
	holder := open(t, p.ClientURL(), client.Options{HeartbeatInterval: time.Hour})
	ctx := ctxT(t)
	old, err := holder.Lock(ctx, "doubt/again", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	client.DoubtNow(holder)
	select {
	case <-old.Lost():
		wantDoubt(t, old)
	default:
		t.Fatal("the lock was not reported lost when the bound passed")
	}
	if err := holder.Keepalive(ctx); err != nil {
		t.Fatal(err)
	}
	if client.UnsureLocks(holder) != 1 {
		t.Fatalf("%d holds reported lost pending release, want 1", client.UnsureLocks(holder))
	}
	again, err := holder.Lock(ctx, "doubt/again", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-again.Lost():
		t.Fatalf("the new Lock was reported lost: %v", again.Err())
	default:
	}
	if again.Token() <= old.Token() {
		t.Errorf("the new Lock: token %d, want a new grant (above %d)", again.Token(), old.Token())
	}
	other := open(t, p.ClientURL(), client.Options{})
	if _, err := other.TryLock(ctx, "doubt/again", client.LockOptions{}); !errors.Is(err, client.ErrTimeout) {
		t.Errorf("another session's TryLock got %v, want ErrTimeout (the new grant is held)", err)
	}
	if err := again.Unlock(ctx); err != nil {
		t.Errorf("Unlock of the new grant: %v", err)
	}
}
