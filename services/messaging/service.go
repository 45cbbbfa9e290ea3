package messaging

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/version"
)

// Name identifies the service in $SRV.INFO; its version is the build's (pkg/version).
const (
	Name = "roster-messaging"
	// Prefix is the subject prefix of the service's endpoints.
	Prefix = "roster.v1.msg"
)

// DefaultMaxInFlight is how many requests may be in flight to one receiving session
// (seed 003: 255 message slots per session).
const DefaultMaxInFlight = 255

// Config configures the service.
type Config struct {
	// MaxConcurrent bounds the requests handled at once (0: the endpoint default).
	MaxConcurrent int
	// DrainTimeout bounds how long Run waits for requests in flight when it stops.
	DrainTimeout time.Duration
	// MaxInFlight bounds the requests in flight from this instance to one receiving
	// session (DefaultMaxInFlight). Beyond it the sender gets limit_exceeded for that
	// session.
	MaxInFlight int
	// MaxPayload bounds a delivery, payload and headers, in bytes (0: the NATS
	// server's max_payload).
	MaxPayload int
	// MaxStreams bounds the streamed requests (stream_id) an instance gathers at
	// once (DefaultMaxStreams): they outlive their handler, so the endpoint's bound
	// does not cover them. Beyond it a streamed request gets limit_exceeded.
	MaxStreams int
	// MaxRequests bounds the requests without stream_id an instance gathers at once
	// (DefaultMaxRequests). Their results are gathered after the handler returns,
	// up to a minute, so that requests to receivers that never answer hold none of
	// the endpoint's handler slots (MaxConcurrent): sends, and requests of others,
	// are handled whatever requests are in progress. Beyond it a request gets
	// limit_exceeded.
	MaxRequests int
	// MaxSenderRequests bounds the requests one session has in progress on an
	// instance, streamed or not (DefaultMaxSenderRequests). Beyond it the sender gets
	// limit_exceeded.
	MaxSenderRequests int
	// MaxPrincipalRequests bounds the requests the sessions of one principal have in
	// progress on an instance, together, streamed or not (DefaultMaxPrincipalRequests,
	// at most half of MaxRequests): MaxSenderRequests alone bounds one session, and a
	// principal opening many would take every request in progress. Beyond it the
	// sender gets limit_exceeded.
	MaxPrincipalRequests int
	// Sessions, when set, is a view of the sessions bucket the process already runs
	// (a full view, not Slim) for the service to share: its index subscribes to it
	// instead of the service watching the bucket itself, which saves decoding every
	// session write once more. Run leaves it open.
	Sessions *sessions.View
	// MeterProvider records the service's metrics (nil: none): those of every
	// request (pkg/endpoint) and the messages delivered.
	MeterProvider metric.MeterProvider
}

// DefaultMaxStreams is the default of Config.MaxStreams: as many as requests
// without stream_id, so that it takes 32 principals at their bound
// (DefaultMaxPrincipalRequests) to fill either. A stream holds neither its payload,
// once delivered, nor its results, each published as it comes in: only their
// statuses. At 256, two principals at their bound took every stream.
const DefaultMaxStreams = DefaultMaxRequests

// DefaultMaxSenderRequests is the default of Config.MaxSenderRequests.
const DefaultMaxSenderRequests = 64

// DefaultMaxRequests is the default of Config.MaxRequests.
const DefaultMaxRequests = 4096

// DefaultMaxPrincipalRequests is the default of Config.MaxPrincipalRequests: 32
// principals together take every request in progress at the defaults.
const DefaultMaxPrincipalRequests = DefaultMaxRequests / 32

// defaultSlots is the handler slots of the endpoint when Config.MaxConcurrent is zero.
const defaultSlots = 256

// Authorizer answers permission questions from the current policy (policy.Holder).
type Authorizer interface {
	Allowed(roles []string, perm policy.Permission, name string) bool
}

var _ Authorizer = (*policy.Holder)(nil)

// sessionView is what the service needs of the live sessions (a Slim sessions.View,
// whose changes feed the index through sessions.OnChange).
type sessionView interface {
	Authenticate(id, token string) (*sessions.Record, error)
	Get(id string) (*sessions.Record, bool)
	Find(id string) (*sessions.Record, bool, error)
	Touch(id string)
	Close()
}

var _ sessionView = (*sessions.View)(nil)

// sharedView is a view the service does not own: closing it ends the service's
// subscription, not the view.
type sharedView struct {
	*sessions.View
	cancel func()
}

func (v sharedView) Close() { v.cancel() }

// Service is one instance of the messaging service. Any number of instances may run
// against the same NATS; requests are spread over them by a queue group. Each keeps
// every live session in memory.
type Service struct {
	cfg  Config
	nc   *nats.Conn
	svc  *endpoint.Service
	log  *slog.Logger
	pol  Authorizer
	view sessionView
	ix   *index
	fan  *fanout
	// metrics count deliveries (metrics.go).
	metrics *metrics

	wg sync.WaitGroup // requests outliving their handler
	// gathers is the context of the requests outliving their handler: it ends when
	// the drain does, not with the endpoint's handlers (stopGathers).
	gathers     context.Context
	stopGathers context.CancelFunc
	streams     chan struct{} // a slot per streamed request in progress
	requests    chan struct{} // a slot per request without stream_id in progress
	// senders and principals count the requests in progress per sending session and
	// per principal of the sending sessions.
	sendersMu  sync.Mutex
	senders    map[string]int
	principals map[string]int
	runOnce    sync.Once
}

// New loads every session from the sessions bucket, follows it, and registers the
// service's endpoints on nc. The service answers requests as soon as New returns;
// Run waits for the end and drains.
func New(nc *nats.Conn, cfg Config, pol Authorizer, tp trace.TracerProvider, log *slog.Logger) (*Service, error) {
	if nc == nil || pol == nil || tp == nil || log == nil {
		return nil, errors.New("messaging: connection, authorizer, tracer provider and logger are required")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("messaging: jetstream: %w", err)
	}
	if cfg.Sessions != nil {
		ix := newIndex()
		// The replay and every later change reach the index under the view's lock,
		// as with OnChange below.
		view := sharedView{View: cfg.Sessions, cancel: cfg.Sessions.Subscribe(ix.apply)}
		s, err := newService(nc, cfg, pol, view, ix, tp, log)
		if err != nil {
			view.Close()
			return nil, err
		}
		return s, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The view follows the bucket until Run closes it. The index takes the properties
	// from each change, in full, as the view loads and then follows the bucket (under
	// the view's lock: a change is in the index before the view shows it); the view
	// itself keeps only what Authenticate and Get need.
	ix := newIndex()
	view, err := sessions.Watch(ctx, js, sessions.Slim(), sessions.OnChange(ix.apply), sessions.WithLogger(log))
	if err != nil {
		return nil, fmt.Errorf("messaging: %w", err)
	}
	s, err := newService(nc, cfg, pol, view, ix, tp, log)
	if err != nil {
		view.Close()
		return nil, err
	}
	return s, nil
}

func newService(nc *nats.Conn, cfg Config, pol Authorizer, view sessionView, ix *index, tp trace.TracerProvider, log *slog.Logger) (*Service, error) {
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	if cfg.MaxSenderRequests <= 0 {
		cfg.MaxSenderRequests = DefaultMaxSenderRequests
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = defaultSlots
	}
	if cfg.MaxRequests <= 0 {
		cfg.MaxRequests = DefaultMaxRequests
	}
	if cfg.MaxPrincipalRequests <= 0 {
		cfg.MaxPrincipalRequests = max(min(DefaultMaxPrincipalRequests, cfg.MaxRequests/2), 1)
	}
	if limit := int(nc.MaxPayload()); cfg.MaxPayload <= 0 || cfg.MaxPayload > limit {
		cfg.MaxPayload = limit
	}
	svc, err := endpoint.New(nc, endpoint.Config{
		Name:          Name,
		Version:       version.Version,
		Description:   "Delivers messages to one session or to every session matching a filter",
		Prefix:        Prefix,
		MaxConcurrent: cfg.MaxConcurrent,
		// A request carries a payload of up to the NATS maximum (base64 in JSON), so
		// the body may be as large as a message can be.
		MaxBody:       int(nc.MaxPayload()),
		MeterProvider: cfg.MeterProvider,
	}, tp, log)
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, nc: nc, svc: svc, log: svc.Logger(), pol: pol, view: view, ix: ix, streams: make(chan struct{}, cfg.MaxStreams), requests: make(chan struct{}, cfg.MaxRequests), senders: map[string]int{}, principals: map[string]int{}}
	s.gathers, s.stopGathers = context.WithCancel(context.WithoutCancel(svc.Context()))
	fail := func(err error) (*Service, error) {
		s.stopGathers()
		s.stopFollowing()
		_ = svc.Stop(context.Background())
		return nil, err
	}
	s.fan, err = newFanout(nc, cfg.MaxInFlight, svc.Tracer(), svc.Logger())
	if err != nil {
		return fail(err)
	}
	if s.metrics, err = newMetrics(cfg.MeterProvider); err != nil {
		return fail(fmt.Errorf("messaging: metrics: %w", err))
	}
	if err := s.register(); err != nil {
		return fail(err)
	}
	if err := nc.Flush(); err != nil {
		return fail(err)
	}
	return s, nil
}

// apply keeps the index equal to the live sessions of the view: a closed or removed
// session leaves the index before the view (and so any request) sees it closed.
func (ix *index) apply(c sessions.Change) {
	if c.Record == nil || c.Record.Closed() {
		ix.remove(c.ID)
		return
	}
	ix.upsert(c.ID, c.Record.DeliverKey, c.Record.Properties())
}

// Run blocks until ctx ends, then stops taking requests, waits up to
// Config.DrainTimeout (or until the deadline ctx's cause gives, endpoint.StopBy,
// when that comes first) for those in flight, and stops following the sessions. Every
// goroutine the service started has ended when Run returns.
//
// A request is in flight until its results are in: its handler returns once the
// deliveries are out (endpoint.ErrReplyLater, or a streamed request's reply), and
// the drain waits for the gathering too, which ends a little before the drain's
// deadline at the latest (stopMargin; the receivers not in then are unavailable).
// Ended with the endpoint's handlers, every request in progress was answered at
// once, each receiver that had not answered yet reported unavailable and its answer
// lost.
func (s *Service) Run(ctx context.Context) error {
	err := errors.New("messaging: Run called twice")
	s.runOnce.Do(func() {
		<-ctx.Done()
		stopCtx, cancel := endpoint.StopContext(ctx, s.cfg.DrainTimeout)
		defer cancel()
		deadline, _ := stopCtx.Deadline()
		gatherBy := time.NewTimer(time.Until(deadline.Add(-min(stopMargin, time.Until(deadline)/4))))
		defer gatherBy.Stop()
		err = s.svc.Stop(stopCtx)
		gathered := make(chan struct{})
		go func() { s.wg.Wait(); close(gathered) }()
		select {
		case <-gathered:
		case <-gatherBy.C:
			s.stopGathers()
			<-gathered
		}
		s.stopGathers()
		s.stopFollowing()
	})
	return err
}

// stopMargin is how much of a stop's drain the requests in progress leave, at the
// most a quarter of it, for their answers to go out and the connection to drain
// by the same deadline (the process drains it once Run returns).
const stopMargin = 200 * time.Millisecond

func (s *Service) stopFollowing() {
	if s.fan != nil {
		s.fan.close()
	}
	s.view.Close()
}
