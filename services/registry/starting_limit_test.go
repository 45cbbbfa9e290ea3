package registry

import (
	"log/slog"
	"testing"

	"go.opentelemetry.io/otel/trace/noop"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// The sessions-per-principal limit is counted from the tracker, which a starting
// instance has not loaded yet while it already answers opens.
func TestSessionsPerPrincipalLimitWhileStarting(t *testing.T) {
	srv := startServer(t)
	startAuth(t, srv)
	cfg := Config{Limits: Limits{SessionsPerPrincipal: 1}}
	a := startRegistry(t, srv, cfg)
	cn := srv.ClientConn(t)
	open(t, cn, nil)
	err := wire.Call(t.Context(), cn, wire.SubjectSessionOpen, nil, &wire.SessionOpenRequest{}, nil)
	wantCode(t, err, wire.CodeLimitExceeded) // while the instance runs: enforced
	a.stop()

	nc := srv.ServiceConn(t)
	b, err := New(nc, cfg, testPolicy(), noop.NewTracerProvider(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	natstest.Run(t, b.Run, nc.Close)
	var resp wire.SessionOpenResponse
	err = wire.Call(t.Context(), cn, wire.SubjectSessionOpen, nil, &wire.SessionOpenRequest{}, &resp)
	if err == nil {
		t.Fatalf("a second session of principal %q opened with a limit of 1 per principal (%s)", resp.Session.Principal, resp.Session.ID)
	}
	wantCode(t, err, wire.CodeLimitExceeded)
}
