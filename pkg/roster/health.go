package roster

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
)

// Health is the health of a process: each of its services and its NATS connections.
type Health struct {
	Live     bool                        `json:"live"`
	Ready    bool                        `json:"ready"`
	Services map[string]*endpoint.Health `json:"services"`
	// Disconnected lists the services whose NATS connection is down.
	Disconnected []string `json:"disconnected,omitempty"`
}

// Health checks every service of the process. The process is live while it runs
// (a service that failed stops it) and none of its services has had a request
// panic (endpoint.Health.Panics: the panic was answered, but may have left the
// service's state half changed, which a restart clears), and ready when every service is ready and
// connected to NATS, and so are the connections its services share: the sessions
// view's ("sessions-view") and the policy follower's ("policy"), which nats.go may
// have on another server than theirs — down, every service goes on with a view and
// a policy that no longer follow the buckets. A process stopping is not ready:
// its services take no more requests.
func (p *Process) Health(ctx context.Context) *Health {
	h := &Health{Live: true, Ready: true, Services: map[string]*endpoint.Health{}}
	select {
	case <-p.done:
		return &Health{Services: h.Services}
	default:
	}
	for _, r := range p.running {
		sh := r.health(ctx)
		h.Services[r.name] = sh
		if !sh.Ready {
			h.Ready = false
		}
		if sh.Panics > 0 {
			h.Live = false
		}
		if !r.nc.IsConnected() {
			h.Ready = false
			h.Disconnected = append(h.Disconnected, r.name)
		}
	}
	shared := map[string]*nats.Conn{}
	if p.view != nil {
		shared["sessions-view"] = p.view.nc
	}
	if p.policy != nil {
		shared["policy"] = p.policy.nc
	}
	for name, nc := range shared {
		if !nc.IsConnected() {
			h.Ready = false
			h.Disconnected = append(h.Disconnected, name)
		}
	}
	if p.stopping.Load() {
		h.Ready = false
	}
	slices.Sort(h.Disconnected)
	return h
}

// HealthHandler serves Kubernetes-style probes: GET /livez and /readyz answer 200
// or 503 with the Health as JSON.
func (p *Process) HealthHandler() http.Handler {
	mux := http.NewServeMux()
	probe := func(ready bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
			defer cancel()
			h := p.Health(ctx)
			ok := h.Live
			if ready {
				ok = h.Ready
			}
			w.Header().Set("Content-Type", "application/json")
			if !ok {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			_ = json.NewEncoder(w).Encode(h)
		}
	}
	mux.HandleFunc("GET /livez", probe(false))
	mux.HandleFunc("GET /readyz", probe(true))
	return mux
}
