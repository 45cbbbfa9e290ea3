package auth

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
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
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// Name identifies the service in $SRV.INFO; its version is the build's (pkg/version).
const (
	Name = "roster-auth"
	// Prefix is the subject prefix of the service's endpoints.
	Prefix = wire.AuthPrefix
)

// Config configures the service.
type Config struct {
	// MaxConcurrent bounds the requests handled at once (0: the endpoint default).
	MaxConcurrent int
	// DrainTimeout bounds how long Run waits for requests in flight when it stops.
	DrainTimeout time.Duration

	// Authenticators judge credentials, in order. Empty means Anonymous() only.
	Authenticators []Authenticator
	// Throttle limits repeated failures.
	Throttle ThrottleConfig

	// InitialPolicy, if set, replaces the stored policy at start (roster serve
	// --policy). DefaultPolicy, if set, is stored at start when no policy is stored
	// yet. With neither and nothing stored, the policy is empty: nothing is allowed.
	InitialPolicy *policy.Policy
	DefaultPolicy *policy.Policy

	// Sessions finds the roles of the session a policy request acts for. When nil,
	// the service follows the sessions bucket itself (pkg/sessions' live view).
	Sessions SessionRoles

	// Callout, if set, makes the service answer NATS's auth callout.
	Callout *CalloutConfig

	// Now returns the current time (default time.Now); tests set it.
	Now func() time.Time
	// Replicas is the number of copies of the policy bucket (1; 3 on a production
	// cluster).
	Replicas int
	// MeterProvider records the service's metrics (nil: none): those of every
	// request (pkg/endpoint) and authentication attempts by source and outcome.
	MeterProvider metric.MeterProvider

	// calloutSlots is how many callout requests are checked at once (0: 64); tests
	// set it.
	calloutSlots int
}

// SessionRoles finds the roles of a session from its id and token (pkg/sessions'
// live view provides this). It returns a *wire.Error (invalid_token, session_closed,
// session_not_found) when the session cannot act.
type SessionRoles interface {
	SessionRoles(ctx context.Context, id, token string) ([]string, error)
}

// Service is one instance of the auth service. Any number of instances may run
// against the same NATS; requests are spread over them by a queue group.
type Service struct {
	cfg      Config
	nc       *nats.Conn
	svc      *endpoint.Service
	tracer   trace.Tracer // the endpoints', for the callout's spans
	log      *slog.Logger
	chain    chain
	throttle *throttle
	policy   *policy.Holder
	store    *policy.Store

	// bg runs the policy watcher and callout work; Run cancels it and waits.
	bg       context.Context
	stopBg   context.CancelFunc
	wg       sync.WaitGroup
	callout  *nats.Subscription
	calloutQ chan struct{}
	// calloutsDropped logs the callout requests dropped unanswered (serveCallout):
	// in a burst, thousands a second.
	calloutsDropped *logthrottle.Warner
	// instance names this instance in its throttle notes; throttleSub receives the
	// other instances' (throttleshare.go).
	instance    string
	throttleSub *nats.Subscription
	// repeatKey keys the fingerprints of failed attempts (fingerprint).
	repeatKey []byte
	view      *sessions.View // nil when Config.Sessions was given
	// admitted remembers the connections the callout admitted with grants a policy
	// change may withdraw; disconnects forgets them as they close (revoke.go).
	admitted    admitted
	disconnects *nats.Subscription
	attempts    *attempts

	mu       sync.Mutex
	stopping bool
}

// track counts a goroutine that stopBackground must wait for; it returns false once
// stopping has begun.
func (s *Service) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return false
	}
	s.wg.Add(1)
	return true
}

// New opens the policy bucket, stores the initial policy, starts following the
// stored policy and registers the service's endpoints (and the auth callout, if
// configured) on nc. The service answers requests as soon as New returns; Run waits
// for the end and drains.
func New(nc *nats.Conn, cfg Config, tp trace.TracerProvider, log *slog.Logger) (*Service, error) {
	if nc == nil || tp == nil || log == nil {
		return nil, errors.New("auth: connection, tracer provider and logger are required")
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if len(cfg.Authenticators) == 0 {
		cfg.Authenticators = []Authenticator{Anonymous()}
	}
	if cfg.Callout != nil {
		if err := cfg.Callout.check(); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("auth: jetstream: %w", err)
	}
	store, err := policy.OpenStore(ctx, js, policy.WithReplicas(cfg.Replicas))
	if err != nil {
		return nil, err
	}
	current, err := initPolicy(ctx, store, cfg, log)
	if err != nil {
		return nil, err
	}

	svc, err := endpoint.New(nc, endpoint.Config{
		Name:          Name,
		Version:       version.Version,
		Description:   "Authenticates connections and sessions, vets proposed properties, holds the permission policy and serves the NATS auth callout",
		Prefix:        Prefix,
		MaxConcurrent: cfg.MaxConcurrent,
		MeterProvider: cfg.MeterProvider,
	}, tp, log)
	if err != nil {
		return nil, err
	}
	attempts, err := newAttempts(cfg.MeterProvider)
	if err != nil {
		_ = svc.Stop(context.Background())
		return nil, fmt.Errorf("auth: metrics: %w", err)
	}
	bg, stopBg := context.WithCancel(context.Background())
	var view *sessions.View
	if cfg.Sessions == nil {
		wctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		view, err = sessions.Watch(wctx, js, sessions.WithLogger(log))
		cancel()
		if err != nil {
			stopBg()
			_ = svc.Stop(context.Background())
			return nil, fmt.Errorf("auth: %w", err)
		}
		cfg.Sessions = ViewRoles{View: view}
	}
	s := &Service{
		view:     view,
		cfg:      cfg,
		nc:       nc,
		svc:      svc,
		tracer:   svc.Tracer(),
		log:      svc.Logger(),
		chain:    chain(cfg.Authenticators),
		throttle: newThrottle(cfg.Throttle, cfg.Now),
		policy:   policy.NewHolder(current),
		store:    store,
		bg:       bg,
		stopBg:   stopBg,
		calloutQ: make(chan struct{}, cmp.Or(cfg.calloutSlots, 64)),
		attempts: attempts,
	}
	s.calloutsDropped = logthrottle.New(s.log, "auth callout requests dropped unanswered: the server stopped waiting before a slot was free, or the backlog was full; their clients are refused at the server's auth timeout", 10*time.Second)
	fail := func(err error) (*Service, error) {
		s.stopBackground()
		_ = svc.Stop(context.Background())
		return nil, err
	}
	ready := make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := store.Watch(bg, s.policy, s.log, ready); err != nil {
			s.log.Error("policy watch stopped", "err", err)
		}
	}()
	select {
	case <-ready:
	case <-ctx.Done():
		return fail(errors.New("auth: policy watch did not start"))
	}
	svc.AddCheck("policy", func(ctx context.Context) error {
		_, _, err := store.Get(ctx)
		return err
	})
	if err := s.shareThrottle(); err != nil {
		return fail(err)
	}
	if err := s.register(); err != nil {
		return fail(err)
	}
	if cfg.Callout != nil {
		if err := s.serveCallout(); err != nil {
			return fail(err)
		}
		if err := s.forgetDisconnected(); err != nil {
			return fail(err)
		}
		if s.track() {
			go s.followGrants()
		}
	}
	if err := nc.Flush(); err != nil {
		return fail(err)
	}
	return s, nil
}

func initPolicy(ctx context.Context, store *policy.Store, cfg Config, log *slog.Logger) (*policy.Policy, error) {
	if cfg.InitialPolicy != nil {
		// The file replaces whatever is stored. When that differs — a policy set
		// live since, say — a rolling restart undoes it: say so, or the change
		// is gone without a word. Only for that message: a stored policy that
		// cannot be read (or does not decode) is replaced all the same.
		old, oldRev, _ := store.Get(ctx)
		rev, err := store.Put(ctx, cfg.InitialPolicy, 0)
		if err != nil {
			return nil, err
		}
		if old != nil && !samePolicy(old, cfg.InitialPolicy) {
			log.Warn("policy stored from configuration replaces a different stored policy: a change made with policy set since is undone",
				"revision", rev, "replaced_revision", oldRev)
		} else {
			log.Info("policy stored from configuration", "revision", rev)
		}
		return cfg.InitialPolicy, nil
	}
	p, _, err := store.Get(ctx)
	if err == nil {
		return p, nil
	}
	if errors.Is(err, policy.ErrInvalidStored) {
		// Started without one, the service would veto every proposed property
		// and refuse anonymous connections without a word: refuse to start.
		return nil, fmt.Errorf("auth: %w; start with a policy to store instead (roster serve --policy FILE)", err)
	}
	if !errors.Is(err, policy.ErrNoPolicy) {
		return nil, err
	}
	if cfg.DefaultPolicy == nil {
		log.Warn("no policy stored: every session and connection is refused until one is set")
		return &policy.Policy{}, nil
	}
	if _, err := store.Create(ctx, cfg.DefaultPolicy); err != nil && !errors.Is(err, policy.ErrConflict) {
		return nil, err
	}
	p, _, err = store.Get(ctx)
	return p, err
}

// samePolicy reports whether a and b are stored as the same JSON.
func samePolicy(a, b *policy.Policy) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

// Policy returns the holder of the current policy, which follows the stored one.
func (s *Service) Policy() *policy.Holder { return s.policy }

// Run blocks until ctx ends, then stops taking requests and waits up to
// Config.DrainTimeout (or until the deadline ctx's cause gives, endpoint.StopBy,
// when that comes first) for those in flight. Every goroutine the service started has
// ended when Run returns.
func (s *Service) Run(ctx context.Context) error {
	err := s.svc.Serve(ctx, s.cfg.DrainTimeout)
	s.stopBackground()
	return err
}

// stopBackground stops answering the callout, ends the policy watch and waits for
// every goroutine the service started.
func (s *Service) stopBackground() {
	if s.callout != nil {
		_ = s.callout.Unsubscribe()
	}
	if s.throttleSub != nil {
		_ = s.throttleSub.Unsubscribe()
	}
	if s.disconnects != nil {
		_ = s.disconnects.Unsubscribe()
	}
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	s.stopBg()
	s.wg.Wait()
	if s.view != nil {
		s.view.Close()
	}
}

// ViewRoles finds session roles in a live view of the sessions bucket: no round trip
// per request. A process that already runs a view gives it as Config.Sessions.
type ViewRoles struct{ View *sessions.View }

// SessionRoles returns the roles of session id if token is its token.
func (r ViewRoles) SessionRoles(_ context.Context, id, token string) ([]string, error) {
	rec, err := r.View.Authenticate(id, token)
	if err != nil {
		return nil, err
	}
	return rec.Roles, nil
}
