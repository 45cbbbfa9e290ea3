package registry

import (
	"context"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
)

// Health reports this instance's liveness and readiness, as its health endpoint
// does; roster serve's HTTP probe endpoint asks it directly.
func (s *Service) Health(ctx context.Context) *endpoint.Health { return s.svc.Health(ctx) }
