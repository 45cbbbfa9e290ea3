package registry

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// A registry instance answers requests as soon as New returns; Run's tracker then
// needs >= 300 ms (activity replay, FetchMaxWait) plus the watch's load before it
// knows any session. A resume in that gap brings back a session whose reconnect
// window ended while no registry ran; a keepalive revives a session silent for
// longer than its timeout.
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
	time.Sleep(2500 * time.Millisecond) // past the 1 s window and the 1 s timeout

	// A new instance, started as roster serve does: New, then Run at once.
	nc := srv.ServiceConn(t)
	b, err := New(nc, cfg, testPolicy(), noop.NewTracerProvider(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	second := srv.ClientConn(t)
	lost.nc = second
	natstest.Run(t, b.Run, nc.Close)
	resumeErr := lost.call(wire.SubjectSessionResume, nil, nil)
	keepaliveErr := silent.call(wire.SubjectSessionKeepalive, nil, nil)

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
