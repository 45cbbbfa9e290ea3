package roster

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// fakeClock is a clock that moves only when the test advances it.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []fakeTimer
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.timers = append(c.timers, fakeTimer{at: c.now.Add(d), ch: ch})
	return ch
}

// pending returns how many After channels wait for the clock to move.
func (c *fakeClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, t := range c.timers {
		if t.at.After(c.now) {
			kept = append(kept, t)
			continue
		}
		t.ch <- c.now
	}
	c.timers = kept
}

// TestStopDrainsAServiceWithinOneDrainTimeout: stopping a service waits for its
// requests in flight (the service's own stop, bounded by DrainTimeout) and then
// drains its connection. The drain waited a DrainTimeout of its own, so a stop took
// up to twice the timeout per service. Both now share one deadline, counted from the
// service's stop: here the service's stop takes the whole timeout (the clock is
// advanced by it meanwhile) and the connection cannot drain (a subscription's
// handler holds it), so Stop closes the connection without waiting any longer. With
// a fresh timeout for the drain it waited for a clock that does not move again.
func TestStopDrainsAServiceWithinOneDrainTimeout(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := srv.ServiceConn(t)
	held, release := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(release) })
	if _, err := nc.Subscribe("stoptest.hold", func(*nats.Msg) {
		close(held)
		<-release
	}); err != nil {
		t.Fatal(err)
	}
	if err := srv.ServiceConn(t).Publish("stoptest.hold", nil); err != nil {
		t.Fatal(err)
	}
	<-held

	const timeout = 10 * time.Second
	clk := &fakeClock{now: time.Unix(1_000_000, 0)}
	p := &Process{cfg: Config{DrainTimeout: timeout}, log: natstest.Logger(t), done: make(chan struct{}), clock: clk}
	ctx, cancel := context.WithCancelCause(context.Background())
	r := &running{name: "stoptest", nc: nc, cancel: cancel, done: make(chan error, 1)}
	p.running = append(p.running, r)
	go func() {
		<-ctx.Done()
		clk.Advance(timeout) // the service's stop takes the whole drain timeout
		r.done <- nil
	}()

	stopped := make(chan error, 1)
	go func() { stopped <- p.Stop() }()
	select {
	case err := <-stopped:
		if err == nil || !strings.Contains(err.Error(), "not drained") {
			t.Errorf("Stop: %v, want the connection reported not drained", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Stop still waits for the connection to drain after the service's stop took the whole drain timeout")
	}
	if !nc.IsClosed() {
		t.Errorf("connection %v after Stop, want closed", nc.Status())
	}
}

// TestServicesStopTogetherWithinOneDrainTimeout: the services of a process stop
// together, by one deadline, DrainTimeout from the stop: here each holds a request
// in flight until the deadline it was given. They used to stop one after the
// other, each with a DrainTimeout of its own counted from its own stop: up to four
// times the timeout, past a pod's grace period. The auth service, which the
// registry's requests in flight call (open, change of principal), still stops
// only once the registry has — by the same deadline.
func TestServicesStopTogetherWithinOneDrainTimeout(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	const timeout = 10 * time.Second
	start := time.Unix(1_000_000, 0)
	clk := &fakeClock{now: start}
	p := &Process{cfg: Config{DrainTimeout: timeout}, log: natstest.Logger(t), done: make(chan struct{}), clock: clk}
	var mu sync.Mutex
	var events []string
	given := map[string]time.Time{}
	event := func(e string) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, e)
	}
	for _, name := range []string{"auth", "registry", "lock", "messaging"} { // the order Start runs them in
		ctx, cancel := context.WithCancelCause(context.Background())
		r := &running{name: name, nc: srv.ServiceConn(t), cancel: cancel, done: make(chan error, 1)}
		p.running = append(p.running, r)
		go func() {
			<-ctx.Done()
			event("stop " + name)
			// A request in flight until the stop gives up on it: at the deadline the
			// process gave, or, given none, a DrainTimeout from now (endpoint.StopContext).
			by, ok := endpoint.StopDeadline(ctx)
			if !ok {
				by = clk.Now().Add(timeout)
			}
			mu.Lock()
			given[name] = by
			mu.Unlock()
			<-clk.After(by.Sub(clk.Now()))
			event("stopped " + name)
			r.done <- nil
		}()
	}
	stopped := make(chan error, 1)
	go func() { stopped <- p.Stop() }()

	// The three services nothing here calls stop at once, each waiting for its
	// request in flight, before the clock moves.
	natstest.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		if n := clk.pending(); n != 3 {
			mu.Lock()
			defer mu.Unlock()
			return fmt.Errorf("%d services wait for their requests in flight (%v), want registry, lock and messaging at once", n, events)
		}
		return nil
	})
	mu.Lock()
	if slices.Contains(events, "stop auth") {
		t.Errorf("auth stops while the registry, whose requests call it, still runs: %v", events)
	}
	mu.Unlock()

	clk.Advance(timeout) // the one drain timeout; the clock moves no more
	for done := false; !done; {
		select {
		case err := <-stopped:
			// The requests took the whole timeout: the connections may be left
			// no time to drain, and are closed.
			if err != nil && !strings.Contains(err.Error(), "not drained") {
				t.Fatalf("Stop: %v", err)
			}
			done = true
		case <-time.After(time.Millisecond):
			if n := clk.pending(); n > 0 {
				t.Fatalf("%d waits on the clock after one drain timeout has passed: the stop takes longer", n)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, name := range []string{"auth", "registry", "lock", "messaging"} {
		if by := given[name]; !by.Equal(start.Add(timeout)) {
			t.Errorf("%s was given %v to stop by, want the process's one deadline, the stop + %v", name, by.Sub(start), timeout)
		}
	}
	if i, j := slices.Index(events, "stopped registry"), slices.Index(events, "stop auth"); i < 0 || j < i {
		t.Errorf("auth stopped before the registry, whose requests call it, had: %v", events)
	}
	for _, r := range p.running {
		if !r.nc.IsClosed() {
			t.Errorf("%s: connection %v after Stop, want closed", r.name, r.nc.Status())
		}
	}
}
