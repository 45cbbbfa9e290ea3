package roster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/natsprobe"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/services/auth"
	"github.com/seed-3c836eab/roster/services/lock"
	"github.com/seed-3c836eab/roster/services/messaging"
	"github.com/seed-3c836eab/roster/services/registry"
)

// Process is a running Roster process.
type Process struct {
	cfg     Config
	log     *slog.Logger
	server  *embedded.Server // nil when joining a cluster
	issuer  nkeys.KeyPair    // the auth callout's issuer; nil without a callout
	running []*running
	policy  *policyFollower
	// authPolicy is the auth service's policy, when the process runs it.
	authPolicy *policy.Holder
	view       *sharedView
	failed     chan error
	done       chan struct{}
	// stopping: the stop has begun; the services take no more requests.
	stopping atomic.Bool
	stopped  sync.Once
	stopErr  error
	clock    clock // the time stopping counts DrainTimeout on
	// replicasChecked: checkReplicas passed, before the first service started.
	replicasChecked bool
}

// clock is the time a stop's drain deadline is counted on: the real one, or a
// test's that moves when the test says.
type clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

type running struct {
	name   string
	nc     *nats.Conn
	health func(context.Context) *endpoint.Health
	cancel context.CancelCauseFunc // with the stop's deadline (endpoint.StopBy)
	done   chan error
}

// service is what a module starts: something to run and its health.
type service interface {
	Run(ctx context.Context) error
	Health(ctx context.Context) *endpoint.Health
}

// Start starts the embedded server (unless cfg.NATSURL is set) and the selected
// services, in dependency order. Each service answers requests when Start returns.
// A failure stops everything started so far.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (*Process, error) {
	names, err := cfg.selected()
	if err != nil {
		return nil, err
	}
	if len(names) == 0 && cfg.NATSURL != "" {
		return nil, configErr("no service to run: --services none only makes sense with the embedded server")
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = noop.NewTracerProvider()
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = time.Minute
	}
	p := &Process{cfg: cfg, log: log, failed: make(chan error, len(names)), done: make(chan struct{}), clock: realClock{}}
	runsAuth := slices.Contains(names, "auth")

	connect := func(name string) (*nats.Conn, error) {
		opts := append([]nats.Option{
			nats.Name("roster-" + name),
			nats.MaxReconnects(-1),
			nats.ReconnectWait(250 * time.Millisecond),
			nats.ErrorHandler(logAsyncError(log, name)),
		}, connLog(log, name)...)
		opts = append(opts, cfg.NATSOptions...)
		if p.server != nil {
			return nats.Connect(cfg.NATSURL, append(opts, p.server.ServiceOptions()...)...)
		}
		return dial(ctx, cfg.NATSURL, opts, cfg.StartTimeout, log.With("service", name))
	}

	issuer, err := cfg.calloutIssuer(cfg.NATSURL == "", runsAuth)
	if err != nil {
		return nil, err
	}
	p.issuer = issuer
	if runsAuth {
		// The policy, users and key files are read now, so that a mistake in one
		// fails the process before it starts a server or waits for NATS; the
		// auth service reads them again as it starts.
		if _, err := cfg.authConfig(issuer, cfg.NATSURL == ""); err != nil {
			return nil, err
		}
		warnWritableByOthers(log, cfg.Auth)
	}
	if cfg.NATSURL == "" {
		ecfg := cfg.Embedded
		ecfg.AllowAnonymous = issuer == nil
		if issuer != nil {
			if ecfg.CalloutIssuer, err = issuer.PublicKey(); err != nil {
				return nil, err
			}
		} else {
			log.Warn("auth callout off: client connections are not authenticated by Roster; anonymous clients are admitted")
		}
		if p.server, err = embedded.Start(ecfg, log); err != nil {
			return nil, err
		}
	}

	for _, name := range names {
		if err := p.startService(ctx, name, connect); err != nil {
			return nil, errors.Join(fmt.Errorf("%s: %w", name, err), p.stop())
		}
		log.Info("service started", "service", name)
	}
	if p.server != nil {
		go p.watchServer()
	}
	return p, nil
}

// errServerGone is the failure of a process whose embedded server shut down while
// the process was not stopping.
var errServerGone = errors.New("the embedded NATS server shut down")

// watchServer fails the process (Wait) when its embedded server shuts down without
// the process stopping it — nats-server shuts itself down, for one, when OCSP
// revokes a must-staple certificate. Unnoticed, the process stayed up with every
// service reconnecting to a server that would never come back: live, never ready,
// never restarted. The stop shuts the server down too, which ends this goroutine.
func (p *Process) watchServer() {
	p.server.WaitForShutdown()
	if p.stopping.Load() {
		return
	}
	select {
	case p.failed <- errServerGone:
	default: // a service's failure is there already, and stops the process as well
	}
}

// dial connects to url, waiting up to timeout for it to accept connections: a
// process started beside its NATS servers (a container, a unit started in parallel)
// comes up before they listen. A server that answers and refuses — credentials, TLS
// — fails at once, and so does a URL that names a route or HTTP port (natsprobe),
// which no wait would make a client port: asked after the first failure, once.
func dial(ctx context.Context, url string, opts []nats.Option, timeout time.Duration, log *slog.Logger) (*nats.Conn, error) {
	if err := natsprobe.CheckURLs(url); err != nil {
		return nil, err
	}
	start := time.Now()
	deadline := start.Add(timeout)
	probed := false
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		nc, err := nats.Connect(url, opts...)
		if err != nil && !probed {
			probed = true
			if hint := natsprobe.WrongPort(url, opts...); hint != "" {
				return nil, fmt.Errorf("%s: %w", hint, err)
			}
		}
		var netErr net.Error
		if err == nil || !(errors.Is(err, nats.ErrNoServers) || errors.As(err, &netErr)) {
			return nc, err
		}
		if time.Now().Add(wait).After(deadline) {
			// The time tried, not the bound: the next try would have ended past it.
			return nil, fmt.Errorf("NATS not reachable: tried for %v of the %v start timeout: %w", time.Since(start).Round(100*time.Millisecond), timeout, err)
		}
		log.Warn("NATS not reachable yet; retrying", "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// logAsyncError returns a connection's handler of asynchronous errors (a slow
// consumer, a permission refused, a JetStream consumer gone): it logs them. Without
// one nats.go writes them to stderr as lines of its own, which broke the JSON of
// --log-format json and reached no log level.
func logAsyncError(log *slog.Logger, conn string) nats.ErrHandler {
	return func(_ *nats.Conn, sub *nats.Subscription, err error) {
		attrs := []any{"connection", conn, "err", err}
		if sub != nil {
			attrs = append(attrs, "subject", sub.Subject)
		}
		log.Warn("NATS reported an error", attrs...)
	}
}

// connLog returns the handlers that log the connection conn losing its server —
// until it is back the service answers nothing and /readyz says not ready; closing
// is no loss — and getting one back, naming each server by its name (nats-0, …):
// with several NATS servers, which one went away is what an operator looks for
// first, and behind a load balancer or in process a URL would not say.
func connLog(log *slog.Logger, conn string) []nats.Option {
	// The server the connection was on: by the time it is lost, nats.go no longer
	// says which it was.
	var server atomic.Pointer[string]
	on := func(nc *nats.Conn) string {
		name := nc.ConnectedServerName()
		server.Store(&name)
		return name
	}
	return []nats.Option{
		nats.ConnectHandler(func(nc *nats.Conn) { on(nc) }),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() {
				return
			}
			var lost string
			if p := server.Load(); p != nil {
				lost = *p
			}
			log.Warn("NATS connection lost; reconnecting", "connection", conn, "server", lost, "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS connection restored", "connection", conn, "server", on(nc), "url", redactURL(nc.ConnectedUrl()))
		}),
	}
}

// warnWritableByOthers warns of each file the auth service trusts — the policy,
// users, JWT key and callout seed files — that users other than its owner may
// write: whoever can write one can admit themselves (a user of any role, a key or
// secret of their own, an issuer they hold the seed of), and the users and key
// files are read again within a second of a change. A warning, not a refusal, as
// the files' reading is not refused either: a mode that lets them be read is
// what a container's bind mount needs (deploy/README.md), but none of the
// deployments here needs one that lets them be written. Windows has no such mode.
func warnWritableByOthers(log *slog.Logger, a AuthConfig) {
	if runtime.GOOS == "windows" {
		return
	}
	for _, f := range []struct{ flag, path string }{
		{"--policy", a.PolicyFile}, {"--users-file", a.UsersFile}, {"--jwt-hmac-secret-file", a.JWTSecretFile},
		{"--jwt-public-keys", a.JWTPublicKeys}, {"--auth-callout-seed-file", a.CalloutSeedFile},
	} {
		if f.path == "" {
			continue
		}
		if st, err := os.Stat(f.path); err == nil && st.Mode().Perm()&0o022 != 0 {
			log.Warn("a file the auth service trusts may be written by other users than its owner, who could admit themselves with it: chmod go-w",
				"flag", f.flag, "file", f.path, "mode", fmt.Sprintf("%#o", st.Mode().Perm()))
		}
	}
}

// redactURL returns a server URL with its password, or a token given as its user
// (nats://TOKEN@host), replaced by xxxxx, as the SDK's messages show one. nats.go's
// ConnectedUrlRedacted hides a password but not such a token, which every reconnect
// then wrote to the log.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return ""
	}
	if u.User == nil {
		return s
	}
	if _, ok := u.User.Password(); !ok {
		u.User = url.User("xxxxx")
	}
	return u.Redacted()
}

// sharedView is the process's one view of the sessions bucket, on a connection of
// its own, so that it outlives every service using it.
type sharedView struct {
	view *sessions.View
	nc   *nats.Conn
}

// sessionsView returns the one view of the sessions bucket that the services of the
// process share: auth and lock authenticate sessions against it, messaging indexes
// it and the registry tracks expiry from it; it starts on first use. Each view
// follows every write of the bucket and decodes it: one per process rather than one
// per service saves that work on every session change. (A registry alone in its
// process keeps its own, which skips decoding the instance's own writes.)
func (p *Process) sessionsView(ctx context.Context, connect func(string) (*nats.Conn, error)) (*sessions.View, error) {
	if p.view != nil {
		return p.view.view, nil
	}
	nc, err := connect("sessions-view")
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	opts := []sessions.Option{sessions.WithLogger(p.log.With("component", "sessions-view"))}
	if names, _ := p.cfg.selected(); slices.Contains(names, "registry") {
		opts = append(opts, sessions.KeepGone()) // for the registry's check of removed keys
	}
	view, err := sessions.Watch(ctx, js, opts...)
	if err != nil {
		nc.Close()
		return nil, err
	}
	p.view = &sharedView{view: view, nc: nc}
	return view, nil
}

// policyHolder returns the process's policy holder, following the stored policy;
// it starts following on first use.
func (p *Process) policyHolder(ctx context.Context, connect func(string) (*nats.Conn, error)) (*policy.Holder, error) {
	if p.policy != nil {
		return p.policy.holder, nil
	}
	nc, err := connect("policy")
	if err != nil {
		return nil, err
	}
	f, err := followPolicy(ctx, nc, p.cfg.Replicas, p.log)
	if err != nil {
		nc.Close()
		return nil, err
	}
	p.policy = f
	return f.holder, nil
}

func (p *Process) startService(ctx context.Context, name string, connect func(string) (*nats.Conn, error)) error {
	nc, err := connect(name)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	newService := func() (service, error) {
		if !p.replicasChecked {
			// Once, before the first service updates a bucket.
			if err := checkReplicas(ctx, nc, p.cfg.Replicas); err != nil {
				return nil, err
			}
			p.replicasChecked = true
		}
		return p.newService(ctx, name, nc, connect)
	}
	svc, err := newService()
	// JetStream may not answer yet while a cluster elects its leaders: retry
	// transient failures for a while instead of failing the process.
	for deadline := time.Now().Add(p.cfg.StartTimeout); err != nil && transient(err) && time.Now().Before(deadline); {
		p.log.Warn("service not started yet; retrying", "service", name, "err", err)
		select {
		case <-ctx.Done():
			nc.Close()
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		svc, err = newService()
	}
	if err != nil {
		nc.Close()
		return err
	}
	mctx, cancel := context.WithCancelCause(context.Background())
	r := &running{name: name, nc: nc, health: svc.Health, cancel: cancel, done: make(chan error, 1)}
	p.running = append(p.running, r)
	go func() {
		err := svc.Run(mctx)
		r.done <- err
		if err != nil {
			p.failed <- fmt.Errorf("%s: %w", name, err)
		}
	}()
	return nil
}

func (p *Process) newService(ctx context.Context, name string, nc *nats.Conn, connect func(string) (*nats.Conn, error)) (service, error) {
	cfg, tp, log := p.cfg, p.cfg.TracerProvider, p.log
	if name == "auth" {
		acfg, err := cfg.authConfig(p.issuer, p.server != nil)
		if err != nil {
			return nil, err
		}
		if f := cfg.Auth.UsersFile; f != "" {
			if _, err := os.Stat(f); errors.Is(err, fs.ErrNotExist) {
				// Not an error: the file is read again as it changes, so it may be
				// written later (roster user add). But a mistyped path would
				// otherwise refuse every password without a word.
				log.Warn("the users file does not exist: no password is accepted until it is written (roster user add)", "users_file", f)
			}
		}
		view, err := p.sessionsView(ctx, connect)
		if err != nil {
			return nil, err
		}
		acfg.Sessions = auth.ViewRoles{View: view}
		acfg.MeterProvider = cfg.MeterProvider
		svc, err := auth.New(nc, acfg, tp, log)
		if err != nil {
			return nil, err
		}
		p.authPolicy = svc.Policy()
		// Instances of a queue group should judge alike; one started without
		// --users-file refuses every password it is given, and this line is where
		// an operator comparing instances sees it.
		var chain []string
		for _, a := range acfg.Authenticators {
			chain = append(chain, a.Name())
		}
		// The callout issuer likewise: an instance joining a cluster without
		// --auth-callout-seed-file answers no callout, and one with another seed than
		// nats.conf's NATS_CALLOUT_ISSUER has every connection refused.
		calloutIssuer := "none"
		if p.issuer != nil {
			if pub, err := p.issuer.PublicKey(); err == nil {
				calloutIssuer = pub
			}
		}
		log.Info("authenticator chain", "authenticators", strings.Join(chain, ","), "users_file", cfg.Auth.UsersFile,
			"callout_issuer", calloutIssuer)
		if pol := svc.Policy().Load(); pol != nil && pol.Anonymous.Allowed && (pol.Connections.SharedInbox || pol.Connections.ServiceDiscovery) {
			log.Warn("DEVELOPMENT POLICY IN EFFECT: anonymous clients are admitted and connections share _INBOX.>; " +
				"never use this in production — give --policy (see docs/architecture.md, Auth and NATS security)")
		}
		return svc, nil
	}
	holder, err := p.policyHolder(ctx, connect)
	if err != nil {
		return nil, err
	}
	switch name {
	case "registry":
		rcfg := cfg.Registry
		rcfg.DrainTimeout, rcfg.Replicas, rcfg.MeterProvider, rcfg.Sessions = cfg.DrainTimeout, cfg.Replicas, cfg.MeterProvider, nil
		if names, _ := cfg.selected(); slices.ContainsFunc(names, func(n string) bool { return n != "registry" }) {
			// Other services here watch the bucket too: one view for all of them.
			view, err := p.sessionsView(ctx, connect)
			if err != nil {
				return nil, err
			}
			rcfg.Sessions = view
		}
		return registry.New(nc, rcfg, holder, tp, log)
	case "lock":
		view, err := p.sessionsView(ctx, connect)
		if err != nil {
			return nil, err
		}
		lcfg := cfg.Lock
		lcfg.DrainTimeout, lcfg.Replicas, lcfg.MeterProvider = cfg.DrainTimeout, cfg.Replicas, cfg.MeterProvider
		return lock.New(nc, lcfg, view, holder, tp, log)
	case "messaging":
		mcfg := cfg.Messaging
		mcfg.DrainTimeout, mcfg.MeterProvider, mcfg.Sessions = cfg.DrainTimeout, cfg.MeterProvider, nil
		if p.view != nil {
			// Another service here already runs the process's view: share it rather
			// than watch the bucket once more. (Alone, messaging keeps its own slim
			// view, which costs far less memory than a full one.)
			mcfg.Sessions = p.view.view
		}
		return messaging.New(nc, mcfg, holder, tp, log)
	}
	return nil, fmt.Errorf("unknown service %q", name)
}

// Services returns the names of the services the process runs, in the order they
// started.
func (p *Process) Services() []string {
	names := make([]string, len(p.running))
	for i, r := range p.running {
		names[i] = r.name
	}
	return names
}

// Policy returns the policy the process's services apply now, or nil when it runs
// none.
func (p *Process) Policy() *policy.Policy {
	switch {
	case p.authPolicy != nil:
		return p.authPolicy.Load()
	case p.policy != nil:
		return p.policy.holder.Load()
	}
	return nil
}

// Server returns the embedded server, or nil when the process joined a cluster.
func (p *Process) Server() *embedded.Server { return p.server }

// ClientURL returns the URL clients connect to: the embedded server's, or NATSURL.
func (p *Process) ClientURL() string {
	if p.server != nil {
		return p.server.ClientURL()
	}
	return p.cfg.NATSURL
}

// Wait blocks until ctx ends, a service fails or the embedded server shuts down
// on its own (watchServer), then stops the process (the
// services together, within one DrainTimeout, then the embedded server) and returns
// the failure and any error stopping. A process stopped meanwhile by Stop ends
// Wait too, with Stop's result: nothing else would.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		p.log.Info("stopping")
		return p.stop()
	case err := <-p.failed:
		p.log.Error("failed; stopping", "err", err)
		return errors.Join(err, p.stop())
	case <-p.done:
		return p.stop()
	}
}

// Stop stops the process. It is safe to call more than once.
func (p *Process) Stop() error { return p.stop() }

func (p *Process) stop() error {
	p.stopped.Do(p.stopAll)
	return p.stopErr
}

// callers names, for a service, the services of a process whose requests in flight
// call it over NATS: the registry's open and change of principal ask the auth
// service (wire.SubjectAuthenticate). Such a service stops only once its callers
// have, so that their last requests find it answering. The lock and messaging
// services call no service (they read sessions and the policy from KV, through
// the process's view and holder, which outlive every service), and no service
// calls them or the registry.
var callers = map[string][]string{"auth": {"registry"}}

// stopAll stops the services together, then the embedded server. Each service
// stops taking requests at once, except a service whose callers (above) run here:
// it stops once they have. One deadline, DrainTimeout from now, bounds the whole:
// every service's stop (the requests in flight, endpoint.StopBy) and the drain of
// its connection. The services used to stop one after the other, each with a
// DrainTimeout of its own: up to four times the timeout, longer than a pod's
// grace period before it is killed.
func (p *Process) stopAll() {
	p.stopping.Store(true)
	deadline := p.clock.Now().Add(p.cfg.DrainTimeout)
	stopped := make(map[string]chan struct{}, len(p.running))
	for _, r := range p.running {
		stopped[r.name] = make(chan struct{})
	}
	errs := make([][]error, len(p.running))
	var wg sync.WaitGroup
	for i, r := range p.running {
		wg.Go(func() {
			for _, c := range callers[r.name] {
				if ch, ok := stopped[c]; ok {
					<-ch
				}
			}
			errs[i] = p.stopService(r, deadline, stopped[r.name])
		})
	}
	wg.Wait()
	if p.policy != nil {
		p.policy.stop()
	}
	if p.view != nil {
		p.view.view.Close()
		p.view.nc.Close()
	}
	if p.server != nil {
		p.server.Stop()
		p.log.Info("embedded NATS server stopped")
	}
	p.stopErr = errors.Join(slices.Concat(errs...)...)
	close(p.done)
}

// stopService stops r by deadline: it cancels r's run, waits for it to return
// (closing ran then, for the services that wait for r) and drains r's connection.
func (p *Process) stopService(r *running, deadline time.Time, ran chan<- struct{}) []error {
	var errs []error
	r.cancel(&endpoint.StopBy{Deadline: deadline})
	if err := <-r.done; err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", r.name, err))
	}
	close(ran)
	if err := drainConn(r.nc, p.clock, deadline); err != nil {
		errs = append(errs, fmt.Errorf("%s: drain connection: %w", r.name, err))
	}
	p.log.Info("service stopped", "service", r.name)
	return errs
}

// drainConn closes the connection of a service that stopped, once what it owes is
// sent: the requests still queued for its endpoints, whose subscriptions drain
// (endpoint.Service.Stop answers them unavailable), and its last replies, in the
// connection's buffer. Closing it at once dropped the queued requests, and their
// clients waited out their timeouts. Drain returns at once and closes later, so
// this waits for the close until deadline, the end of the process's DrainTimeout:
// with a timeout of its own, a service's stop could take twice DrainTimeout. Past
// the deadline the connection is closed, which still sends what it has buffered.
// Without a server to send to there is nothing to wait for: draining would only
// time out, for each service in turn.
func drainConn(nc *nats.Conn, clk clock, deadline time.Time) error {
	if !nc.IsConnected() {
		nc.Close()
		return nil
	}
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		if errors.Is(err, nats.ErrConnectionClosed) {
			return nil
		}
		return err
	}
	select {
	case <-closed:
		return nil
	case <-clk.After(deadline.Sub(clk.Now())):
		nc.Close()
		return errors.New("not drained within the drain timeout, counted from the process's stop")
	}
}

// transient reports whether a start failure may pass by itself: JetStream or a
// peer service not answering yet, or a cluster still forming — fewer of its nodes
// have joined than a bucket's copies need, and JetStream refuses the bucket "no
// suitable peers for placement" until they have (the pods of a StatefulSet come up
// one by one). A cluster that can never place them (--replicas above its size)
// fails the same way once the start's retries are spent.
func transient(err error) bool {
	var api *jetstream.APIError
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		errors.As(err, &api) && api.ErrorCode == errNoSuitablePeers
}

// errNoSuitablePeers is JetStream's error code for a stream it cannot place
// (nats-server's JSClusterNoPeersErrF).
const errNoSuitablePeers jetstream.ErrorCode = 10005
