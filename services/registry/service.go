package registry

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
	"github.com/seed-3c836eab/roster/pkg/logthrottle"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/version"
)

// Name identifies the service in $SRV.INFO; its version is the build's (pkg/version).
const (
	Name = "roster-registry"
	// Prefix is the subject prefix of the service's endpoints.
	Prefix = "roster.v1.session"
)

// Authorizer answers permission questions from the current policy (policy.Holder).
type Authorizer interface {
	Allowed(roles []string, perm policy.Permission, name string) bool
	// VetChange applies the property rules to a session's change of its own
	// properties: the values to store and the keys refused (policy.Policy.VetChange).
	VetChange(set map[string]string, remove []string) (map[string]string, []string)
}

// Limits bound what one principal or session may hold. A request over a limit is
// refused with limit_exceeded, naming the limit.
type Limits struct {
	// SessionsPerPrincipal bounds the open sessions of one principal (default 1000).
	// It is counted from the registry's in-memory view: exact within an instance,
	// approximate across instances opening for one principal at the same moment.
	SessionsPerPrincipal int
	// Properties bounds the user properties of a session (default 100).
	Properties int
	// KeyLength and ValueLength bound a property key and value in bytes (256, 4 KiB).
	KeyLength   int
	ValueLength int
	// RecordSize bounds a stored session record in bytes (64 KiB).
	RecordSize int
}

// listPageMax is the largest limit a list request may name (the maximum of
// schemas/session.list.request.json).
const listPageMax = 1000

// Config configures the service. Zero fields take the defaults named.
type Config struct {
	// MaxConcurrent bounds the requests handled at once (0: the endpoint default).
	MaxConcurrent int
	// DrainTimeout bounds how long Run waits for requests in flight when it stops.
	DrainTimeout time.Duration
	// AuthTimeout bounds the wait for the auth service's answer when a session opens
	// or changes principal (30 s: the auth service itself gives up waiting for a
	// client's other attempts after 10 s). An auth instance that dies with the
	// request would otherwise hold the request, and a worker, until Run ends.
	AuthTimeout time.Duration

	// DefaultTimeout is the inactivity timeout of a session that asks for none
	// (60 s); MinTimeout and MaxTimeout bound a requested one (1 s, 24 h).
	DefaultTimeout time.Duration
	MinTimeout     time.Duration
	MaxTimeout     time.Duration
	// ReconnectWindow is how long a RECOVERING session may be resumed before it is
	// closed as failed (30 s).
	ReconnectWindow time.Duration
	// TombstoneRetention is how long a CLOSED record is kept, so that requests
	// naming it get session_closed (24 h); after it they get session_not_found.
	TombstoneRetention time.Duration
	// ExpiryGrace is added to a session's timeout before it is closed, to cover
	// activity batches still in flight between instances (250 ms).
	ExpiryGrace time.Duration
	// ActivityInterval is how often an instance publishes the activity it saw
	// (100 ms).
	ActivityInterval time.Duration
	// PersistInterval bounds how stale the last activity stored in a record may be
	// (5 min). It sets the KV writes idle sessions cost: sessions/PersistInterval
	// per second at most. The activity stream keeps twice this long.
	PersistInterval time.Duration
	// TTLSlack is added to timeout+PersistInterval for the KV TTL of a live record,
	// the backstop that removes records when no registry runs at all (1 h). It is at
	// least PersistInterval: persist writes are spread over half an interval, so a
	// live record may go 1.5 intervals (and a round) between writes.
	TTLSlack time.Duration
	// ConnCheckInterval is how often an instance asks the NATS servers whether the
	// servers holding the connections of ACTIVE sessions still run (10 s);
	// ServerGoneAfter is how long such a server may leave that unanswered before the
	// sessions bound to its connections count as disconnected (30 s). See
	// docs/architecture.md, "Lost connections nobody reported".
	ConnCheckInterval time.Duration
	ServerGoneAfter   time.Duration
	// beforeHold, when set (tests only), is called by an events read about to be
	// held, in its handler.
	beforeHold func()
	// beforeWrite, when set (tests only), is called by a change of a session
	// (modify) about to write it, with the change's context.
	beforeWrite func(ctx context.Context, id string)
	// beforeActive, when set (tests only), is called by a session request about to
	// count as activity of its session (active), with the request's context.
	beforeActive func(ctx context.Context, id string)
	// afterAuthenticate, when set (tests only), is called once the auth service has
	// admitted an open's or a change of principal's credentials, with the
	// request's context.
	afterAuthenticate func(ctx context.Context)
	// connzPage is the page size of a server's connection listing (connzPage; tests
	// shrink it).
	connzPage int
	// gonePatience bounds each storage call of the work on records the KV TTL
	// removed: the check of the keys removed while no registry ran, and the write
	// of a tombstone (goneStorageWait; tests whose requests are dropped on purpose
	// shorten it, so that they wait out the timeout and the retry sooner).
	gonePatience time.Duration
	// EventsMaxAge is how long the session events stream keeps events (7 days; at
	// least MinEventsMaxAge).
	EventsMaxAge time.Duration
	// Limits bound principals and sessions.
	Limits Limits
	// ListLimit is the default page size of list (100); MaxListLimit its maximum
	// (1000, also the most it may be: the schema's), which the default may not pass.
	ListLimit    int
	MaxListLimit int
	// Now returns the time; nil means time.Now. Tests may replace it.
	Now func() time.Time
	// Replicas is the number of copies of the sessions bucket and the registry's
	// streams (1; 3 on a production cluster).
	Replicas int
	// Sessions, when set, is a view of the sessions bucket the process already runs
	// (a full view, not Slim, started with KeepGone so that the instance learns the
	// records removed while no registry ran, or before it followed the view) for the
	// instance to follow instead of watching the bucket itself, which saves
	// delivering and decoding every session write once more. Run leaves it open.
	Sessions *sessions.View
	// MeterProvider records the service's metrics (nil: none): those of every
	// request (pkg/endpoint), sessions by state and closes by reason.
	MeterProvider metric.MeterProvider
}

// recordHeadroom is what a session record's write needs beside the record: the KV
// and TTL headers, and the fields a server transition adds past the size limit.
const recordHeadroom = 8 << 10

// WithDefaults returns c with its zero fields set to their defaults, as New sets
// them.
func (c Config) WithDefaults() Config {
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(n *int, v int) {
		if *n <= 0 {
			*n = v
		}
	}
	def(&c.DrainTimeout, 10*time.Second)
	def(&c.AuthTimeout, 30*time.Second)
	def(&c.DefaultTimeout, time.Minute)
	def(&c.MinTimeout, time.Second)
	def(&c.MaxTimeout, 24*time.Hour)
	def(&c.ReconnectWindow, 30*time.Second)
	def(&c.TombstoneRetention, 24*time.Hour)
	def(&c.ExpiryGrace, 250*time.Millisecond)
	def(&c.ActivityInterval, 100*time.Millisecond)
	def(&c.PersistInterval, 5*time.Minute)
	def(&c.TTLSlack, time.Hour)
	c.TTLSlack = max(c.TTLSlack, c.PersistInterval)
	def(&c.EventsMaxAge, 7*24*time.Hour)
	def(&c.ConnCheckInterval, 10*time.Second)
	def(&c.ServerGoneAfter, 30*time.Second)
	defInt(&c.connzPage, connzPage)
	def(&c.gonePatience, goneStorageWait)
	defInt(&c.Limits.SessionsPerPrincipal, 1000)
	defInt(&c.Limits.Properties, 100)
	defInt(&c.Limits.KeyLength, 256)
	defInt(&c.Limits.ValueLength, 4096)
	defInt(&c.Limits.RecordSize, 64<<10)
	defInt(&c.ListLimit, 100)
	defInt(&c.MaxListLimit, listPageMax)
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Service is one instance of the registry service. Any number of instances may run
// against the same NATS; requests are spread over them by a queue group, and every
// instance tracks every session's activity and expiry.
type Service struct {
	cfg   Config
	nc    *nats.Conn
	js    jetstream.JetStream
	ejs   jetstream.JetStream // publishes events asynchronously
	st    *store
	pol   Authorizer
	svc   *endpoint.Service
	log   *slog.Logger
	track *tracker
	// metrics are the service's own instruments (metrics.go).
	metrics *metrics
	// eventWarn reports failed event publishes; while storage is away there is one
	// per event, so it says so at most every eventWarnEvery.
	eventWarn *logthrottle.Warner
	// waiters holds event reads waiting for an event (eventsread.go).
	waiters *eventWaiters

	runOnce sync.Once
}

// New prepares storage (the sessions bucket, the events and activity streams) and
// registers the service's endpoints on nc, answering requests as soon as it returns.
// Run starts expiry and activity tracking and blocks until the end.
func New(nc *nats.Conn, cfg Config, pol Authorizer, tp trace.TracerProvider, log *slog.Logger) (*Service, error) {
	if nc == nil || pol == nil || tp == nil || log == nil {
		return nil, errors.New("registry: connection, authorizer, tracer provider and logger are required")
	}
	cfg.setDefaults()
	if cfg.DefaultTimeout < cfg.MinTimeout || cfg.DefaultTimeout > cfg.MaxTimeout {
		return nil, fmt.Errorf("registry: the default session timeout %v is outside the bounds [%v, %v]", cfg.DefaultTimeout, cfg.MinTimeout, cfg.MaxTimeout)
	}
	// A default page larger than the largest a client may ask for would answer a
	// request that names no limit with a page it could not have asked for.
	if cfg.ListLimit > cfg.MaxListLimit {
		return nil, fmt.Errorf("registry: the default list page %d is above the largest, %d", cfg.ListLimit, cfg.MaxListLimit)
	}
	// The schema of a list request allows no larger limit: a client following it
	// could never ask for more.
	if cfg.MaxListLimit > listPageMax {
		return nil, fmt.Errorf("registry: the largest list page %d is above %d, the largest a list request may name", cfg.MaxListLimit, listPageMax)
	}
	if cfg.EventsMaxAge < MinEventsMaxAge {
		return nil, fmt.Errorf("registry: events max age %v is below %v, the events stream's duplicate window", cfg.EventsMaxAge, MinEventsMaxAge)
	}
	// A record is written in one message, with room for the write's headers.
	if mp := nc.MaxPayload(); mp > 0 && int64(cfg.Limits.RecordSize) > mp-recordHeadroom {
		return nil, fmt.Errorf("registry: the record size limit %d is over what one write carries on this server (max_payload %d less %d)", cfg.Limits.RecordSize, mp, recordHeadroom)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("registry: jetstream: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := openStore(ctx, js, cfg)
	if err != nil {
		return nil, err
	}
	svc, err := endpoint.New(nc, endpoint.Config{
		Name:          Name,
		Version:       version.Version,
		Description:   "Owns session records: open, get, list, update, keepalive, resume, close, expiry and session events",
		Prefix:        Prefix,
		MaxConcurrent: cfg.MaxConcurrent,
		MeterProvider: cfg.MeterProvider,
	}, tp, log)
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, nc: nc, js: js, st: st, pol: pol, svc: svc, log: svc.Logger(), waiters: newEventWaiters()}
	s.track = newTracker(s)
	st.known = s.track.recordAt
	if s.metrics, err = newMetrics(cfg.MeterProvider, s.track); err != nil {
		_ = svc.Stop(context.Background())
		return nil, fmt.Errorf("registry: metrics: %w", err)
	}
	fail := func(err error) (*Service, error) {
		_ = s.metrics.reg.Unregister()
		_ = svc.Stop(context.Background())
		return nil, err
	}
	s.eventWarn = logthrottle.New(s.log, "publishing a session event; it will be published again", eventWarnEvery)
	if s.ejs, err = s.newEventsJetStream(); err != nil {
		return fail(fmt.Errorf("registry: jetstream: %w", err))
	}
	svc.AddCheck("tracker", s.track.ready)
	if err := s.register(); err != nil {
		return fail(err)
	}
	if err := nc.Flush(); err != nil {
		return fail(err)
	}
	return s, nil
}

// Run tracks activity and expires sessions until ctx ends, then stops taking
// requests, waits up to Config.DrainTimeout (or until the deadline ctx's cause
// gives, endpoint.StopBy, when that comes first) for those in flight and stops
// every goroutine it started. Run may be called once.
func (s *Service) Run(ctx context.Context) error {
	err := errors.New("registry: Run called twice")
	s.runOnce.Do(func() { err = s.run(ctx) })
	return err
}

func (s *Service) run(ctx context.Context) error {
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	trackErr := make(chan error, 1)
	go func() { trackErr <- s.track.run(tctx) }()
	// The events loop answers the reads held by requests, and runs until the
	// endpoint has stopped: a read taken before the stop may still be held while the
	// endpoint drains.
	ectx, ecancel := context.WithCancel(context.WithoutCancel(ctx))
	defer ecancel()
	eventsDone := make(chan struct{})
	go func() {
		defer close(eventsDone)
		s.eventsLoop(ectx)
	}()
	var err error
	select {
	case <-ctx.Done():
	case err = <-trackErr:
		trackErr = nil
	}
	stopCtx, stopCancel := endpoint.StopContext(ctx, s.cfg.DrainTimeout)
	stopErr := s.svc.Stop(stopCtx)
	// The tracker stopped with ctx and published its last batch then, while the
	// endpoint still drained: the activity of the requests answered since goes out
	// now, or the other instances would time those sessions from earlier activity.
	s.track.flush()
	// Events of the last requests are in the records' outboxes whatever happens;
	// waiting for their acknowledgements saves another instance publishing them.
	s.waitEvents(stopCtx)
	stopCancel()
	cancel()
	ecancel()
	<-eventsDone
	s.eventWarn.Flush() // the failed publishes not logged yet, before the process may exit
	_ = s.metrics.reg.Unregister()
	if trackErr != nil {
		if terr := <-trackErr; terr != nil && !errors.Is(terr, context.Canceled) {
			err = terr
		}
	}
	return errors.Join(err, stopErr)
}

var _ Authorizer = (*policy.Holder)(nil)
