package registry

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// A registry instance answers requests as soon as New returns, while its tracker
// needs >= 300 ms (activity replay, FetchMaxWait) plus the watch's load before it
// knows any session. Neither a resume after the reconnect window, which ended while
// no registry ran, nor a keepalive of a session silent for longer than its timeout
// may bring the session back: both get session_closed.
func TestStartingInstanceNeitherResumesNorRevivesOverdueSessions(t *testing.T) {
	srv := startServer(t)
	startAuth(t, srv)
	cfg := Config{ReconnectWindow: time.Second}
	a := startRegistry(t, srv, cfg)
	e := &env{srv: srv, reg: a, js: srv.JetStream(t)}
	e.kv, _ = e.js.KeyValue(t.Context(), "ROSTER_SESSIONS")

	first := srv.ClientConn(t)
	lost, _ := open(t, first, &wire.SessionOpenRequest{TimeoutMS: 60000})
	silent, _ := open(t, srv.ClientConn(t), &wire.SessionOpenRequest{TimeoutMS: 1000})
	first.Close()
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if r := e.record(t, lost.id); r.State != wire.StateRecovering {
			return fmt.Errorf("session is %s, want RECOVERING", r.State)
		}
		return nil
	})
	a.stop()
	// Closed by the old instance before it stopped, they would be refused by any
	// instance, starting or not.
	if r := e.record(t, lost.id); r.State != wire.StateRecovering {
		t.Fatalf("the session with the closed connection is %s when the instance stopped, want RECOVERING (the instance stopped too late)", r.State)
	}
	if r := e.record(t, silent.id); r.Closed() {
		t.Fatalf("the silent session closed (%s) before the instance stopped (it stopped too late)", r.CloseReason)
	}
	time.Sleep(2500 * time.Millisecond) // past the 1 s window and the 1 s timeout

	// A new instance, started as roster serve does: New, then Run at once.
	lost.nc = srv.ClientConn(t)
	b := startUnready(t, srv, cfg)
	// Both at once: an answer waits for the load, so the second, sent after the
	// first's answer, would ask an instance that has loaded.
	if err := b.track.ready(t.Context()); err == nil {
		t.Fatal("the new instance had loaded the sessions before it was asked: nothing was asked of a starting instance")
	}
	var resumeErr, keepaliveErr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); resumeErr = lost.call(wire.SubjectSessionResume, nil, nil) }()
	go func() { defer wg.Done(); keepaliveErr = silent.call(wire.SubjectSessionKeepalive, nil, nil) }()
	wg.Wait()

	if resumeErr == nil {
		t.Errorf("resume 2.5 s after the session went RECOVERING with a 1 s reconnect window succeeded; record now %s", e.record(t, lost.id).State)
	} else {
		wantCode(t, resumeErr, wire.CodeSessionClosed)
	}
	if keepaliveErr == nil {
		time.Sleep(500 * time.Millisecond) // the tracker has loaded and caught up
		t.Errorf("keepalive on a session silent for 2.5 s with a 1 s timeout succeeded; record now %s", e.record(t, silent.id).State)
	} else {
		wantCode(t, keepaliveErr, wire.CodeSessionClosed)
	}
}

// The sessions-per-principal limit is counted from the tracker: a starting instance
// enforces it from its first answer.
func TestSessionsPerPrincipalLimitWhileStarting(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	startAuth(t, srv)
	cfg := Config{Limits: Limits{SessionsPerPrincipal: 1}}
	a := startRegistry(t, srv, cfg)
	cn := srv.ClientConn(t)
	open(t, cn, nil)
	err := wire.Call(t.Context(), cn, wire.SubjectSessionOpen, nil, &wire.SessionOpenRequest{}, nil)
	wantCode(t, err, wire.CodeLimitExceeded) // while the instance runs: enforced
	a.stop()

	startUnready(t, srv, cfg)
	var resp wire.SessionOpenResponse
	err = wire.Call(t.Context(), cn, wire.SubjectSessionOpen, nil, &wire.SessionOpenRequest{}, &resp)
	if err == nil {
		t.Fatalf("a second session of principal %q opened with a limit of 1 per principal (%s)", resp.Session.Principal, resp.Session.ID)
	}
	wantCode(t, err, wire.CodeLimitExceeded)
}
