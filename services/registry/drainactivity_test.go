package registry

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestActivityOfRequestsDrainedAtStopIsPublished: an instance that stops answers the
// requests it had taken, and their activity must reach the other instances. The
// tracker used to stop with the service's context, publishing its last batch at once
// while the endpoint still drained: a keepalive answered during the drain counted
// nowhere but in the stopping instance, and another instance closed the session a
// timeout after its earlier activity — before its timeout counted from the keepalive
// its client had been told succeeded. (Every graceful stop, a rolling upgrade's,
// lost the activity of the reads then in flight.)
func TestActivityOfRequestsDrainedAtStopIsPublished(t *testing.T) {
	t.Parallel()
	const timeout = 2 * time.Second
	var armed atomic.Bool
	held, release := make(chan struct{}), make(chan struct{})
	srv := startServer(t)
	startAuth(t, srv)
	a := startRegistry(t, srv, Config{beforeActive: func(context.Context, string) {
		if armed.CompareAndSwap(true, false) {
			close(held)
			<-release
		}
	}})
	e := &env{srv: srv, reg: startRegistry(t, srv, Config{}), js: srv.JetStream(t)}
	e.kv, _ = e.js.KeyValue(t.Context(), "ROSTER_SESSIONS")
	c, _ := open(t, srv.ClientConn(t), &wire.SessionOpenRequest{TimeoutMS: timeout.Milliseconds()})
	opened := time.Now()

	// Keepalives until one reaches a (the other instance answers the rest), which
	// holds it before it counts.
	armed.Store(true)
	answered := make(chan error, 1)
	for reached := false; !reached; {
		go func() { answered <- c.call(wire.SubjectSessionKeepalive, nil, nil) }()
		select {
		case <-held:
			reached = true
		case err := <-answered:
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	stopped := make(chan struct{})
	go func() { a.stop(); close(stopped) }()
	// a's tracker has ended (its last batch is out) while the keepalive still waits.
	natstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		a.track.mu.Lock()
		defer a.track.mu.Unlock()
		if a.track.runCtx != nil {
			return errors.New("a's tracker still runs")
		}
		return nil
	})
	// Half a timeout after the open, so that a close timed from the open comes well
	// before one timed from the keepalive.
	waitUntil(t, opened.Add(timeout/2))
	counted := time.Now()
	close(release)
	if err := <-answered; err != nil {
		t.Fatalf("the keepalive drained at the stop: %v", err)
	}
	<-stopped
	natstest.CheckFor(t, timeout+10*time.Second, 10*time.Millisecond, func() error {
		if r := e.record(t, c.id); !r.Closed() {
			return errors.New("not closed yet")
		}
		return nil
	})
	if closed := *e.record(t, c.id).ClosedAt; closed.Before(counted.Add(timeout)) {
		t.Fatalf("closed %v after the keepalive answered during the stop: before its %v timeout", closed.Sub(counted), timeout)
	}
}
