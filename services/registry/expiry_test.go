package registry

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

const testTimeout = 2 * time.Second

// keepaliveTimes sends a keepalive and returns when it was sent and when the reply
// came: the activity the server saw lies between them.
func keepaliveTimes(t *testing.T, c *client) (sent, replied time.Time) {
	t.Helper()
	sent = time.Now()
	if err := c.call(wire.SubjectSessionKeepalive, nil, nil); err != nil {
		t.Fatalf("keepalive: %v", err)
	}
	return sent, time.Now()
}

// waitUntil blocks until the clock passes at.
func waitUntil(t *testing.T, at time.Time) {
	natstest.CheckFor(t, time.Until(at)+time.Second, 10*time.Millisecond, func() error {
		if time.Now().Before(at) {
			return fmt.Errorf("not yet %v", at)
		}
		return nil
	})
}

// checkClosedInBounds waits until the session is closed as expired and checks that
// it closed no earlier than timeout after the last activity was sent, and no later
// than timeout + 1 s after its reply.
func checkClosedInBounds(t *testing.T, e *env, c *client, sent, replied time.Time, reason wire.CloseReason) time.Duration {
	t.Helper()
	natstest.CheckFor(t, testTimeout+5*time.Second, 10*time.Millisecond, func() error {
		if r := e.record(t, c.id); !r.Closed() {
			return fmt.Errorf("session %s is %s", c.id, r.State)
		}
		return nil
	})
	r := e.record(t, c.id)
	if r.CloseReason != reason {
		t.Fatalf("got close reason %q, want %q", r.CloseReason, reason)
	}
	closed := *r.ClosedAt
	if closed.Before(sent.Add(testTimeout)) {
		t.Errorf("closed %v after the last keepalive was sent: before its %v timeout", closed.Sub(sent), testTimeout)
	}
	late := closed.Sub(replied) - testTimeout
	if late > time.Second {
		t.Errorf("closed %v after the timeout: want within 1 s", late)
	}
	// The CLOSED event follows the write that closed it.
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if got := e.eventCount(t, c.id, wire.EventClosed); got != 1 {
			return fmt.Errorf("session %s: got %d closed events, want 1", c.id, got)
		}
		return nil
	})
	return late
}

// outboxSettled returns an error while the tracker holds an outbox event of one of
// the clients' sessions that it has not seen stored: one it will publish again.
func (t *tracker) outboxSettled(clients []*client) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range clients {
		if _, ok := t.unpublished[c.id]; ok {
			return fmt.Errorf("session %s has events not known stored", c.id)
		}
	}
	return nil
}

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func TestExpiryBounds(t *testing.T) {
	t.Parallel()
	testExpiryBounds(t, newEnv(t, Config{}))
}

// TestExpiryBoundsSharedView runs the same with the registry following a view the
// process shares (Config.Sessions) instead of its own watch.
func TestExpiryBoundsSharedView(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	startAuth(t, srv)
	view, err := sessions.Watch(t.Context(), srv.JetStream(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(view.Close)
	e := &env{srv: srv, reg: startRegistry(t, srv, Config{Sessions: view}), js: srv.JetStream(t)}
	if e.kv, err = e.js.KeyValue(t.Context(), sessions.Bucket); err != nil {
		t.Fatal(err)
	}
	testExpiryBounds(t, e)
}

func testExpiryBounds(t *testing.T, e *env) {
	nc := e.srv.ClientConn(t)
	const n = 20
	clients := make([]*client, n)
	for i := range clients {
		clients[i], _ = open(t, nc, &wire.SessionOpenRequest{TimeoutMS: testTimeout.Milliseconds()})
	}
	// Keep them alive for more than a timeout, then let them go silent.
	type last struct{ sent, replied time.Time }
	lasts := make([]last, n)
	end := time.Now().Add(testTimeout + 500*time.Millisecond)
	tick := time.NewTicker(400 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(end) {
		for i, c := range clients {
			lasts[i].sent, lasts[i].replied = keepaliveTimes(t, c)
		}
		<-tick.C
	}
	var worst time.Duration
	for i, c := range clients {
		worst = max(worst, checkClosedInBounds(t, e, c, lasts[i].sent, lasts[i].replied, wire.ClosedExpired))
	}
	t.Logf("worst expiry lateness over %d sessions: %v", n, worst)
}

func TestExpiryWhenTheOpenerStops(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	startAuth(t, srv)
	a := startRegistry(t, srv, Config{})
	e := &env{srv: srv, reg: a, js: srv.JetStream(t)}
	e.kv, _ = e.js.KeyValue(t.Context(), "ROSTER_SESSIONS")
	nc := srv.ClientConn(t)
	c, _ := open(t, nc, &wire.SessionOpenRequest{TimeoutMS: testTimeout.Milliseconds()})
	startRegistry(t, srv, Config{})
	sent, replied := keepaliveTimes(t, c)
	a.stop()
	checkClosedInBounds(t, e, c, sent, replied, wire.ClosedExpired)
}

func TestExpiryCatchUpOnStart(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	startAuth(t, srv)
	a := startRegistry(t, srv, Config{})
	e := &env{srv: srv, reg: a, js: srv.JetStream(t)}
	e.kv, _ = e.js.KeyValue(t.Context(), "ROSTER_SESSIONS")
	nc := srv.ClientConn(t)

	// early is started again before its timeout: the new instance must learn the
	// last keepalive (from the activity stream) and not close it early. late is
	// past its timeout when the new instance starts: it closes at once.
	early, _ := open(t, nc, &wire.SessionOpenRequest{TimeoutMS: testTimeout.Milliseconds()})
	late, _ := open(t, nc, &wire.SessionOpenRequest{TimeoutMS: testTimeout.Milliseconds()})
	waitUntil(t, time.Now().Add(time.Second))
	sentE, repliedE := keepaliveTimes(t, early)
	sentL, repliedL := keepaliveTimes(t, late)
	// Let the batch reach the activity stream before the instance stops.
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		s, err := e.js.Stream(t.Context(), ActivityStream)
		if err != nil {
			return err
		}
		if s.CachedInfo().State.Msgs == 0 {
			return fmt.Errorf("no activity stored yet")
		}
		return nil
	})
	a.stop()

	waitUntil(t, repliedL.Add(testTimeout+500*time.Millisecond))
	if r := e.record(t, late.id); r.Closed() {
		t.Fatal("closed while no registry ran")
	}
	startRegistry(t, srv, Config{})
	// late closes on start: within a second of the instance being ready, which is
	// what replied+timeout stands for in the check.
	ready := time.Now()
	checkClosedInBounds(t, e, late, sentL, ready.Add(-testTimeout), wire.ClosedExpired)
	checkClosedInBounds(t, e, early, sentE, laterOf(repliedE, ready.Add(-testTimeout)), wire.ClosedExpired)
}

func TestExactlyOneClosedEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	instances := []*instance{e.reg, startRegistry(t, e.srv, Config{}), startRegistry(t, e.srv, Config{})}
	nc := e.srv.ClientConn(t)
	adm := admin(t, nc)
	const n = 10
	clients := make([]*client, n)
	var opened time.Time
	for i := range clients {
		clients[i], _ = open(t, nc, &wire.SessionOpenRequest{TimeoutMS: 1000, Properties: map[string]string{"group": "race"}})
	}
	opened = time.Now()
	// Fire client closes, admin closes by id and by filter right around the expiry.
	waitUntil(t, opened.Add(1000*time.Millisecond+250*time.Millisecond))
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(2)
		go func() { defer wg.Done(); _ = c.call(wire.SubjectSessionClose, nil, nil) }()
		go func() {
			defer wg.Done()
			_ = adm.call(wire.SubjectSessionClose, &wire.SessionCloseRequest{ID: c.id}, nil)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = adm.call(wire.SubjectSessionClose, &wire.SessionCloseRequest{Filter: `group is "race"`}, nil)
	}()
	wg.Wait()
	for _, c := range clients {
		natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
			if r := e.record(t, c.id); !r.Closed() {
				return fmt.Errorf("session %s is %s", c.id, r.State)
			}
			return nil
		})
	}
	// Every instance's expiry deadline has passed by now; give late timers a moment.
	waitUntil(t, opened.Add(3*time.Second))
	// Every instance publishes again the outbox events it has not seen stored, the
	// other instances' CLOSED events among them, once they are outboxSettle old:
	// count only once each instance knows every event of these sessions stored, so
	// that a republish that stores a second copy has happened by then.
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		for i, in := range instances {
			if err := in.track.outboxSettled(clients); err != nil {
				return fmt.Errorf("instance %d: %w", i, err)
			}
		}
		return nil
	})
	reasons := map[wire.CloseReason]int{}
	for _, c := range clients {
		if got := e.eventCount(t, c.id, wire.EventClosed); got != 1 {
			t.Errorf("session %s: got %d closed events, want 1", c.id, got)
		}
		reasons[e.record(t, c.id).CloseReason]++
	}
	t.Logf("close reasons: %v", reasons)
}

// TestExpiryHonoursActivityThatArrivedMeanwhile: the scheduler finds a session due
// and a worker closes it a moment later; activity that arrives in between must keep
// it open, so the close decides again on the current record and activity. Calling
// expire on a session that is not due stands for that moment.
func TestExpiryHonoursActivityThatArrivedMeanwhile(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	c, _ := open(t, e.srv.ClientConn(t), &wire.SessionOpenRequest{TimeoutMS: testTimeout.Milliseconds()})
	keepaliveTimes(t, c)
	before := e.lastSeq(t)
	e.reg.track.expire(t.Context(), c.id)
	if r := e.record(t, c.id); r.Closed() {
		t.Fatalf("got session %s closed (%s) by an expiry that was no longer due", c.id, r.CloseReason)
	}
	if after := e.lastSeq(t); after != before {
		t.Fatalf("an expiry that was no longer due wrote: sequence %d, then %d", before, after)
	}
	if err := c.call(wire.SubjectSessionKeepalive, nil, nil); err != nil {
		t.Fatalf("keepalive after the expiry that was not due: %v", err)
	}
}
