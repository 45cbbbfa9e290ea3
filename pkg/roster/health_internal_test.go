package roster

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/natstest"
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

// TestNotLiveAfterAPanic: a service whose request panicked answered it, but may
// have left its own state half changed; the process is then no longer live, so that
// its supervisor restarts it, and /livez says so.
func TestNotLiveAfterAPanic(t *testing.T) {
	t.Parallel()
	p := startJoined(t, "lock", "messaging")
	if h := p.Health(t.Context()); !h.Live {
		t.Fatalf("a started process: got %+v, want live", h)
	}
	for i, r := range p.running {
		if r.name != "lock" {
			continue
		}
		health := r.health
		p.running[i].health = func(ctx context.Context) *endpoint.Health {
			h := health(ctx)
			h.Panics = 1
			return h
		}
	}
	if h := p.Health(t.Context()); h.Live || h.Services["lock"].Panics != 1 {
		t.Fatalf("with a lock request that panicked: got live %v, lock %+v; want not live", h.Live, h.Services["lock"])
	}
	rec := httptest.NewRecorder()
	p.HealthHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/livez", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("/livez after a panic: got %d, want 503", rec.Code)
	}
}

// TestNotReadyWhileStopping: once the process stops — told to, or because one of
// its services failed — its services take no more requests (their endpoints drain),
// so it is not ready, though still live until the stop is done. It said ready for
// the whole stop, up to --drain-timeout, as long as each service's own checks
// passed: a service that had failed included.
func TestNotReadyWhileStopping(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	p := &Process{cfg: Config{DrainTimeout: time.Minute}, log: natstest.Logger(t), done: make(chan struct{}), clock: realClock{}}
	ctx, cancel := context.WithCancelCause(context.Background())
	held := make(chan struct{})
	r := &running{name: "held", nc: srv.ServiceConn(t), cancel: cancel, done: make(chan error, 1),
		health: func(context.Context) *endpoint.Health { return &endpoint.Health{Service: "held", Ready: true} }}
	p.running = append(p.running, r)
	go func() {
		<-ctx.Done()
		<-held // a request in flight holds the stop
		r.done <- nil
	}()
	if h := p.Health(t.Context()); !h.Ready || !h.Live {
		t.Fatalf("a running process: got %+v, want live and ready", h)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- p.Stop() }()
	<-ctx.Done()
	h := p.Health(t.Context())
	close(held)
	if err := <-stopped; err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if h.Ready || !h.Live {
		t.Fatalf("while stopping: got live %v, ready %v; want live, not ready", h.Live, h.Ready)
	}
	if h := p.Health(t.Context()); h.Ready || h.Live {
		t.Fatalf("stopped: got %+v, want neither live nor ready", h)
	}
}
