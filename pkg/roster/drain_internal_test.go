package roster

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

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
	ctx, cancel := context.WithCancel(context.Background())
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
