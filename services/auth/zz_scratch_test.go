package auth

import (
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestZZAud(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	a, err := NewJWT(JWTConfig{HMACSecrets: [][]byte{secret}, Audience: "roster", Issuer: "iss"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, c := range []jwt.MapClaims{
		{"sub": "x", "exp": now.Add(time.Hour).Unix(), "iss": "iss"},
		{"sub": "x", "exp": now.Add(time.Hour).Unix(), "iss": "iss", "aud": ""},
		{"sub": "x", "exp": now.Add(time.Hour).Unix(), "iss": "iss", "aud": []any{}},
		{"sub": "x", "exp": now.Add(time.Hour).Unix(), "iss": "iss", "aud": "other"},
		{"sub": "x", "exp": now.Add(time.Hour).Unix(), "aud": "roster"},
		{"sub": "x", "exp": now.Add(time.Hour).Unix(), "iss": "ISS", "aud": "roster"},
		{"sub": "x", "exp": "9999999999", "iss": "iss", "aud": "roster"},
		{"sub": "x", "exp": now.Add(time.Hour).Unix(), "iss": "iss", "aud": "roster", "nbf": now.Add(time.Hour).Unix()},
		{"sub": 5, "exp": now.Add(time.Hour).Unix(), "iss": "iss", "aud": "roster"},
		{"sub": "x", "exp": now.Add(time.Hour).Unix(), "iss": "iss", "aud": "roster", "roles": map[string]any{"a": 1}},
		{"sub": "x", "exp": now.Add(time.Hour).Unix(), "iss": "iss", "aud": "roster", "roles": []any{"a", 1}},
		{"sub": "x", "exp": now.Add(time.Hour).Unix(), "iss": "iss", "aud": "roster", "roles": ""},
		{"sub": "x", "exp": now.Add(time.Hour).Unix(), "iss": "iss", "aud": []any{"a", "roster"}, "roles": "admin, ops"},
	} {
		tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
		cl, err := a.Verify(tok)
		t.Logf("%v -> %+v %v", c, cl, err)
	}
}
