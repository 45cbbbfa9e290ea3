package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/roster"
	"github.com/seed-3c836eab/roster/pkg/telemetry"
	"github.com/seed-3c836eab/roster/pkg/version"
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
	natsTLS      tlsFiles
	tls          embedded.TLS
	logFormat    string
	logLevel     string
	drainTimeout time.Duration
	auth         roster.AuthConfig
	callout      bool
	cluster      embedded.Cluster
	servicePass  string
	systemPass   string
	healthListen string
	replicas     int
	tuning       tuning
	// stderr receives the log (os.Stderr when nil).
	stderr io.Writer
	// changed reports whether a flag was set, on the command line or through its
	// environment variable.
	changed func(name string) bool
	// source names where a set flag's value came from, for an error about it: the
	// flag, or its environment variable when only that set it.
	source func(name string) string
}

// embeddedOnly are the flags of the embedded server: with --nats-url they would
// do nothing. (The --tls flags have their own message.)
var embeddedOnly = []string{"data-dir", "listen", "websocket", "monitor", "server-name", "sync-interval",
	"cluster-name", "cluster-listen", "routes", "service-password", "system-password"}

// clusterOnly are the flags of the cluster --cluster-listen makes the embedded
// server a node of: without it they would do nothing.
var clusterOnly = []string{"cluster-name", "routes"}

// natsURLOnly are the flags of --nats-url: without it they would do nothing, and
// --auth-callout-account would place clients in an account the embedded server
// does not have.
var natsURLOnly = []string{"nats-user", "nats-password", "nats-creds", "nats-token", "auth-callout-account"}

func newServeCmd() *cobra.Command {
	cmd, _ := serveCommand()
	return cmd
}

// serveCommand returns serve and the options its flags set.
func serveCommand() (*cobra.Command, *serveOptions) {
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
  roster serve --policy policy.yaml --users-file users.yaml
  ROSTER_NATS_PASSWORD=… roster serve --services lock --nats-url nats://nats-0:4222 --nats-user roster-service --replicas 3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if onCommandLine(cmd, "output") {
				// ROSTER_OUTPUT is left alone: it is exported for the client commands.
				return usageError{errors.New("serve has no output but its log: --output does not apply (--log-format json logs JSON)")}
			}
			o.stderr = cmd.ErrOrStderr()
			o.changed = cmd.Flags().Changed
			o.source = func(name string) string { return flagSource(cmd, name) }
			return serve(cmd.Context(), o)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.dataDir, "data-dir", "./data", "directory for the embedded server's JetStream storage")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:4222", "host:port the embedded server listens on for clients (port 0: any free one)")
	fs.StringVar(&o.websocket, "websocket", "", "host:port for a WebSocket listener (off when empty; port 0: any free one)")
	fs.StringVar(&o.monitor, "monitor", "", "host:port for the NATS HTTP monitoring endpoint (off when empty; port 0: any free one)")
	fs.StringVar(&o.serverName, "server-name", "roster", "name of the embedded server ($ServerName)")
	fs.StringVar(&o.syncInterval, "sync-interval", "always", `JetStream fsync: "always" (every write) or an interval such as 2m, which can lose acknowledged writes on a crash`)
	fs.StringSliceVar(&o.services, "services", roster.ServiceNames, `services to run ("none": only the embedded NATS server, e.g. a cluster node)`)
	fs.StringVar(&o.natsURL, "nats-url", "", "join this NATS instead of embedding one")
	fs.StringVar(&o.natsUser, "nats-user", "", "user for --nats-url")
	fs.StringVar(&o.natsPassword, "nats-password", "", "password for --nats-url")
	fs.StringVar(&o.natsCreds, "nats-creds", "", "credentials file for --nats-url")
	fs.StringVar(&o.natsToken, "nats-token", "", "token for --nats-url")
	fs.StringVar(&o.natsTLS.ca, "nats-tls-ca", "", "CA certificates (PEM) that --nats-url's server certificate is checked against (default: the system's)")
	fs.StringVar(&o.natsTLS.cert, "nats-tls-cert", "", "client certificate (PEM) for --nats-url, when its servers require one (with --nats-tls-key)")
	fs.StringVar(&o.natsTLS.key, "nats-tls-key", "", "private key (PEM) of --nats-tls-cert")
	fs.StringVar(&o.tls.CertFile, "tls-cert", "", "certificate (PEM) of the embedded server: its client and WebSocket listeners then require TLS (with --tls-key)")
	fs.StringVar(&o.tls.KeyFile, "tls-key", "", "private key (PEM) of --tls-cert")
	fs.StringVar(&o.tls.ClientCAFile, "tls-client-ca", "", "CA certificates (PEM): the embedded server's listeners then require client certificates they signed (mutual TLS)")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 10*time.Second, "how long stopping waits for the services' requests in flight and their connections to drain, in all (the services stop together)")
	fs.StringVar(&o.cluster.Name, "cluster-name", "roster", "name of the NATS cluster the embedded server joins (with --cluster-listen)")
	fs.StringVar(&o.cluster.Listen, "cluster-listen", "", "host:port for cluster routes (port 0: any free one): makes the embedded server a node of a NATS cluster with clustered JetStream")
	fs.StringSliceVar(&o.cluster.Routes, "routes", nil, "route URLs of the other cluster nodes (nats://host:port, comma-separated)")
	fs.StringVar(&o.servicePass, "service-password", "", "password of the services' user (random per start when empty; every node of a cluster needs the same)")
	fs.StringVar(&o.systemPass, "system-password", "", "password of the system user (random per start when empty; every node of a cluster needs the same: it authenticates the routes too)")
	fs.IntVar(&o.replicas, "replicas", 1, "copies of every bucket and stream the services create, 1 to 5, above 1 only on a cluster (3 on a production cluster; the same in every process)")
	fs.StringVar(&o.healthListen, "health-listen", "", "host:port for HTTP probes: GET /livez and /readyz (off when empty)")
	addAuthFlags(fs, o)
	o.tuning.register(fs)
	annotateEnv(fs)
	return cmd, o
}

func addAuthFlags(fs *pflag.FlagSet, o *serveOptions) {
	a := &o.auth
	fs.StringVar(&a.PolicyFile, "policy", "", "YAML policy file stored at start, replacing the stored policy (default: keep the stored one; on the embedded server, the development policy if none is stored)")
	fs.StringVar(&a.UsersFile, "users-file", "", "users file (bcrypt hashes, written by roster user add) for password credentials")
	fs.StringVar(&a.Authenticators, "authenticators", "", "authenticator chain, in order, from users, jwt, anonymous (default: those configured, in that order)")
	fs.StringVar(&a.JWTSecretFile, "jwt-hmac-secret-file", "", "file of HS256 secrets for JWT bearer tokens, one a line (each at least 32 bytes; read again when it changes)")
	fs.StringVar(&a.JWTPublicKeys, "jwt-public-keys", "", "PEM file of Ed25519 and RSA public keys verifying EdDSA and RS256 bearer tokens (read again when it changes)")
	fs.StringVar(&a.JWTIssuer, "jwt-issuer", "", "required iss of bearer tokens (unchecked when empty)")
	fs.StringVar(&a.JWTAudience, "jwt-audience", "", "required aud of bearer tokens (unchecked when empty)")
	fs.StringVar(&a.JWTRolesClaim, "jwt-roles-claim", "roles", "claim holding a bearer token's roles")
	fs.BoolVar(&o.callout, "auth-callout", true, "embedded server: authenticate every client connection with the auth service (NATS auth callout)")
	fs.StringVar(&a.CalloutSeedFile, "auth-callout-seed-file", "", "account seed (SA…) of the auth callout issuer, the same on every node and auth instance of a cluster: the embedded server's callout trusts its public key, the auth service answers the callout with it (default: a key per start)")
	fs.StringVar(&a.CalloutAccount, "auth-callout-account", embedded.ClientsAccount, "with --nats-url: account admitted connections are placed in")
}

func (o *serveOptions) syncIntervalValue() (time.Duration, error) {
	s := o.syncInterval
	if s == "" || s == "always" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, usageError{fmt.Errorf("%s %q: want \"always\" or a positive duration", o.flag("sync-interval"), s)}
	}
	return d, nil
}

func (o *serveOptions) config() (roster.Config, error) {
	interval, err := o.syncIntervalValue()
	if err != nil {
		return roster.Config{}, err
	}
	switch t := o.tls; {
	case o.natsURL != "" && (t.CertFile != "" || t.KeyFile != "" || t.ClientCAFile != ""):
		return roster.Config{}, usageError{errors.New("--tls-cert, --tls-key and --tls-client-ca configure the embedded server; with --nats-url configure TLS on your NATS servers")}
	case o.natsURL == "" && o.natsTLS.set():
		return roster.Config{}, usageError{errors.New("--nats-tls-ca, --nats-tls-cert and --nats-tls-key go with --nats-url")}
	case (t.CertFile == "") != (t.KeyFile == ""):
		return roster.Config{}, usageError{errors.New("--tls-cert and --tls-key go together")}
	case t.ClientCAFile != "" && t.CertFile == "":
		return roster.Config{}, usageError{errors.New("--tls-client-ca needs --tls-cert and --tls-key")}
	}
	if err := o.checkMode(); err != nil {
		return roster.Config{}, err
	}
	if err := o.checkServices(); err != nil {
		return roster.Config{}, err
	}
	if err := o.checkDependents(); err != nil {
		return roster.Config{}, err
	}
	if err := o.checkValues(); err != nil {
		return roster.Config{}, err
	}
	if err := o.checkAddresses(); err != nil {
		return roster.Config{}, err
	}
	cfg := roster.Config{
		Services: o.services,
		NATSURL:  o.natsURL,
		Embedded: embedded.Config{
			Name:            o.serverName,
			Listen:          o.listen,
			WebSocket:       o.websocket,
			Monitor:         o.monitor,
			DataDir:         o.dataDir,
			SyncInterval:    interval,
			Cluster:         o.cluster,
			ServicePassword: o.servicePass,
			SystemPassword:  o.systemPass,
			TLS:             o.tls,
		},
		Auth:         o.auth,
		Replicas:     o.replicas,
		DrainTimeout: o.drainTimeout,
		Registry:     o.tuning.registry,
		Lock:         o.tuning.lock,
		Messaging:    o.tuning.messaging,
	}
	cfg.Auth.DisableCallout = !o.callout
	switch {
	case o.natsCreds != "":
		cfg.NATSOptions = append(cfg.NATSOptions, nats.UserCredentials(o.natsCreds))
	case o.natsUser != "":
		cfg.NATSOptions = append(cfg.NATSOptions, nats.UserInfo(o.natsUser, o.natsPassword))
	case o.natsToken != "":
		cfg.NATSOptions = append(cfg.NATSOptions, nats.Token(o.natsToken))
	}
	if err := checkReadable("--nats-creds", o.natsCreds); err != nil {
		return roster.Config{}, err
	}
	tlsOpts, err := o.natsTLS.options("--nats-tls")
	if err != nil {
		return roster.Config{}, err
	}
	cfg.NATSOptions = append(cfg.NATSOptions, tlsOpts...)
	return cfg, nil
}

// checkMode refuses flags that would do nothing in the mode chosen (embedded server
// or --nats-url), and credentials for --nats-url of which only one would be used.
func (o *serveOptions) checkMode() error {
	if o.changed == nil {
		return nil
	}
	given := o.given
	if o.natsURL != "" {
		if g := given(embeddedOnly); len(g) == 1 {
			return usageError{fmt.Errorf("%s configures the embedded server: with --nats-url it does nothing", g[0])}
		} else if len(g) > 1 {
			return usageError{fmt.Errorf("%s configure the embedded server: with --nats-url they do nothing", strings.Join(g, ", "))}
		}
		if o.changed("auth-callout") {
			// Not nothing: with a seed file, false stopped the auth service from
			// answering the callout, and then nobody could connect.
			return usageError{errors.New("--auth-callout configures the embedded server; with --nats-url the auth service answers the callout when given --auth-callout-seed-file, and not without")}
		}
	} else if g := given(natsURLOnly); len(g) == 1 {
		return usageError{fmt.Errorf("%s goes with --nats-url", g[0])}
	} else if len(g) > 1 {
		return usageError{fmt.Errorf("%s go with --nats-url", strings.Join(g, ", "))}
	} else if g := given(clusterOnly); len(g) > 0 && o.cluster.Listen == "" {
		// A node given its peers' routes but no --cluster-listen started alone,
		// with JetStream of its own, and said nothing.
		verb := "goes"
		if len(g) > 1 {
			verb = "go"
		}
		return usageError{fmt.Errorf("%s %s with --cluster-listen: without it the embedded server is no cluster node", strings.Join(g, ", "), verb)}
	}
	if g := given([]string{"nats-creds", "nats-user", "nats-token"}); len(g) > 1 {
		return usageError{fmt.Errorf("%s: give one kind of credentials for --nats-url", strings.Join(g, ", "))}
	}
	if o.natsPassword != "" && o.natsUser == "" {
		// Named by its variable when that set it: gensecrets' roster.env holds only
		// ROSTER_NATS_PASSWORD.
		src := "--nats-password"
		if g := given([]string{"nats-password"}); len(g) == 1 {
			src = g[0]
		}
		return usageError{fmt.Errorf("%s needs --nats-user", src)}
	}
	return nil
}

// flag names the flag name as an error about its value should: with the variable
// that set it, when one did (flagSource).
func (o *serveOptions) flag(name string) string {
	if o.source != nil {
		return o.source(name)
	}
	return "--" + name
}

// given returns those of names that were given, each as the flag or, when only its
// environment variable set it, the flag and the variable.
func (o *serveOptions) given(names []string) []string {
	var out []string
	for _, n := range names {
		if o.changed(n) {
			out = append(out, o.flag(n))
		}
	}
	return out
}

// checkServices refuses flags that configure a service this process does not run
// (serviceFlags): a --session-timeout given to the lock service's process, or an
// auth flag to a process without the auth service, was ignored without a word. So
// were --auth-callout-seed-file with --nats-url in a process without auth, and
// --replicas in one that runs no service.
func (o *serveOptions) checkServices() error {
	if o.changed == nil {
		return nil
	}
	for _, n := range o.services {
		// A name that is no service is for the configuration's check to name
		// (unknown service), not a service the flags' would not run.
		if n = strings.ToLower(strings.TrimSpace(n)); n != "" && n != "none" && !slices.Contains(roster.ServiceNames, n) {
			return nil
		}
	}
	runs := func(service string) bool {
		if len(o.services) == 0 {
			return true
		}
		return slices.ContainsFunc(o.services, func(n string) bool { return strings.EqualFold(strings.TrimSpace(n), service) })
	}
	flags := serviceFlags
	if o.natsURL != "" {
		// Without the embedded server only the auth service reads the seed: the
		// NATS servers' callout holds its public key in their own configuration.
		flags = maps.Clone(serviceFlags)
		flags["auth-callout-seed-file"] = "auth"
	}
	var notRun, services []string
	for _, name := range slices.Sorted(maps.Keys(flags)) {
		if service := flags[name]; o.changed(name) && !runs(service) {
			notRun = append(notRun, name)
			if !slices.Contains(services, service) {
				services = append(services, service)
			}
		}
	}
	given := o.given(notRun)
	run := "--services " + strings.Join(o.services, ",")
	if len(given) > 0 {
		// Several flags of one service read "configure the auth service".
		verb, noun := "configures", "service"
		if len(given) > 1 {
			verb = "configure"
		}
		if len(services) > 1 {
			noun = "services"
		}
		return usageError{fmt.Errorf("%s %s the %s %s, which this process does not run (%s)", strings.Join(given, ", "), verb, strings.Join(services, " and "), noun, run)}
	}
	if len(o.services) == 1 && strings.EqualFold(strings.TrimSpace(o.services[0]), "none") {
		// A bare node's: only the services create buckets and streams. (The
		// default, 1, given on purpose does nothing either.)
		if g := o.given([]string{"replicas"}); len(g) == 1 {
			return usageError{fmt.Errorf("%s sets the copies of the buckets and streams the services create, and this process runs none (%s)", g[0], run)}
		}
	}
	return nil
}

// jwtOnly are the flags of the JWT authenticator, which only a key file makes.
var jwtOnly = []string{"jwt-issuer", "jwt-audience", "jwt-roles-claim"}

// checkDependents refuses flags that configure something another setting leaves
// out: the JWT authenticator's without a key file, and the callout's key with the
// callout off. They did nothing, without a word (the seed file was not even read).
func (o *serveOptions) checkDependents() error {
	if o.changed == nil {
		return nil
	}
	if g := o.given(jwtOnly); len(g) > 0 && o.auth.JWTSecretFile == "" && o.auth.JWTPublicKeys == "" {
		verb := "configures"
		if len(g) > 1 {
			verb = "configure"
		}
		return usageError{fmt.Errorf("%s %s the JWT authenticator, which needs --jwt-hmac-secret-file or --jwt-public-keys", strings.Join(g, ", "), verb)}
	}
	if g := o.given([]string{"auth-callout-seed-file"}); len(g) == 1 && !o.callout {
		return usageError{fmt.Errorf("%s is the auth callout's key: with --auth-callout=false it does nothing", g[0])}
	}
	return nil
}

// maxReplicas is the most copies JetStream keeps of a stream.
const maxReplicas = 5

// checkValues refuses numbers the process would otherwise change without a word: a
// --replicas below 1 became 1 and a --drain-timeout not above 0 became 10 s.
func (o *serveOptions) checkValues() error {
	switch {
	case o.replicas < 1 || o.replicas > maxReplicas:
		return usageError{fmt.Errorf("%s %d: want 1 to %d", o.flag("replicas"), o.replicas, maxReplicas)}
	case o.replicas > 1 && o.natsURL == "" && o.cluster.Listen == "":
		// JetStream refuses it after the server has started, with "replicas > 1 not
		// supported in non-clustered mode".
		return usageError{fmt.Errorf("%s %d needs a cluster: join one with --nats-url, or make the embedded server a node with --cluster-listen and --routes", o.flag("replicas"), o.replicas)}
	case o.cluster.Listen != "" && o.systemPass == "":
		// The routes authenticate with a password derived from it (pkg/embedded,
		// RoutePassword): one made up per start would admit no peer.
		return usageError{errors.New("--cluster-listen needs --system-password (or ROSTER_SYSTEM_PASSWORD), the same on every node: the nodes authenticate their routes with it")}
	case o.drainTimeout <= 0:
		return usageError{fmt.Errorf("%s %s: want a positive duration", o.flag("drain-timeout"), o.drainTimeout)}
	}
	if err := o.tuning.check(o.flag); err != nil {
		return err
	}
	return o.fitPrincipalRequests()
}

// checkAddresses refuses a listen address of the embedded server that is not a
// host:port with a port from 0 to 65535. nats-server read them in its configuration
// once the start had begun, and the process exited 1: "could not parse address
// string" naming no flag for --monitor and --cluster-listen, "listen address" for
// --listen, and a failed listen for --websocket.
func (o *serveOptions) checkAddresses() error {
	for _, a := range []struct{ flag, value string }{
		{"listen", o.listen}, {"websocket", o.websocket}, {"monitor", o.monitor}, {"cluster-listen", o.cluster.Listen},
	} {
		if a.value == "" || o.natsURL != "" { // off, or refused with --nats-url (checkMode)
			continue
		}
		_, port, err := net.SplitHostPort(a.value)
		if n, perr := strconv.Atoi(port); err == nil && (perr != nil || n < 0 || n > 65535) {
			err = fmt.Errorf("port %q is not a number from 0 to 65535", port)
		}
		if err != nil {
			name := "--" + a.flag
			if g := o.given([]string{a.flag}); len(g) == 1 {
				name = g[0]
			}
			return usageError{fmt.Errorf("%s %q: want host:port: %w", name, a.value, err)}
		}
	}
	return nil
}

// fitPrincipalRequests keeps the bound on one principal's requests in progress at
// most half of --max-requests (docs/architecture.md, "Flow control"): above it, the
// sessions of one principal could take every request an instance gathers. Left at
// its default, the bound follows a lower --max-requests down, as the messaging
// service's own default does; given above it, it is a usage error.
func (o *serveOptions) fitPrincipalRequests() error {
	m := &o.tuning.messaging
	limit := max(m.MaxRequests/2, 1)
	if m.MaxPrincipalRequests <= limit {
		return nil
	}
	if o.changed != nil && o.changed("max-principal-requests") {
		g := o.given([]string{"max-principal-requests"})
		return usageError{fmt.Errorf("%s %d: want at most half of --max-requests %d (%d), or one principal could take every request in progress", g[0], m.MaxPrincipalRequests, m.MaxRequests, limit)}
	}
	m.MaxPrincipalRequests = limit
	return nil
}

func serve(ctx context.Context, o *serveOptions) error {
	stderr := o.stderr
	if stderr == nil {
		stderr = os.Stderr
	}
	log, err := newLogger(stderr, o.logFormat, o.logLevel)
	if err != nil {
		return usageError{err}
	}
	cfg, err := o.config()
	if err != nil {
		return err
	}
	// An exporter that cannot reach its collector reports each failed export here;
	// OTel's default handler prints it unstructured on stderr.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("telemetry export failed", "err", err)
	}))
	tp, shutdownTracing, err := telemetry.Setup(ctx, "roster", version.Version)
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
	cfg.TracerProvider = tp
	mp, shutdownMetrics, err := telemetry.SetupMetrics(ctx, "roster", version.Version)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdownMetrics(sctx); err != nil {
			log.Warn("flushing metrics", "err", err)
		}
	}()
	cfg.MeterProvider = mp
	var health *healthServer
	if o.healthListen != "" {
		// Before anything starts: an address that cannot be listened on fails the
		// process at once, not once every service has started.
		if health, err = listenHealth(o.healthListen, log); err != nil {
			return err
		}
		defer health.stop()
	}
	p, err := roster.Start(ctx, cfg, log)
	var ce *roster.ConfigError
	if errors.As(err, &ce) {
		return usageError{err}
	}
	if err != nil {
		return o.explainRefusal(err)
	}
	// What this process runs, as it runs them: --services as given may be empty
	// (all four) or spelled in another case.
	services := cmp.Or(strings.Join(p.Services(), ","), "none")
	if s := p.Server(); s != nil {
		announce(log, s, o, cfg.Embedded.SyncInterval, services, p.Policy())
	}
	// What this process runs, in one line: the version a pod runs and whether its
	// telemetry goes anywhere are what an operator looks for first.
	log.Info("roster started", "version", version.Version, "services", services,
		"replicas", max(o.replicas, 1), "traces", telemetry.TracesExport(), "metrics", telemetry.MetricsExport())
	if health != nil {
		health.started(p)
	}
	return p.Wait(ctx)
}

// explainRefusal adds to a refusal of --nats-url's servers that no credentials
// were given, and how to give them: alone, nats.go's "Authorization Violation" reads
// as a wrong password. To a server certificate not trusted it adds --nats-tls-ca.
func (o *serveOptions) explainRefusal(err error) error {
	if o.natsURL != "" {
		err = explainUntrusted(err, "--nats-tls-ca", o.natsTLS.ca)
	}
	if o.natsURL == "" || !errors.Is(err, nats.ErrAuthorization) ||
		o.natsUser != "" || o.natsCreds != "" || o.natsToken != "" || strings.Contains(o.natsURL, "@") {
		return err
	}
	return fmt.Errorf("%w (no credentials were given: --nats-user with ROSTER_NATS_PASSWORD, --nats-creds or --nats-token)", err)
}

// healthServer serves the HTTP probes: 503 with "starting" until the process has
// started, then the process's health (roster.Process.HealthHandler).
type healthServer struct {
	srv     *http.Server
	process atomic.Pointer[http.Handler]
}

// startingHealth is what both probes answer while the services start.
var startingHealth = []byte(`{"live":false,"ready":false,"starting":true,"services":{}}` + "\n")

// listenHealth listens on addr and serves the probes until stop is called. A
// malformed address is a usage error.
func listenHealth(addr string, log *slog.Logger) (*healthServer, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		err = fmt.Errorf("--health-listen: %w", err)
		var malformed *net.AddrError
		if errors.As(err, &malformed) {
			return nil, usageError{err}
		}
		return nil, err
	}
	h := &healthServer{}
	starting := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write(startingHealth)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", starting)
	mux.HandleFunc("GET /readyz", starting)
	h.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := h.process.Load(); p != nil {
			(*p).ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})}
	go func() { _ = h.srv.Serve(l) }()
	log.Info("health probes listening", "addr", l.Addr().String(), "paths", "/livez /readyz")
	return h, nil
}

// started has the probes answer with p's health from now on.
func (h *healthServer) started(p *roster.Process) {
	handler := p.HealthHandler()
	h.process.Store(&handler)
}

func (h *healthServer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = h.srv.Shutdown(ctx)
}

func announce(log *slog.Logger, ns *embedded.Server, o *serveOptions, interval time.Duration, services string, pol *policy.Policy) {
	fsync := "every write"
	if interval > 0 {
		fsync = "every " + interval.String() + " (acknowledged writes can be lost on a crash)"
	}
	attrs := []any{"url", ns.ClientURL(), "data_dir", o.dataDir, "fsync", fsync, "services", services}
	if ws := ns.WebsocketURL(); o.websocket != "" && ws != "" {
		attrs = append(attrs, "websocket", ws)
	}
	if m := ns.MonitorAddr(); o.monitor != "" && m != nil {
		attrs = append(attrs, "monitor", "http://"+m.String())
	}
	log.Info("roster listening", attrs...)
	// The nats CLI has no connection key: it connects, gets replies and lists the
	// services only where the policy admits anonymous connections with a shared inbox
	// and service discovery, as the development policy does. Elsewhere the suggestion
	// failed with "Authorization Violation".
	if pol != nil && pol.Anonymous.Allowed && pol.Connections.SharedInbox && pol.Connections.ServiceDiscovery {
		log.Info("connect with: nats --server " + ns.ClientURL() + " micro ls")
	}
}
