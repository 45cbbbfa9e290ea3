package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestJWTKeyFilesAreReadAgain: the key files are read again when they change, so
// that keys rotate without a restart — a second HMAC secret, one per line, is taken
// beside the first, the first then removed; a public key added — and files that no
// longer load admit no token. They were read once at start: rotating a key needed a
// restart of every auth instance, and an HS256 secret could only be cut over.
func TestJWTKeyFilesAreReadAgain(t *testing.T) {
	dir := t.TempDir()
	secretPath, keysPath := filepath.Join(dir, "secret"), filepath.Join(dir, "keys.pem")
	oldSecret, newSecret := strings.Repeat("o", 32), strings.Repeat("n", 32)
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	write := func(path, data string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pemOf := func(pub ed25519.PublicKey) string {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	}
	write(secretPath, oldSecret+"\n")
	write(keysPath, pemOf(getKeys(t).edPub))
	f, err := NewJWTFiles(JWTConfig{}, secretPath, keysPath)
	if err != nil {
		t.Fatal(err)
	}
	token := func(method jwt.SigningMethod, key any) string {
		s, err := jwt.NewWithClaims(method, jwt.MapClaims{"sub": "svc", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	verdict := func(tok string) (Verdict, error) {
		d, err := f.Authenticate(t.Context(), &Attempt{Credentials: &wire.Credentials{Type: wire.CredentialsJWT, Token: tok}})
		return d.Verdict, err
	}
	byOld, byNew := token(jwt.SigningMethodHS256, []byte(oldSecret)), token(jwt.SigningMethodHS256, []byte(newSecret))
	byNewKey := token(jwt.SigningMethodEdDSA, edPriv)
	eventually := func(what, tok string, want Verdict) {
		t.Helper()
		natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
			if got, err := verdict(tok); err != nil || got != want {
				return fmt.Errorf("%s: got %v, %v; want %v", what, got, err, want)
			}
			return nil
		})
	}
	if v, err := verdict(byOld); err != nil || v != Allow {
		t.Fatalf("the first secret at start: got %v, %v", v, err)
	}
	if v, _ := verdict(byNew); v != Deny {
		t.Fatalf("a secret not in the file: got %v, want deny", v)
	}

	write(secretPath, oldSecret+"\n"+newSecret+"\n")
	eventually("the second secret, added", byNew, Allow)
	if v, err := verdict(byOld); err != nil || v != Allow {
		t.Fatalf("the first secret beside the second: got %v, %v", v, err)
	}
	write(secretPath, newSecret+"\n")
	eventually("the first secret, removed", byOld, Deny)

	write(keysPath, pemOf(getKeys(t).edPub)+pemOf(edPub))
	eventually("a public key, added", byNewKey, Allow)

	write(secretPath, "short\n")
	natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if _, err := verdict(byNew); err == nil {
			return fmt.Errorf("a secret file that does not load: the token was still decided")
		}
		return nil
	})
	write(secretPath, newSecret+"\n")
	eventually("the secret file, mended", byNew, Allow)
}
