package roster

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// TestStopClosesEveryConnection: when Stop returns, every connection the process
// opened is closed, its last replies sent: roster serve exits right after, and a
// program embedding the process expects no connection or goroutine of it left.
func TestStopClosesEveryConnection(t *testing.T) {
	t.Parallel()
	p := startJoined(t, "lock", "messaging")
	if err := p.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	for _, r := range p.running {
		if !r.nc.IsClosed() {
			t.Errorf("%s: connection %v after Stop returned, want closed", r.name, r.nc.Status())
		}
	}
	if !p.policy.nc.IsClosed() || !p.view.nc.IsClosed() {
		t.Error("policy or sessions view connection open after Stop returned, want closed")
	}
}

// startJoined starts a process running services that joins a server of its own
// (NATSURL), as a production process does; it stops when the test ends.
func startJoined(t *testing.T, services ...string) *Process {
	t.Helper()
	srv := natstest.Start(t)
	p, err := Start(context.Background(), Config{
		Services:     services,
		NATSURL:      srv.ClientURL(),
		NATSOptions:  []nats.Option{nats.UserInfo(embedded.ServiceUser, srv.Config().ServicePassword)},
		DrainTimeout: 2 * time.Second,
	}, natstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop() })
	return p
}
