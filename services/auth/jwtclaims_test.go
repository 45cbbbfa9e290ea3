package auth

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestJWTIssuerAndAudience: with an issuer and an audience configured, a token is
// accepted only when its iss is the issuer exactly and its aud names the audience
// (alone or in a list); claims of the wrong type are refused, never read as absent.
func TestJWTIssuerAndAudience(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	a, err := NewJWT(JWTConfig{HMACSecrets: [][]byte{secret}, Audience: "roster", Issuer: "iss"})
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).Unix()
	tests := []struct {
		name   string
		claims jwt.MapClaims
		roles  []string // nil: refused
	}{
		{"valid", jwt.MapClaims{"sub": "x", "exp": exp, "iss": "iss", "aud": "roster", "roles": []any{"a"}}, []string{"a"}},
		{"audience in a list, roles as one string", jwt.MapClaims{"sub": "x", "exp": exp, "iss": "iss", "aud": []any{"a", "roster"}, "roles": "admin, ops"}, []string{"admin", "ops"}},
		{"no aud", jwt.MapClaims{"sub": "x", "exp": exp, "iss": "iss"}, nil},
		{"empty aud", jwt.MapClaims{"sub": "x", "exp": exp, "iss": "iss", "aud": ""}, nil},
		{"empty aud list", jwt.MapClaims{"sub": "x", "exp": exp, "iss": "iss", "aud": []any{}}, nil},
		{"other aud", jwt.MapClaims{"sub": "x", "exp": exp, "iss": "iss", "aud": "other"}, nil},
		{"no iss", jwt.MapClaims{"sub": "x", "exp": exp, "aud": "roster"}, nil},
		{"iss in another case", jwt.MapClaims{"sub": "x", "exp": exp, "iss": "ISS", "aud": "roster"}, nil},
		{"exp as a string", jwt.MapClaims{"sub": "x", "exp": "9999999999", "iss": "iss", "aud": "roster"}, nil},
		{"sub a number", jwt.MapClaims{"sub": 5, "exp": exp, "iss": "iss", "aud": "roster"}, nil},
		{"roles an object", jwt.MapClaims{"sub": "x", "exp": exp, "iss": "iss", "aud": "roster", "roles": map[string]any{"a": 1}}, nil},
		{"roles not all strings", jwt.MapClaims{"sub": "x", "exp": exp, "iss": "iss", "aud": "roster", "roles": []any{"a", 1}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, tt.claims).SignedString(secret)
			if err != nil {
				t.Fatal(err)
			}
			c, err := a.Verify(tok)
			if tt.roles == nil {
				if err == nil {
					t.Fatalf("accepted as %+v, want refused", c)
				}
				if !errors.Is(err, ErrTokenClaims) {
					t.Fatalf("got %v, want an error matching ErrTokenClaims", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want accepted", err)
			}
			if c.Principal != "x" || !slices.Equal(c.Roles, tt.roles) {
				t.Fatalf("got %q %v, want x %v", c.Principal, c.Roles, tt.roles)
			}
		})
	}
}
