package client_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/bcrypt"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/roster"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/services/auth"
)

// testPolicy admits alice (trader) and admins by password or JWT, and anonymous
// sessions with the guest role, which may only send to sessions and take locks.
const testPolicy = `
roles:
  admin:
    - permission: VIEW_SESSION
    - permission: MODIFY_SESSION
    - permission: VIEW_LOCKS
    - permission: ACQUIRE_LOCK
    - permission: SEND_TO_SESSION
    - permission: SEND_TO_FILTER
    - permission: MODIFY_SECURITY
  trader:
    - permission: ACQUIRE_LOCK
      names: ["orders/*"]
    - permission: SEND_TO_FILTER
      names: ["prices/**"]
    - permission: SEND_TO_SESSION
    - permission: MODIFY_OWN_PROPERTIES
  guest:
    - permission: SEND_TO_SESSION
  gateway:
    - permission: GATEWAY_SESSION
anonymous:
  allowed: true
  roles: [guest]
properties:
  default: accept
`

// jwtSecret signs the test's bearer tokens (HS256, at least 32 bytes).
const jwtSecret = "0123456789abcdef0123456789abcdef-test-secret"

// startSecured runs Roster with testPolicy, a users file (alice/wonderland as
// trader, root/toor as admin) and HS256 JWTs; opts change the rest.
func startSecured(t *testing.T, opts ...rostertest.Option) *roster.Process {
	t.Helper()
	dir := t.TempDir()
	policyFile := filepath.Join(dir, "policy.yaml")
	usersFile := filepath.Join(dir, "users.yaml")
	secretFile := filepath.Join(dir, "jwt.secret")
	if err := os.WriteFile(policyFile, []byte(testPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secretFile, []byte(jwtSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := auth.AddUser(usersFile, "alice", "wonderland", []string{"trader"}, map[string]string{"Desk": "FX"}, bcrypt.MinCost, false); err != nil {
		t.Fatal(err)
	}
	if err := auth.AddUser(usersFile, "root", "toor", []string{"admin"}, nil, bcrypt.MinCost, false); err != nil {
		t.Fatal(err)
	}
	return rostertest.Start(t, append([]rostertest.Option{rostertest.WithConfig(func(c *roster.Config) {
		c.Auth.PolicyFile = policyFile
		c.Auth.UsersFile = usersFile
		c.Auth.JWTSecretFile = secretFile
	})}, opts...)...)
}

// signJWT returns an HS256 token for subject with roles, valid for a minute.
func signJWT(t *testing.T, subject string, roles ...string) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub":   subject,
		"roles": roles,
		"exp":   time.Now().Add(time.Minute).Unix(),
	})
	s, err := tok.SignedString([]byte(jwtSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// open opens a session on its own connection and closes it when the test ends.
func open(t *testing.T, url string, opts client.Options) *client.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := client.Open(ctx, url, opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { closeSession(t, s) })
	return s
}

func closeSession(t *testing.T, s *client.Session) {
	t.Helper()
	wait := 10 * time.Second
	if s.Client().Conn().Status() != nats.CONNECTED {
		// The test took the server away: Close would wait for it to come back.
		wait = 100 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := s.Close(ctx); err != nil && !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("close session: %v", err)
	}
}

// connect opens a client connection closed when the test ends.
func connect(t *testing.T, url string, opts ...client.ConnectOption) *client.Client {
	t.Helper()
	c, err := client.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// freePort returns a TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func hostPort(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

func waitFor(t *testing.T, fn func() error) {
	t.Helper()
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, fn)
}
