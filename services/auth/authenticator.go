package auth

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// Verdict is an authenticator's answer.
type Verdict int

// The verdicts. The first authenticator in the chain that allows or denies decides;
// when all abstain the attempt is denied.
const (
	Abstain Verdict = iota
	Allow
	Deny
)

func (v Verdict) String() string {
	switch v {
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	default:
		return "abstain"
	}
}

// Attempt is what an authenticator judges.
type Attempt struct {
	// Credentials are never nil; Type is normalised (anonymous, password or jwt).
	Credentials *wire.Credentials
	// ClientIP is the client's address, when known.
	ClientIP string
	// Policy is the current policy.
	Policy *policy.Policy
}

// Decision is an authenticator's answer to an attempt.
type Decision struct {
	Verdict Verdict
	// Principal, Roles and Properties are set when Verdict is Allow. Principal is
	// empty for an anonymous session. Roles become the session's $Roles; Properties
	// are added to (and override) the proposed properties the policy accepted.
	Principal  string
	Roles      []string
	Properties map[string]string
	// Expires is when the credentials expire (a JWT's exp); zero if never. A NATS
	// connection admitted with them is closed then.
	Expires time.Time
	// Reason says why an attempt was denied. It is logged and, for JWTs, returned to
	// the client; it never says whether a user exists and never contains a secret.
	Reason string
}

// Authenticator judges credentials. Implementations must be safe for concurrent use.
type Authenticator interface {
	// Name identifies the authenticator in configuration and in responses.
	Name() string
	// Authenticate returns an error only when it cannot judge (e.g. storage is
	// unreadable); a judgement, including a denial, is a Decision.
	Authenticate(ctx context.Context, a *Attempt) (Decision, error)
}

// Limits on credentials; anything longer is denied before it is parsed.
const (
	MaxUsernameLength = 256
	MaxPasswordLength = 1024
	MaxTokenLength    = 8 << 10
)

// normalize fills in the credential type and checks sizes. It returns a copy.
func normalize(c *wire.Credentials) (*wire.Credentials, error) {
	var out wire.Credentials
	if c != nil {
		out = *c
	}
	if out.Type == "" {
		switch {
		case out.Token != "":
			out.Type = wire.CredentialsJWT
		case out.Username != "" || out.Password != "":
			out.Type = wire.CredentialsPassword
		default:
			out.Type = wire.CredentialsAnonymous
		}
	}
	switch out.Type {
	case wire.CredentialsAnonymous:
		if out.Username != "" || out.Password != "" || out.Token != "" {
			return nil, wire.Errorf(wire.CodeBadRequest, "anonymous credentials carry no username, password or token")
		}
	case wire.CredentialsPassword:
		if out.Token != "" {
			return nil, wire.Errorf(wire.CodeBadRequest, "password credentials carry no token")
		}
		if len(out.Username) > MaxUsernameLength || len(out.Password) > MaxPasswordLength {
			return nil, wire.Errorf(wire.CodeUnauthenticated, "invalid username or password")
		}
	case wire.CredentialsJWT:
		if out.Username != "" || out.Password != "" {
			return nil, wire.Errorf(wire.CodeBadRequest, "jwt credentials carry no username or password")
		}
		if len(out.Token) > MaxTokenLength {
			return nil, wire.Errorf(wire.CodeUnauthenticated, "token is longer than %d bytes", MaxTokenLength)
		}
	default:
		return nil, wire.Errorf(wire.CodeBadRequest, "credentials type %q: want anonymous, password or jwt", out.Type)
	}
	return &out, nil
}

// anonymous admits sessions without credentials when the policy allows them, with
// the roles the policy gives them.
type anonymous struct{}

// Anonymous returns the authenticator for sessions that present no credentials.
func Anonymous() Authenticator { return anonymous{} }

func (anonymous) Name() string { return "anonymous" }

func (anonymous) Authenticate(_ context.Context, a *Attempt) (Decision, error) {
	if a.Credentials.Type != wire.CredentialsAnonymous {
		return Decision{Verdict: Abstain}, nil
	}
	if a.Policy == nil || !a.Policy.Anonymous.Allowed {
		return Decision{Verdict: Deny, Reason: "anonymous sessions are not allowed"}, nil
	}
	return Decision{Verdict: Allow, Roles: append([]string(nil), a.Policy.Anonymous.Roles...)}, nil
}

// chain runs authenticators in order.
type chain []Authenticator

// decide returns the first allow or deny, and the name of the authenticator that
// gave it. When every authenticator abstains the result is a denial by "chain".
func (c chain) decide(ctx context.Context, a *Attempt) (Decision, string, error) {
	for _, au := range c {
		d, err := au.Authenticate(ctx, a)
		if err != nil {
			return Decision{}, au.Name(), fmt.Errorf("auth: authenticator %s: %w", au.Name(), err)
		}
		if d.Verdict != Abstain {
			return d, au.Name(), nil
		}
	}
	return Decision{Verdict: Deny, Reason: "no authenticator accepts " + a.Credentials.Type + " credentials"}, "chain", nil
}

// ParseChain turns a comma-separated list of authenticator names (users, jwt,
// anonymous) into a chain, in that order, from the authenticators given by name.
func ParseChain(list string, available map[string]Authenticator) ([]Authenticator, error) {
	var out []Authenticator
	seen := map[string]bool{}
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if seen[name] {
			return nil, fmt.Errorf("auth: authenticator %q listed twice", name)
		}
		seen[name] = true
		au, ok := available[name]
		if !ok || au == nil {
			return nil, fmt.Errorf("auth: authenticator %q is not configured", name)
		}
		out = append(out, au)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("auth: no authenticator in %q", list)
	}
	return out, nil
}
