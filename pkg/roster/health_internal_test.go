package roster

import (
	"slices"
	"testing"
)

// TestNotReadyWhileASharedConnectionIsDown: the sessions view and the policy
// follower have connections of their own, which every service of the process relies
// on; with either down the process is not ready, and says which.
func TestNotReadyWhileASharedConnectionIsDown(t *testing.T) {
	t.Parallel()
	p := startJoined(t, "lock", "messaging")
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
