package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/roster"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
	"github.com/seed-3c836eab/roster/services/lock"
)

type allowAll struct{}

func (allowAll) Allowed([]string, policy.Permission, string) bool { return true }

// startLockInstance runs a lock service instance on its own service connection to
// p's server; kill drops its connection (a crash) and stops what is left.
func startLockInstance(t *testing.T, p *roster.Process, cfg lock.Config) (kill func()) {
	t.Helper()
	nc, err := p.Server().ConnectService()
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithCancel(context.Background())
	view, err := sessions.Watch(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	s, err := lock.New(nc, cfg, view, allowAll{}, noop.NewTracerProvider(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	kill = func() {
		if stopped {
			return
		}
		stopped = true
		nc.Close()
		cancel()
		<-done
		view.Close()
	}
	t.Cleanup(kill)
	return kill
}

// TestWeakenedScopeIsReportedLost: a session holding a lock with session scope
// acquires it again with connection scope. The server holds it with the weaker
// scope (connection), and so does the SDK's one Lock value: when the connection
// drops and the server gives the lock to another session, Lost() fires.
func TestWeakenedScopeIsReportedLost(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	px := natstest.StartPartition(t, p.ClientURL())
	a := open(t, px.URL(), client.Options{})
	b := open(t, p.ClientURL(), client.Options{})
	ctx := ctxT(t)

	l1, err := a.Lock(ctx, "w", client.LockOptions{Scope: wire.ScopeSession})
	if err != nil {
		t.Fatal(err)
	}
	l2, err := a.Lock(ctx, "w", client.LockOptions{Scope: wire.ScopeConnection})
	if err != nil {
		t.Fatal(err)
	}
	list, err := b.ListLocks(ctx, wire.LockListRequest{Prefix: "w"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("server holds w with scope %s; SDK Lock says %s / %s (same value: %v)",
		list.Locks[0].Holders[0].Scope, l1.Scope(), l2.Scope(), l1 == l2)
	if l2.Scope() != list.Locks[0].Holders[0].Scope {
		t.Errorf("Lock.Scope() = %s, server holds the lock with scope %s", l2.Scope(), list.Locks[0].Holders[0].Scope)
	}

	px.Close() // a's connection drops
	lb, err := b.Lock(ctx, "w", client.LockOptions{})
	if err != nil {
		t.Fatalf("b: %v", err)
	}
	t.Logf("b was granted w (token %d) after a's connection dropped", lb.Token())
	select {
	case <-l2.Lost():
	case <-time.After(2 * time.Second):
		t.Fatalf("a's lock w was released and taken by b, but a's Lock.Lost() never fired (Err=%v)", l2.Err())
	}
}

// TestCancelledLockLeavesNoWaiter: Lock's context ends just after the acquire was
// sent, with two lock instances, so that the cancel may be applied before the
// acquire has queued. Whatever the order, nothing of the request stays queued to be
// granted later to a session that gave up on it. (300 tries, with the
// cancel sent after 0 to 1.75 ms.)
func TestCancelledLockLeavesNoWaiter(t *testing.T) {
	p := rostertest.Start(t, rostertest.WithConfig(func(c *roster.Config) { c.Services = []string{"auth", "registry"} }))
	startLockInstance(t, p, lock.Config{})
	startLockInstance(t, p, lock.Config{})
	holder := open(t, p.ClientURL(), client.Options{})
	s := open(t, p.ClientURL(), client.Options{})
	other := open(t, p.ClientURL(), client.Options{})
	ctx := ctxT(t)
	hl, err := holder.Lock(ctx, "g", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := p.Server().ConnectService()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, lock.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	// ghosts returns the ids of s's requests queued on g (from the bucket), and
	// which of them the record also lists as answered for good.
	ghosts := func() (queued, done []string) {
		ent, err := kv.Get(ctx, lock.KeyFor("g"))
		if err != nil {
			t.Fatal(err)
		}
		var rec struct {
			Waiters []struct{ ID, Session string } `json:"waiters"`
			Done    []struct{ ID string }          `json:"done"`
		}
		if err := json.Unmarshal(ent.Value(), &rec); err != nil {
			t.Fatal(err)
		}
		for _, w := range rec.Waiters {
			if w.Session == s.ID() {
				queued = append(queued, w.ID)
				for _, d := range rec.Done {
					if d.ID == w.ID {
						done = append(done, w.ID)
					}
				}
			}
		}
		return queued, done
	}

	var queued, done []string
	for i := 0; i < 300 && len(queued) == 0; i++ {
		lctx, cancel := context.WithCancel(context.Background())
		go func() { time.Sleep(time.Duration(i%8) * 250 * time.Microsecond); cancel() }()
		if l, err := s.Lock(lctx, "g", client.LockOptions{}); err == nil {
			t.Fatalf("granted %v while held", l.Token())
		}
		cancel()
		// Lock returned an error after abandoning its request — waiting for the
		// withdrawal's answer withdrawWait at most, which a loaded machine can
		// exceed: the check is of what the withdrawal left, once it is through.
		client.WaitLockWork(s)
		queued, done = ghosts()
	}
	if len(queued) > 0 {
		t.Fatalf("a request s gave up on is still queued: %v (also recorded as done: %v)", queued, done)
	}
	if err := hl.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := other.TryLock(ctx, "g", client.LockOptions{}); err != nil {
		list, _ := other.ListLocks(ctx, wire.LockListRequest{Prefix: "g"})
		t.Fatalf("g was released and every Lock of s gave up, yet g is not free: %v; locks %+v", err, list.Locks)
	}
}

// TestGivingUpNeverReleasesAnotherCallsLock: while one caller of a session gives
// up on Lock again and again, another caller of the same session takes the lock:
// the withdrawals never release the lock the second caller holds.
func TestGivingUpNeverReleasesAnotherCallsLock(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	s := open(t, p.ClientURL(), client.Options{})
	other := open(t, p.ClientURL(), client.Options{})

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // a caller of s that gives up at once, again and again
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, _ = s.Lock(ctx, "k", client.LockOptions{})
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	deadline := time.Now().Add(3 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		l, err := s.Lock(ctx, "k", client.LockOptions{})
		if err != nil {
			cancel()
			continue
		}
		// s's caller holds k: no other session may take it.
		time.Sleep(5 * time.Millisecond)
		if ol, err := other.TryLock(ctx, "k", client.LockOptions{}); err == nil {
			cancel()
			t.Fatalf("iteration %d: s's Lock returned k (token %d, Lost: %v) and s never unlocked it, yet another session took k (token %d)",
				i, l.Token(), l.Err(), ol.Token())
		}
		_ = l.Unlock(ctx)
		cancel()
	}
}

// TestLockAsksAgainWhenNoAnswerComes: the lock instance that took a Lock request
// dies before storing it (a queue-group member that takes the request and never
// answers stands for it). Lock bounds each request (here at 1 s instead of 65 s) and
// asks again with the same request id: a Lock with no deadline is answered once the
// lock is free and a healthy instance serves it.
func TestLockAsksAgainWhenNoAnswerComes(t *testing.T) {
	defer client.SetMaxHeldRequest(time.Second)()
	p := rostertest.Start(t, rostertest.WithConfig(func(c *roster.Config) { c.Services = []string{"auth", "registry"} }))
	killFirst := startLockInstance(t, p, lock.Config{})
	holder := open(t, p.ClientURL(), client.Options{})
	hl, err := holder.Lock(ctxT(t), "h", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := open(t, p.ClientURL(), client.Options{})

	// The only lock instance takes the next acquire and dies before storing it.
	killFirst()
	dead, err := p.Server().ConnectService()
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	taken := make(chan struct{}, 1)
	sub, err := dead.QueueSubscribe(wire.SubjectLockAcquire, "q", func(*nats.Msg) {
		select {
		case taken <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = dead.Flush()

	ctx, cancel := context.WithCancel(context.Background()) // wait until granted
	defer cancel()
	type result struct {
		l   *client.Lock
		err error
	}
	done := make(chan result, 1)
	go func() {
		l, err := s.Lock(ctx, "h", client.LockOptions{})
		done <- result{l, err}
	}()
	// Gone before it took the request, the dead instance would leave Lock nothing
	// to ask again about.
	select {
	case <-taken:
	case <-time.After(10 * time.Second):
		t.Fatal("the dead instance was not asked within 10 s")
	}
	_ = sub.Unsubscribe()
	_ = dead.Flush()

	// A healthy instance takes over; the holder releases.
	startLockInstance(t, p, lock.Config{})
	if err := hl.Unlock(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	released := time.Now()

	select {
	case r := <-done:
		t.Logf("Lock answered %v after the release: lock=%v err=%v", time.Since(released), r.l != nil, r.err)
		if r.err != nil || r.l == nil {
			t.Fatalf("Lock (no deadline) was answered without the lock once it was free: %v", r.err)
		}
	case <-time.After(20 * time.Second):
		cancel()
		<-done
		t.Fatalf("Lock (no deadline) still unanswered 20 s after the lock became free, with a bound of 1 s on one request")
	}
}

// TestLockRefusalEndsLock: a refusal that no retry can change (no permission for the
// name) ends Lock at once with that error, rather than asking again.
func TestLockRefusalEndsLock(t *testing.T) {
	t.Parallel()
	p := startSecured(t)
	guest := open(t, p.ClientURL(), client.Options{}) // guests may not take locks
	done := make(chan error, 1)
	go func() {
		_, err := guest.Lock(context.Background(), "orders/1", client.LockOptions{})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, client.ErrForbidden) {
			t.Fatalf("got %v, want ErrForbidden", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Lock without ACQUIRE_LOCK still running after 10 s: it keeps asking again")
	}
}
