package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/telemetry"
	"github.com/seed-3c836eab/roster/services/lock"
	"github.com/seed-3c836eab/roster/services/messaging"
	"github.com/seed-3c836eab/roster/services/registry"
)

type serveOptions struct {
	dataDir      string
	listen       string
	websocket    string
	monitor      string
	serverName   string
	syncInterval string
	services     []string
	natsURL      string
	natsUser     string
	natsPassword string
	natsCreds    string
	natsToken    string
	logFormat    string
	logLevel     string
	drainTimeout time.Duration
	auth         authOptions
}

func newServeCmd() *cobra.Command {
	o := &serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run Roster's services",
		Long: `Run Roster's services.

By default serve starts an embedded NATS server with JetStream (storing under
--data-dir, fsync on every write) and all four services on it. With --nats-url it
embeds nothing and joins an existing NATS cluster instead; --services chooses which
services this process runs, so each can run as its own process in production.`,
		Example: `  roster serve
  roster serve --listen 0.0.0.0:4222 --websocket 127.0.0.1:8080
  roster serve --services lock --nats-url nats://nats-0:4222 --nats-creds /etc/roster/service.creds`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serve(cmd.Context(), o)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.dataDir, "data-dir", "./data", "directory for the embedded server's JetStream storage")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:4222", "host:port the embedded server listens on for clients")
	fs.StringVar(&o.websocket, "websocket", "", "host:port for a WebSocket listener (off when empty)")
	fs.StringVar(&o.monitor, "monitor", "", "host:port for the NATS HTTP monitoring endpoint (off when empty)")
	fs.StringVar(&o.serverName, "server-name", "roster", "name of the embedded server ($ServerName)")
	fs.StringVar(&o.syncInterval, "sync-interval", "always", `JetStream fsync: "always" (every write) or an interval such as 2m, which can lose acknowledged writes on a crash`)
	fs.StringSliceVar(&o.services, "services", []string{"auth", "registry", "lock", "messaging"}, "services to run")
	fs.StringVar(&o.natsURL, "nats-url", "", "join this NATS instead of embedding one")
	fs.StringVar(&o.natsUser, "nats-user", "", "user for --nats-url")
	fs.StringVar(&o.natsPassword, "nats-password", "", "password for --nats-url")
	fs.StringVar(&o.natsCreds, "nats-creds", "", "credentials file for --nats-url")
	fs.StringVar(&o.natsToken, "nats-token", "", "token for --nats-url")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 10*time.Second, "how long to wait for requests in flight when stopping")
	addAuthFlags(fs, &o.auth)
	annotateEnv(fs)
	return cmd
}

// module is a service that serve can run. Modules start in the order of modules()
// (the order of their dependencies) and stop in reverse.
type module struct {
	name  string
	start func(nc *nats.Conn, tp trace.TracerProvider, log *slog.Logger, drain time.Duration) (runner, error)
}

type runner interface {
	Run(ctx context.Context) error
}

// runFunc is a runner that also stops what its module started beside the service.
type runFunc func(ctx context.Context) error

func (f runFunc) Run(ctx context.Context) error { return f(ctx) }

func modules(o *serveOptions) []module {
	return []module{
		{"auth", func(nc *nats.Conn, tp trace.TracerProvider, log *slog.Logger, drain time.Duration) (runner, error) {
			return startAuth(&o.auth, nc, tp, log, drain)
		}},
		{"registry", func(nc *nats.Conn, tp trace.TracerProvider, log *slog.Logger, drain time.Duration) (runner, error) {
			// TODO(lead): pass the policy holder the auth service keeps up to date.
			return registry.New(nc, registry.Config{DrainTimeout: drain}, policy.NewHolder(policy.Development()), tp, log)
		}},
		{"lock", func(nc *nats.Conn, tp trace.TracerProvider, log *slog.Logger, drain time.Duration) (runner, error) {
			js, err := jetstream.New(nc)
			if err != nil {
				return nil, err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			view, err := sessions.Watch(ctx, js)
			if err != nil {
				return nil, err
			}
			// TODO(lead): pass the policy holder the auth service keeps up to date.
			svc, err := lock.New(nc, lock.Config{DrainTimeout: drain}, view, policy.NewHolder(policy.Development()), tp, log)
			if err != nil {
				view.Close()
				return nil, err
			}
			return runFunc(func(ctx context.Context) error {
				defer view.Close()
				return svc.Run(ctx)
			}), nil
		}},
		{"messaging", func(nc *nats.Conn, tp trace.TracerProvider, log *slog.Logger, drain time.Duration) (runner, error) {
			// TODO(lead): pass the policy holder the auth service keeps up to date.
			return messaging.New(nc, messaging.Config{DrainTimeout: drain}, policy.NewHolder(policy.Development()), tp, log)
		}},
	}
}

// selectModules returns the modules named in names, in dependency order.
func selectModules(o *serveOptions, names []string) ([]module, error) {
	all := modules(o)
	known := make([]string, len(all))
	for i, m := range all {
		known[i] = m.name
	}
	want := map[string]bool{}
	for _, n := range names {
		n = strings.TrimSpace(strings.ToLower(n))
		if n == "" {
			continue
		}
		if !slices.Contains(known, n) {
			return nil, usageError{fmt.Errorf("unknown service %q: choose from %s", n, strings.Join(known, ", "))}
		}
		want[n] = true
	}
	if len(want) == 0 {
		return nil, usageError{errors.New("--services names no service")}
	}
	var out []module
	for _, m := range all {
		if want[m.name] {
			out = append(out, m)
		}
	}
	return out, nil
}

func syncInterval(s string) (time.Duration, error) {
	if s == "" || s == "always" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, usageError{fmt.Errorf("--sync-interval %q: want \"always\" or a positive duration", s)}
	}
	return d, nil
}

func serve(ctx context.Context, o *serveOptions) error {
	log, err := newLogger(os.Stderr, o.logFormat, o.logLevel)
	if err != nil {
		return usageError{err}
	}
	mods, err := selectModules(o, o.services)
	if err != nil {
		return err
	}
	tp, shutdownTracing, err := telemetry.Setup(ctx, "roster", version)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdownTracing(sctx); err != nil {
			log.Warn("flushing traces", "err", err)
		}
	}()

	var connOpts []nats.Option
	if o.natsURL == "" {
		interval, err := syncInterval(o.syncInterval)
		if err != nil {
			return err
		}
		ecfg := embedded.Config{
			Name:           o.serverName,
			Listen:         o.listen,
			WebSocket:      o.websocket,
			Monitor:        o.monitor,
			DataDir:        o.dataDir,
			SyncInterval:   interval,
			AllowAnonymous: true,
		}
		if err := o.auth.configureEmbedded(&ecfg, mods, log); err != nil {
			return err
		}
		ns, err := embedded.Start(ecfg, log)
		if err != nil {
			return err
		}
		defer func() {
			ns.Stop()
			log.Info("embedded NATS server stopped")
		}()
		connOpts = ns.ServiceOptions()
		announce(log, ns, o, interval)
	} else {
		connOpts, err = externalOptions(o)
		if err != nil {
			return err
		}
		if err := o.auth.configureExternal(); err != nil {
			return usageError{err}
		}
	}
	return runModules(ctx, mods, o, connOpts, tp, log)
}

func externalOptions(o *serveOptions) ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case o.natsCreds != "":
		opts = append(opts, nats.UserCredentials(o.natsCreds))
	case o.natsUser != "":
		opts = append(opts, nats.UserInfo(o.natsUser, o.natsPassword))
	case o.natsToken != "":
		opts = append(opts, nats.Token(o.natsToken))
	}
	return opts, nil
}

func announce(log *slog.Logger, ns *embedded.Server, o *serveOptions, interval time.Duration) {
	fsync := "every write"
	if interval > 0 {
		fsync = "every " + interval.String() + " (acknowledged writes can be lost on a crash)"
	}
	attrs := []any{"url", ns.ClientURL(), "data_dir", o.dataDir, "fsync", fsync, "services", strings.Join(o.services, ",")}
	if ws := ns.WebsocketURL(); o.websocket != "" && ws != "" {
		attrs = append(attrs, "websocket", ws)
	}
	log.Info("roster listening", attrs...)
	log.Warn("development configuration: anonymous clients are admitted to the CLIENTS account")
	log.Info("connect with: nats --server " + ns.ClientURL() + " micro ls")
}

// runModules starts each module in order on its own connection, runs them until ctx
// ends or one fails, then stops them in reverse order.
func runModules(ctx context.Context, mods []module, o *serveOptions, connOpts []nats.Option, tp trace.TracerProvider, log *slog.Logger) error {
	type running struct {
		name   string
		nc     *nats.Conn
		cancel context.CancelFunc
		done   chan error
	}
	var started []*running
	failed := make(chan error, len(mods))
	stopAll := func() error {
		var errs []error
		for i := len(started) - 1; i >= 0; i-- {
			r := started[i]
			r.cancel()
			if err := <-r.done; err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", r.name, err))
			}
			if err := r.nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
				errs = append(errs, fmt.Errorf("%s: drain connection: %w", r.name, err))
			}
			log.Info("service stopped", "service", r.name)
		}
		return errors.Join(errs...)
	}
	for _, m := range mods {
		opts := append([]nats.Option{
			nats.Name("roster-" + m.name),
			nats.MaxReconnects(-1),
			nats.ReconnectWait(250 * time.Millisecond),
		}, connOpts...)
		nc, err := nats.Connect(o.natsURL, opts...)
		if err != nil {
			return errors.Join(fmt.Errorf("%s: connect: %w", m.name, err), stopAll())
		}
		svc, err := m.start(nc, tp, log, o.drainTimeout)
		if err != nil {
			nc.Close()
			return errors.Join(fmt.Errorf("%s: %w", m.name, err), stopAll())
		}
		mctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		r := &running{name: m.name, nc: nc, cancel: cancel, done: make(chan error, 1)}
		started = append(started, r)
		go func() {
			err := svc.Run(mctx)
			r.done <- err
			if err != nil {
				failed <- fmt.Errorf("%s: %w", m.name, err)
			}
		}()
		log.Info("service started", "service", m.name)
	}
	select {
	case <-ctx.Done():
		log.Info("stopping")
		return stopAll()
	case err := <-failed:
		log.Error("service failed; stopping", "err", err)
		return errors.Join(err, stopAll())
	}
}
