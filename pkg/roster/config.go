package roster

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/services/auth"
	"github.com/seed-3c836eab/roster/services/lock"
	"github.com/seed-3c836eab/roster/services/messaging"
	"github.com/seed-3c836eab/roster/services/registry"
)

// ServiceNames lists the services in dependency order.
var ServiceNames = []string{"auth", "registry", "lock", "messaging"}

// Config configures a Roster process.
type Config struct {
	// Services names the services to run (default: all; "none" runs only the
	// embedded NATS server, e.g. as one node of a cluster).
	Services []string
	// NATSURL, when set, joins that NATS instead of embedding a server; NATSOptions
	// carry its credentials.
	NATSURL     string
	NATSOptions []nats.Option
	// Embedded configures the embedded server when NATSURL is empty.
	Embedded embedded.Config
	// Auth configures the auth service and the auth callout.
	Auth AuthConfig
	// Replicas is the number of copies of every bucket and stream the services
	// create: 1 on one server, 3 on a production cluster. Every process of a
	// deployment must use the same value: a service applies it to what it creates.
	Replicas int
	// StartTimeout bounds how long a service's start is retried while NATSURL does not
	// accept connections or JetStream does not answer yet (default 1 minute).
	StartTimeout time.Duration
	// DrainTimeout bounds how long stopping the process waits for the services'
	// requests in flight and then for their connections to drain, in all: the
	// services stop together, by one deadline (Process.Stop).
	DrainTimeout time.Duration
	// TracerProvider receives the services' spans (default: no export).
	TracerProvider trace.TracerProvider
	// MeterProvider receives the services' metrics (default: none recorded).
	MeterProvider metric.MeterProvider
	// Registry, Lock and Messaging tune the services this process runs — limits,
	// timeouts, bounds; zero fields take each service's defaults. DrainTimeout,
	// Replicas, MeterProvider and the sessions view the process shares are set from
	// the fields above and the process, whatever these hold.
	Registry  registry.Config
	Lock      lock.Config
	Messaging messaging.Config
}

// AuthConfig configures authentication and the policy.
type AuthConfig struct {
	// PolicyFile, when set, is stored at start, replacing the stored policy.
	// Without it the stored policy is kept; on the embedded server, the development
	// policy is stored when there is none.
	PolicyFile string
	// UsersFile holds password credentials (roster user add writes it).
	UsersFile string
	// Authenticators is the chain, in order, from users, jwt, anonymous (default:
	// those configured, in that order).
	Authenticators string
	// JWT bearer tokens: an HS256 secret file, a PEM file of Ed25519/RSA public keys,
	// the required issuer and audience, and the claim holding roles.
	JWTSecretFile, JWTPublicKeys, JWTIssuer, JWTAudience, JWTRolesClaim string
	// DisableCallout turns the NATS auth callout off on the embedded server: client
	// connections are then not authenticated by Roster.
	DisableCallout bool
	// CalloutSeedFile is the account seed (SA…) whose public key is the auth
	// callout's issuer. Every node of a cluster and every auth instance must share
	// it: an embedded node configures its callout with the public key, an auth
	// service answers the callout with it, placing clients in CalloutAccount
	// (default CLIENTS). Without it, an embedded server running the auth service
	// generates a key per start.
	CalloutSeedFile string
	CalloutAccount  string
}

// ConfigError reports a configuration mistake (a usage error on the command line).
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

func configErr(format string, args ...any) error {
	return &ConfigError{Err: fmt.Errorf(format, args...)}
}

// selected returns the services to run, in dependency order.
func (c *Config) selected() ([]string, error) {
	if len(c.Services) == 0 {
		return ServiceNames, nil
	}
	if len(c.Services) == 1 && strings.EqualFold(strings.TrimSpace(c.Services[0]), "none") {
		return nil, nil
	}
	want := map[string]bool{}
	for _, n := range c.Services {
		n = strings.TrimSpace(strings.ToLower(n))
		if n == "" {
			continue
		}
		if !slices.Contains(ServiceNames, n) {
			return nil, configErr("unknown service %q: choose from %s", n, strings.Join(ServiceNames, ", "))
		}
		want[n] = true
	}
	if len(want) == 0 {
		return nil, configErr("no service named")
	}
	var out []string
	for _, n := range ServiceNames {
		if want[n] {
			out = append(out, n)
		}
	}
	return out, nil
}

// calloutIssuer returns the auth callout's issuer key: the configured seed (a cluster
// shares one, so every node and every auth instance agree), else a fresh key when
// this process embeds the server and runs the auth service. nil means no callout.
func (c *Config) calloutIssuer(embeddedServer, runsAuth bool) (nkeys.KeyPair, error) {
	if c.Auth.DisableCallout {
		return nil, nil
	}
	if c.Auth.CalloutSeedFile != "" {
		seed, err := os.ReadFile(c.Auth.CalloutSeedFile)
		if err != nil {
			return nil, configErr("auth callout seed file: %w", err)
		}
		kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
		if err != nil {
			return nil, configErr("auth callout seed file: not an nkey seed")
		}
		// The issuer is an account key: another kind (a user seed such as
		// gensecrets' admin.nk) was refused only later, by the embedded server's
		// configuration or the auth service once connected.
		if pub, err := kp.PublicKey(); err != nil || !nkeys.IsValidPublicAccountKey(pub) {
			return nil, configErr("auth callout seed file %s: not an account seed (SA…, as gensecrets' callout.nk)", c.Auth.CalloutSeedFile)
		}
		return kp, nil
	}
	if !embeddedServer || !runsAuth {
		return nil, nil
	}
	kp, err := nkeys.CreateAccount()
	if err != nil {
		return nil, fmt.Errorf("auth callout key: %w", err)
	}
	return kp, nil
}

// authConfig builds the auth service's configuration.
func (c *Config) authConfig(issuer nkeys.KeyPair, embeddedServer bool) (auth.Config, error) {
	cfg := auth.Config{DrainTimeout: c.DrainTimeout, Replicas: c.Replicas}
	if issuer != nil {
		account := c.Auth.CalloutAccount
		if account == "" {
			account = embedded.ClientsAccount
		}
		cfg.Callout = &auth.CalloutConfig{Issuer: issuer, Account: account}
	}
	if c.Auth.PolicyFile != "" {
		p, err := policy.LoadFile(c.Auth.PolicyFile)
		if err != nil {
			return cfg, &ConfigError{Err: err}
		}
		cfg.InitialPolicy = p
	} else if embeddedServer {
		cfg.DefaultPolicy = policy.Development()
	}
	chain, err := c.chain()
	if err != nil {
		return cfg, &ConfigError{Err: err}
	}
	cfg.Authenticators = chain
	return cfg, nil
}

// chain builds the authenticator chain: the one Authenticators names, or every
// configured authenticator in the order users, jwt, anonymous.
func (c *Config) chain() ([]auth.Authenticator, error) {
	a := c.Auth
	available := map[string]auth.Authenticator{"anonymous": auth.Anonymous()}
	order := []string{}
	if a.UsersFile != "" {
		u, err := auth.NewUsersFile(a.UsersFile)
		if err != nil {
			return nil, err
		}
		available["users"] = u
		order = append(order, "users")
	}
	if a.JWTSecretFile != "" || a.JWTPublicKeys != "" {
		cfg := auth.JWTConfig{Issuer: a.JWTIssuer, Audience: a.JWTAudience, RolesClaim: a.JWTRolesClaim}
		j, err := auth.NewJWTFiles(cfg, a.JWTSecretFile, a.JWTPublicKeys)
		if err != nil {
			return nil, err
		}
		available["jwt"] = j
		order = append(order, "jwt")
	}
	order = append(order, "anonymous")
	list := a.Authenticators
	if list == "" {
		list = strings.Join(order, ",")
	}
	chain, err := auth.ParseChain(list, available)
	if err != nil {
		return nil, errors.New("authenticators: " + strings.TrimPrefix(err.Error(), "auth: "))
	}
	return chain, nil
}
