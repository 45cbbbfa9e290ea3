package messaging

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
)

// Name and Version identify the service in $SRV.INFO.
const (
	Name    = "roster-messaging"
	Version = "0.1.0"
	// Prefix is the subject prefix of the service's endpoints.
	Prefix = "roster.v1.msg"
)

// Config configures the service.
type Config struct {
	// MaxConcurrent bounds the requests handled at once (0: the endpoint default).
	MaxConcurrent int
	// DrainTimeout bounds how long Run waits for requests in flight when it stops.
	DrainTimeout time.Duration
}

// Service is one instance of the messaging service. Any number of instances may run
// against the same NATS; requests are spread over them by a queue group.
type Service struct {
	cfg Config
	svc *endpoint.Service
	log *slog.Logger
}

// New registers the service's endpoints on nc. The service answers requests as soon
// as New returns; Run waits for the end and drains.
func New(nc *nats.Conn, cfg Config, tp trace.TracerProvider, log *slog.Logger) (*Service, error) {
	if nc == nil || tp == nil || log == nil {
		return nil, errors.New("messaging: connection, tracer provider and logger are required")
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	svc, err := endpoint.New(nc, endpoint.Config{
		Name:          Name,
		Version:       Version,
		Description:   "Delivers messages to one session or to every session matching a filter",
		Prefix:        Prefix,
		MaxConcurrent: cfg.MaxConcurrent,
	}, tp, log)
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, svc: svc, log: svc.Logger()}
	if err := s.register(); err != nil {
		_ = svc.Stop(context.Background())
		return nil, err
	}
	if err := nc.Flush(); err != nil {
		_ = svc.Stop(context.Background())
		return nil, err
	}
	return s, nil
}

// Run blocks until ctx ends, then stops taking requests and waits up to
// Config.DrainTimeout for those in flight.
func (s *Service) Run(ctx context.Context) error {
	return s.svc.Serve(ctx, s.cfg.DrainTimeout)
}
