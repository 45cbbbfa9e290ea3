package auth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"strings"
	"time"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// authenticate runs the chain for credentials presented from clientIP, vets the
// proposed properties and returns who the session is. Failures are counted per
// principal and per address; once either has used up its failures the attempt is
// throttled before the credentials are looked at. A failure never says whether the
// user exists.
func (s *Service) authenticate(ctx context.Context, creds *wire.Credentials, proposed map[string]string, clientIP string) (*admission, error) {
	c, err := normalize(creds)
	if err != nil {
		return nil, err
	}
	// How many properties may be proposed is the registry's limit (Limits.Properties,
	// --max-properties), checked before it asks: a change of principal sends all the
	// session holds, up to that limit. A bound of its own here (64, below the
	// registry's default 100) kept sessions with more from changing principal.
	var principal string
	if c.Type == wire.CredentialsPassword {
		principal = c.Username
	}
	pkey, akey := principalKey(principal), addressKey(clientIP)
	admitted, err := s.throttle.begin(ctx, pkey, akey)
	if err != nil {
		return nil, wire.Errorf(wire.CodeTimeout, "gave up waiting for this client's other attempts to be checked")
	}
	if !admitted {
		s.log.InfoContext(ctx, "authentication throttled", "type", c.Type, "principal", principal, "client_ip", clientIP)
		return nil, wire.Errorf(wire.CodeThrottled, "too many failed attempts; retry later")
	}
	pol := s.policy.Load()
	d, by, err := s.chain.decide(ctx, &Attempt{Credentials: c, ClientIP: clientIP, Policy: pol})
	if err != nil {
		s.throttle.end(false, "", pkey, akey)
		return nil, err
	}
	if d.Verdict != Allow {
		s.throttle.end(true, s.fingerprint(c, akey), pkey, akey)
		s.log.InfoContext(ctx, "authentication denied", "type", c.Type, "principal", principal,
			"client_ip", clientIP, "authenticator", by, "reason", d.Reason)
		return nil, denial(c.Type, d.Reason)
	}
	s.throttle.end(false, "", pkey, akey)
	s.throttle.succeed(principalKey(d.Principal))
	props, vetoed := pol.VetProperties(proposed)
	for k, v := range d.Properties {
		if !strings.HasPrefix(k, "$") {
			props[k] = v
		}
	}
	roles := d.Roles
	if roles == nil {
		roles = []string{}
	}
	s.log.DebugContext(ctx, "authenticated", "type", c.Type, "principal", d.Principal, "roles", roles,
		"authenticator", by, "vetoed", vetoed)
	return &admission{
		AuthenticateResponse: wire.AuthenticateResponse{
			Principal:     d.Principal,
			Roles:         roles,
			Properties:    maps.Clone(props),
			Authenticator: by,
		},
		Expires: d.Expires,
	}, nil
}

// admission is a successful authentication.
type admission struct {
	wire.AuthenticateResponse
	// Expires is when the credentials stop being valid (a JWT's exp); zero if never.
	Expires time.Time
}

// denial is the error a client sees. For passwords it is the same whether the user
// is unknown or the password wrong; for tokens it says what is wrong with the token
// (expired, badly signed, malformed), which reveals nothing about users.
func denial(typ, reason string) error {
	switch typ {
	case wire.CredentialsPassword:
		return wire.Errorf(wire.CodeUnauthenticated, "invalid username or password")
	case wire.CredentialsJWT:
		if reason == "" {
			reason = "token not accepted"
		}
		return wire.Errorf(wire.CodeUnauthenticated, "%s", reason)
	default:
		return wire.Errorf(wire.CodeUnauthenticated, "anonymous sessions are not allowed")
	}
}

// fingerprint identifies a failed attempt for the throttle's repeat check: the
// credentials presented and the address they came from, keyed with the instances'
// shared secret (repeatKey), so that the note other instances receive reveals
// nothing of the credentials.
func (s *Service) fingerprint(c *wire.Credentials, akey string) string {
	m := hmac.New(sha256.New, s.repeatKey)
	for _, part := range []string{c.Type, c.Username, c.Password, c.Token, akey} {
		m.Write([]byte(part))
		m.Write([]byte{0})
	}
	return hex.EncodeToString(m.Sum(nil)[:16])
}
