package lock

import (
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestSessionCloseReleases: a closed session's locks go to the next waiter at once,
// and its own waiting requests are answered session_closed.
func TestSessionCloseReleases(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{})
	a, b := e.open(t, "admin", 0), e.open(t, "admin", 0)
	la := a.mustAcquire(t, &wire.LockAcquireRequest{Name: "c"})
	b.mustAcquire(t, &wire.LockAcquireRequest{Name: "d"})
	pb := b.acquireAsync(&wire.LockAcquireRequest{Name: "c", WaitMS: 20000})
	pa := a.acquireAsync(&wire.LockAcquireRequest{Name: "d", WaitMS: 20000})
	e.waitQueued(t, "c", 1)
	e.waitQueued(t, "d", 1)

	closed := time.Now()
	if err := a.call(ctx10(t), wire.SubjectSessionClose, &wire.SessionCloseRequest{}, nil); err != nil {
		t.Fatalf("close session: %v", err)
	}
	lb, err := pb.wait(t, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if lb.Token <= la.Token {
		t.Fatalf("got token %d, want above %d", lb.Token, la.Token)
	}
	t.Logf("next waiter granted %v after the close", time.Since(closed))
	_, err = pa.wait(t, 5*time.Second)
	wantCode(t, err, wire.CodeSessionClosed)
	_, err = a.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "c"})
	wantCode(t, err, wire.CodeSessionClosed)
}

// TestSessionExpiryReleases: a holder that vanishes (no more requests) loses its
// session-scoped lock when its session expires.
func TestSessionExpiryReleases(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{})
	const timeout = time.Second
	a, b := e.open(t, "admin", timeout.Milliseconds()), e.open(t, "admin", 0)
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "x"})
	lastActivity := time.Now()
	pb := b.acquireAsync(&wire.LockAcquireRequest{Name: "x", WaitMS: 20000})
	lb, err := pb.wait(t, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("session timeout %v: next waiter granted %v after the holder's last request", timeout, time.Since(lastActivity))
	if lb.Session != b.id {
		t.Fatalf("got holder %s, want %s", lb.Session, b.id)
	}
	// The lock went to the waiter because the holder's session expired, and no
	// sooner. How soon is a figure, logged above: the registry's tests hold the
	// expiry to its timeout + 1 s and integration/ measures it across failures
	// (TestExpiryAcrossLeaderChange). A bound here, on when this test saw the
	// grant, failed on a loaded machine (2.5 s).
	rec := e.sessionRecord(t, a.id)
	if rec.ClosedAt == nil || rec.CloseReason != wire.ClosedExpired {
		t.Fatalf("holder's session: got %s (%s), want closed expired", rec.State, rec.CloseReason)
	}
	if lb.GrantedAt.Before(rec.ClosedAt.Truncate(time.Millisecond)) {
		t.Errorf("granted at %v, before the holder's session closed at %v", lb.GrantedAt, rec.ClosedAt)
	}
}

// TestConnectionLossReleasesConnectionScope: when the holder's connection drops,
// its connection-scoped lock goes to the next waiter within a second, while its
// session-scoped lock stays held for the session to resume.
func TestConnectionLossReleasesConnectionScope(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{})
	a, b := e.open(t, "admin", 0), e.open(t, "admin", 0)
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "conn", Scope: wire.ScopeConnection})
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "sess"})
	pc := b.acquireAsync(&wire.LockAcquireRequest{Name: "conn", WaitMS: 20000})
	e.waitQueued(t, "conn", 1)

	lost := time.Now()
	a.nc.Close()
	l, err := pc.wait(t, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("connection-scoped lock granted to the next waiter %v after the holder's connection closed", time.Since(lost))
	if l.Session != b.id {
		t.Fatalf("got holder %s, want %s", l.Session, b.id)
	}
	// Because the registry counted the connection lost, and no sooner (how soon:
	// the figure logged above, not a bound a loaded machine can keep).
	if rec := e.sessionRecord(t, a.id); rec.RecoveringSince == nil || l.GrantedAt.Before(rec.RecoveringSince.Truncate(time.Millisecond)) {
		t.Errorf("granted at %v; the holder's session went RECOVERING at %v: want the grant after", l.GrantedAt, rec.RecoveringSince)
	}
	_, err = b.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "sess"})
	wantCode(t, err, wire.CodeTimeout)
}

// TestWaiterOutlivesItsInstance: the instance that took a waiting request dies;
// another instance grants it on release, or expires it after its deadline + grace,
// and the held request is answered either way.
func TestWaiterOutlivesItsInstance(t *testing.T) {
	e := newEnv(t)
	first := e.startLock(t, Config{ExpiryGrace: 200 * time.Millisecond})
	a, b, c := e.open(t, "admin", 0), e.open(t, "admin", 0), e.open(t, "admin", 0)
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "o"})
	pb := b.acquireAsync(&wire.LockAcquireRequest{Name: "o", WaitMS: 20000})
	pc := c.acquireAsync(&wire.LockAcquireRequest{Name: "o", WaitMS: 300})
	e.waitQueued(t, "o", 2)
	first.kill()
	e.startLock(t, Config{ExpiryGrace: 200 * time.Millisecond})

	_, err := pc.wait(t, 10*time.Second)
	wantCode(t, err, wire.CodeTimeout)
	if pb.completed() {
		t.Fatal("b answered before the lock was released")
	}
	a.mustRelease(t, "o")
	l, err := pb.wait(t, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if l.Session != b.id {
		t.Fatalf("got holder %s, want %s", l.Session, b.id)
	}
}

// slowTracerProvider takes its time to hand out a tracer, as a provider behind a
// lock of its own may: New must be done with what its background work uses
// before that work starts.
type slowTracerProvider struct {
	noop.TracerProvider
	delay time.Duration
}

func (p slowTracerProvider) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	time.Sleep(p.delay)
	return p.TracerProvider.Tracer(name, opts...)
}

// TestWaiterExpiringWhileAnInstanceStarts: a waiter of a dead instance whose
// deadline passes while another instance is still starting is answered by it. The
// answer's span came from the endpoint service, which New had not created yet:
// the expiry's batch dereferenced a nil *endpoint.Service and crashed the process.
func TestWaiterExpiringWhileAnInstanceStarts(t *testing.T) {
	e := newEnv(t)
	first := e.startLock(t, Config{ExpiryGrace: 200 * time.Millisecond})
	a, c := e.open(t, "admin", 0), e.open(t, "admin", 0)
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "starting"})
	pc := c.acquireAsync(&wire.LockAcquireRequest{Name: "starting", WaitMS: 300})
	e.waitQueued(t, "starting", 1)
	first.kill()
	// The waiter is due 300 ms + 200 ms after it queued: within each tracer's delay.
	e.startLockTraced(t, Config{ExpiryGrace: 200 * time.Millisecond}, slowTracerProvider{delay: time.Second})

	_, err := pc.wait(t, 10*time.Second)
	wantCode(t, err, wire.CodeTimeout)
}
