package roster

import (
	"context"
	"slices"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// TestNotReadyWhileASharedConnectionIsDown: the sessions view and the policy
// follower have connections of their own, which every service of the process relies
// on; with either down the process is not ready, and says which.
func TestNotReadyWhileASharedConnectionIsDown(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	p, err := Start(context.Background(), Config{
		Services:    []string{"lock", "messaging"},
		NATSURL:     srv.ClientURL(),
		NATSOptions: []nats.Option{nats.UserInfo(embedded.ServiceUser, srv.Config().ServicePassword)},
	}, natstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop() })
	if h := p.Health(t.Context()); !h.Ready {
		t.Fatalf("a started process: got %+v, want ready", h)
	}
	p.policy.nc.Close()
	h := p.Health(t.Context())
	if h.Ready || !slices.Contains(h.Disconnected, "policy") {
		t.Fatalf("with the policy follower's connection down: got ready %v, disconnected %v; want not ready, policy", h.Ready, h.Disconnected)
	}
	p.view.nc.Close()
	if h := p.Health(t.Context()); !slices.Equal(h.Disconnected, []string{"policy", "sessions-view"}) {
		t.Fatalf("with the view's connection down too: got disconnected %v", h.Disconnected)
	}
}
