package auth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/crypto/bcrypt"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/policy"
)

// keys are the signing keys of the tests' JWT issuers.
type keys struct {
	hmac   []byte
	edPub  ed25519.PublicKey
	edPriv ed25519.PrivateKey
	rsa    *rsa.PrivateKey
}

var (
	testKeysOnce sync.Once
	testKeys     keys
)

func getKeys(t testing.TB) keys {
	t.Helper()
	testKeysOnce.Do(func() {
		testKeys.hmac = make([]byte, 32)
		_, _ = rand.Read(testKeys.hmac)
		testKeys.edPub, testKeys.edPriv, _ = ed25519.GenerateKey(rand.Reader)
		testKeys.rsa, _ = rsa.GenerateKey(rand.Reader, 2048)
	})
	return testKeys
}

func newJWTAuth(t testing.TB, now func() time.Time) *JWT {
	t.Helper()
	k := getKeys(t)
	a, err := NewJWT(JWTConfig{
		HMACSecrets:    [][]byte{k.hmac},
		PublicKeys:     []crypto.PublicKey{k.edPub, &k.rsa.PublicKey},
		PropertyClaims: map[string]string{"dept": "Department"},
		Now:            now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// sign makes a token with method over claims.
func sign(t testing.TB, method jwt.SigningMethod, claims jwt.MapClaims) string {
	t.Helper()
	k := getKeys(t)
	var key any
	switch method {
	case jwt.SigningMethodHS256:
		key = k.hmac
	case jwt.SigningMethodEdDSA:
		key = k.edPriv
	case jwt.SigningMethodRS256:
		key = k.rsa
	default:
		t.Fatalf("no key for %s", method.Alg())
	}
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claims(sub string, roles any, exp time.Time) jwt.MapClaims {
	return jwt.MapClaims{"sub": sub, "roles": roles, "exp": exp.Unix()}
}

// writeUsers writes a users file with cheap bcrypt hashes.
func writeUsers(t testing.TB, users map[string][2]string) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "users.yaml")
	for user, pr := range users {
		if err := AddUser(name, user, pr[0], []string{pr[1]}, map[string]string{"Source": "file"}, bcrypt.MinCost, false); err != nil {
			t.Fatal(err)
		}
	}
	return name
}

// testPolicy is a production-like policy: anonymous sessions get the role
// "anonymous"; nothing relaxes connection isolation.
func testPolicy() *policy.Policy {
	set := "basic"
	return &policy.Policy{
		Roles: map[string][]policy.Grant{
			"admin": {{Permission: policy.ModifySecurity}, {Permission: policy.ViewSession}},
			"user":  {{Permission: policy.AcquireLock, Names: []string{"orders/*"}}},
		},
		Anonymous: policy.Anonymous{Allowed: true, Roles: []string{"anonymous"}},
		Properties: policy.Properties{Rules: []policy.PropertyRule{
			{Key: "Department", Values: []string{"sales", "ops"}},
			{Key: "Tier", Set: &set},
			{Key: "Client*"},
		}},
	}
}

type harness struct {
	srv  *natstest.Server
	svc  *Service
	log  *natstest.Buffer
	stop func()
}

// start runs an auth service on srv (a fresh server when nil) until the test ends
// or stop is called.
func start(t *testing.T, srv *natstest.Server, cfg Config) *harness {
	t.Helper()
	if srv == nil {
		srv = natstest.Start(t)
	}
	lb := &natstest.Buffer{}
	nc := srv.ServiceConn(t, nats.Name("roster-auth-test"))
	s, err := New(nc, cfg, noop.NewTracerProvider(), lb.Logger())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return &harness{srv: srv, svc: s, log: lb, stop: natstest.Run(t, s.Run)}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
