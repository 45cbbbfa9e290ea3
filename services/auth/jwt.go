package auth

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// JWTConfig configures the JWT bearer authenticator. At least one key is required.
type JWTConfig struct {
	// HMACSecrets verify HS256 tokens, each at least 32 bytes: a token signed with
	// any of them is accepted, so that a new secret can be added before tokens are
	// signed with it and the old one removed after.
	HMACSecrets [][]byte
	// PublicKeys verify EdDSA (ed25519.PublicKey) and RS256 (*rsa.PublicKey) tokens.
	PublicKeys []crypto.PublicKey
	// Issuer and Audience, when set, must match the token's iss and aud.
	Issuer   string
	Audience string
	// RolesClaim names the claim holding the roles: an array of strings, or one
	// string of roles separated by commas or spaces. Default "roles".
	RolesClaim string
	// PropertyClaims maps claim names to the session properties they set (string
	// claims only; others are ignored).
	PropertyClaims map[string]string
	// Leeway tolerates clock skew when checking exp and nbf (default 5s).
	Leeway time.Duration
	// Now returns the current time (default time.Now); tests set it.
	Now func() time.Time
}

// JWT authenticates signed JWT bearer tokens: the principal is the sub claim, the
// roles come from the configured claim, exp is required and exp and nbf are checked.
type JWT struct {
	cfg      JWTConfig
	parser   *jwt.Parser
	methods  []string
	hmacKeys []jwt.VerificationKey
	edKeys   []jwt.VerificationKey
	rsaKeys  []jwt.VerificationKey
}

// Minimum key sizes.
const (
	MinHMACSecret = 32
	MinRSABits    = 2048
)

// NewJWT returns a JWT authenticator.
func NewJWT(cfg JWTConfig) (*JWT, error) {
	if cfg.RolesClaim == "" {
		cfg.RolesClaim = "roles"
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	for claim, prop := range cfg.PropertyClaims {
		if !policy.ValidPropertyKey(prop) || prop[0] == '$' {
			return nil, fmt.Errorf("auth: jwt: claim %q: invalid property key %q", claim, prop)
		}
	}
	a := &JWT{cfg: cfg}
	for _, secret := range cfg.HMACSecrets {
		if len(secret) < MinHMACSecret {
			return nil, fmt.Errorf("auth: jwt: HMAC secret is %d bytes; want at least %d", len(secret), MinHMACSecret)
		}
		a.hmacKeys = append(a.hmacKeys, secret)
	}
	if len(a.hmacKeys) > 0 {
		a.methods = append(a.methods, jwt.SigningMethodHS256.Alg())
	}
	for _, k := range cfg.PublicKeys {
		switch k := k.(type) {
		case ed25519.PublicKey:
			a.edKeys = append(a.edKeys, k)
		case *rsa.PublicKey:
			if k.N.BitLen() < MinRSABits {
				return nil, fmt.Errorf("auth: jwt: RSA key has %d bits; want at least %d", k.N.BitLen(), MinRSABits)
			}
			a.rsaKeys = append(a.rsaKeys, k)
		default:
			return nil, fmt.Errorf("auth: jwt: unsupported public key type %T", k)
		}
	}
	if len(a.edKeys) > 0 {
		a.methods = append(a.methods, jwt.SigningMethodEdDSA.Alg())
	}
	if len(a.rsaKeys) > 0 {
		a.methods = append(a.methods, jwt.SigningMethodRS256.Alg())
	}
	if len(a.methods) == 0 {
		return nil, errors.New("auth: jwt: no key configured")
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(a.methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(cfg.Now),
		jwt.WithStrictDecoding(),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	a.parser = jwt.NewParser(opts...)
	return a, nil
}

// Name implements Authenticator.
func (a *JWT) Name() string { return "jwt" }

// Authenticate implements Authenticator.
func (a *JWT) Authenticate(_ context.Context, at *Attempt) (Decision, error) {
	if at.Credentials.Type != wire.CredentialsJWT {
		return Decision{Verdict: Abstain}, nil
	}
	c, err := a.Verify(at.Credentials.Token)
	if err != nil {
		return Decision{Verdict: Deny, Reason: err.Error()}, nil
	}
	return Decision{Verdict: Allow, Principal: c.Principal, Roles: c.Roles, Properties: c.Properties, Expires: c.Expires}, nil
}

// Claims is what a verified token says.
type Claims struct {
	Principal  string
	Roles      []string
	Properties map[string]string
	Expires    time.Time
}

// Token errors. Their messages are safe to show a client: they describe the token,
// never the secret or the token itself.
var (
	ErrTokenMalformed = errors.New("token malformed")
	ErrTokenSignature = errors.New("token signature invalid")
	ErrTokenExpired   = errors.New("token expired")
	ErrTokenNotYet    = errors.New("token not valid yet")
	ErrTokenClaims    = errors.New("token claims invalid")
)

// Verify checks a token's signature and claims.
func (a *JWT) Verify(token string) (*Claims, error) {
	if token == "" || len(token) > MaxTokenLength {
		return nil, ErrTokenMalformed
	}
	mc := jwt.MapClaims{}
	_, err := a.parser.ParseWithClaims(token, mc, a.key)
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, ErrTokenExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return nil, ErrTokenNotYet
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return nil, ErrTokenSignature
	case errors.Is(err, jwt.ErrTokenMalformed):
		return nil, ErrTokenMalformed
	default:
		return nil, ErrTokenClaims
	}
	sub, err := mc.GetSubject()
	if err != nil || sub == "" || len(sub) > MaxUsernameLength {
		return nil, fmt.Errorf("%w: sub is missing", ErrTokenClaims)
	}
	roles, err := claimRoles(mc[a.cfg.RolesClaim])
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrTokenClaims, a.cfg.RolesClaim, err)
	}
	props := map[string]string{}
	for claim, prop := range a.cfg.PropertyClaims {
		if v, ok := mc[claim].(string); ok {
			props[prop] = v
		}
	}
	exp, _ := mc.GetExpirationTime()
	c := &Claims{Principal: sub, Roles: roles, Properties: props}
	if exp != nil {
		c.Expires = exp.Time
	}
	return c, nil
}

func (a *JWT) key(t *jwt.Token) (any, error) {
	switch t.Method.Alg() {
	case jwt.SigningMethodHS256.Alg():
		return jwt.VerificationKeySet{Keys: a.hmacKeys}, nil
	case jwt.SigningMethodEdDSA.Alg():
		return jwt.VerificationKeySet{Keys: a.edKeys}, nil
	case jwt.SigningMethodRS256.Alg():
		return jwt.VerificationKeySet{Keys: a.rsaKeys}, nil
	}
	return nil, jwt.ErrTokenUnverifiable
}

func claimRoles(v any) ([]string, error) {
	var roles []string
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		roles = strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' })
	case []any:
		for _, r := range v {
			s, ok := r.(string)
			if !ok {
				return nil, errors.New("roles must be strings")
			}
			roles = append(roles, s)
		}
	default:
		return nil, errors.New("roles must be a string or an array of strings")
	}
	for _, r := range roles {
		if r == "" || len(r) > 128 || strings.ContainsAny(r, "\"'") {
			return nil, fmt.Errorf("invalid role %q", r)
		}
	}
	return roles, nil
}

// ParsePublicKeys reads PEM-encoded public keys (PKIX "PUBLIC KEY" blocks, or
// "RSA PUBLIC KEY") for JWTConfig.PublicKeys.
func ParsePublicKeys(data []byte) ([]crypto.PublicKey, error) {
	var keys []crypto.PublicKey
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		switch b.Type {
		case "PUBLIC KEY":
			k, err := x509.ParsePKIXPublicKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("auth: jwt: public key: %w", err)
			}
			keys = append(keys, k)
		case "RSA PUBLIC KEY":
			k, err := x509.ParsePKCS1PublicKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("auth: jwt: public key: %w", err)
			}
			keys = append(keys, k)
		default:
			return nil, fmt.Errorf("auth: jwt: unexpected PEM block %q", b.Type)
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("auth: jwt: no PEM public key found")
	}
	return keys, nil
}
