package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/services/auth"
)

// authOptions configure the auth service and the NATS auth callout.
type authOptions struct {
	policyFile      string
	usersFile       string
	authenticators  string
	jwtSecretFile   string
	jwtPublicKeys   string
	jwtIssuer       string
	jwtAudience     string
	jwtRolesClaim   string
	callout         bool
	calloutSeedFile string
	calloutAccount  string

	// Set by serve, not by flags.
	calloutConfig *auth.CalloutConfig
	embedded      bool
}

func addAuthFlags(fs *pflag.FlagSet, a *authOptions) {
	fs.StringVar(&a.policyFile, "policy", "", "YAML policy file stored at start, replacing the stored policy (default: keep the stored one; on the embedded server, the development policy if none is stored)")
	fs.StringVar(&a.usersFile, "users-file", "", "users file (bcrypt hashes, written by roster user add) for password credentials")
	fs.StringVar(&a.authenticators, "authenticators", "", "authenticator chain, in order, from users, jwt, anonymous (default: those configured, in that order)")
	fs.StringVar(&a.jwtSecretFile, "jwt-hmac-secret-file", "", "file holding the HS256 secret (at least 32 bytes) for JWT bearer tokens")
	fs.StringVar(&a.jwtPublicKeys, "jwt-public-keys", "", "PEM file of Ed25519 and RSA public keys verifying EdDSA and RS256 bearer tokens")
	fs.StringVar(&a.jwtIssuer, "jwt-issuer", "", "required iss of bearer tokens (unchecked when empty)")
	fs.StringVar(&a.jwtAudience, "jwt-audience", "", "required aud of bearer tokens (unchecked when empty)")
	fs.StringVar(&a.jwtRolesClaim, "jwt-roles-claim", "roles", "claim holding a bearer token's roles")
	fs.BoolVar(&a.callout, "auth-callout", true, "embedded server: authenticate every client connection with the auth service (NATS auth callout)")
	fs.StringVar(&a.calloutSeedFile, "auth-callout-seed-file", "", "with --nats-url: account seed (SA…) whose public key is the server's auth_callout issuer; the auth service then answers the callout")
	fs.StringVar(&a.calloutAccount, "auth-callout-account", embedded.ClientsAccount, "with --nats-url: account admitted connections are placed in")
}

// configureEmbedded turns the callout on for the embedded server when this process
// runs the auth service; without it the server would admit nobody.
func (a *authOptions) configureEmbedded(cfg *embedded.Config, mods []module, log *slog.Logger) error {
	a.embedded = true
	runsAuth := false
	for _, m := range mods {
		runsAuth = runsAuth || m.name == "auth"
	}
	if !a.callout || !runsAuth {
		log.Warn("auth callout off: client connections are not authenticated by Roster")
		return nil
	}
	kp, err := nkeys.CreateAccount()
	if err != nil {
		return fmt.Errorf("auth callout key: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return fmt.Errorf("auth callout key: %w", err)
	}
	cfg.CalloutIssuer = pub
	a.calloutConfig = &auth.CalloutConfig{Issuer: kp, Account: embedded.ClientsAccount}
	return nil
}

// configureExternal reads the callout issuer seed for a NATS cluster Roster joins.
func (a *authOptions) configureExternal() error {
	if a.calloutSeedFile == "" {
		return nil
	}
	seed, err := os.ReadFile(a.calloutSeedFile)
	if err != nil {
		return fmt.Errorf("--auth-callout-seed-file: %w", err)
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
	if err != nil {
		return fmt.Errorf("--auth-callout-seed-file: not an nkey seed")
	}
	a.calloutConfig = &auth.CalloutConfig{Issuer: kp, Account: a.calloutAccount}
	return nil
}

// startAuth builds the auth service's configuration from the flags and starts it.
func startAuth(a *authOptions, nc *nats.Conn, tp trace.TracerProvider, log *slog.Logger, drain time.Duration) (runner, error) {
	cfg := auth.Config{DrainTimeout: drain, Callout: a.calloutConfig}
	if a.policyFile != "" {
		p, err := policy.LoadFile(a.policyFile)
		if err != nil {
			return nil, usageError{err}
		}
		cfg.InitialPolicy = p
	} else if a.embedded {
		cfg.DefaultPolicy = policy.Development()
	}
	chain, err := a.chain()
	if err != nil {
		return nil, usageError{err}
	}
	cfg.Authenticators = chain
	svc, err := auth.New(nc, cfg, tp, log)
	if err != nil {
		return nil, err
	}
	if p := svc.Policy().Load(); p.Anonymous.Allowed && (p.Connections.SharedInbox || p.Connections.ServiceDiscovery) {
		log.Warn("DEVELOPMENT POLICY IN EFFECT: anonymous clients are admitted and connections share _INBOX.>; " +
			"never use this in production — give --policy (see docs/architecture.md, Auth and NATS security)")
	}
	return svc, nil
}

// chain builds the authenticator chain: the one --authenticators names, or every
// configured authenticator in the order users, jwt, anonymous.
func (a *authOptions) chain() ([]auth.Authenticator, error) {
	available := map[string]auth.Authenticator{"anonymous": auth.Anonymous()}
	order := []string{}
	if a.usersFile != "" {
		u, err := auth.NewUsersFile(a.usersFile)
		if err != nil {
			return nil, err
		}
		available["users"] = u
		order = append(order, "users")
	}
	if a.jwtSecretFile != "" || a.jwtPublicKeys != "" {
		cfg := auth.JWTConfig{Issuer: a.jwtIssuer, Audience: a.jwtAudience, RolesClaim: a.jwtRolesClaim}
		if a.jwtSecretFile != "" {
			secret, err := os.ReadFile(a.jwtSecretFile)
			if err != nil {
				return nil, fmt.Errorf("--jwt-hmac-secret-file: %w", err)
			}
			cfg.HMACSecret = []byte(strings.TrimSpace(string(secret)))
		}
		if a.jwtPublicKeys != "" {
			data, err := os.ReadFile(a.jwtPublicKeys)
			if err != nil {
				return nil, fmt.Errorf("--jwt-public-keys: %w", err)
			}
			if cfg.PublicKeys, err = auth.ParsePublicKeys(data); err != nil {
				return nil, err
			}
		}
		j, err := auth.NewJWT(cfg)
		if err != nil {
			return nil, err
		}
		available["jwt"] = j
		order = append(order, "jwt")
	}
	order = append(order, "anonymous")
	list := a.authenticators
	if list == "" {
		list = strings.Join(order, ",")
	}
	chain, err := auth.ParseChain(list, available)
	if err != nil {
		return nil, errors.New("--authenticators: " + strings.TrimPrefix(err.Error(), "auth: "))
	}
	return chain, nil
}
