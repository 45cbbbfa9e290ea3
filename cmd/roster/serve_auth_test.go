package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
	"github.com/seed-3c836eab/roster/services/auth"
)

// TestServeAuthenticatesConnections runs serve with a production-like policy (no
// anonymous clients) and a users file: the auth callout refuses a connection without
// credentials and admits alice.
func TestServeAuthenticatesConnections(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	policyFile := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policyFile, []byte("roles:\n  user:\n    - permission: VIEW_SESSION\nanonymous:\n  allowed: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	usersFile := filepath.Join(dir, "users.yaml")
	if err := auth.AddUser(usersFile, "alice", "alice-pw", []string{"user"}, nil, 4, false); err != nil {
		t.Fatal(err)
	}
	url, _ := startServe(t, "--policy", policyFile, "--users-file", usersFile)
	var nc *nats.Conn
	natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() (err error) {
		nc, err = nats.Connect(url, nats.UserInfo("alice", "alice-pw"))
		return err
	})
	defer nc.Close()
	_, err := nats.Connect(url, nats.MaxReconnects(0))
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("anonymous connection: got %v, want an authorization violation", err)
	}
	if _, err := nats.Connect(url, nats.UserInfo("alice", "wrong"), nats.MaxReconnects(0)); err == nil {
		t.Fatal("wrong password admitted")
	}
	// The client commands exit with the README's status for refused credentials
	// (unauthenticated: 4), not the one for an unreachable Roster (7).
	c := cli{t: t, server: url}
	for _, args := range [][]string{
		{"session", "list"},
		{"session", "list", "--user", "alice", "--password", "wrong"},
		{"session", "open", "--user", "alice", "--password", "wrong"},
	} {
		r := c.run(testCtx(t), "", args...)
		if !errors.Is(r.err, wire.ErrUnauthenticated) || r.exit() != exitDenied {
			t.Errorf("%q: got %v (exit %d), want unauthenticated (exit %d)", args, r.err, r.exit(), exitDenied)
		}
	}
}

func TestServeRejectsBadPolicyFile(t *testing.T) {
	t.Parallel()
	bad := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(bad, []byte("roles: {x: [{permission: FLY}]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stop := startServe(t, "--policy", bad)
	if err := stop(); err == nil || !strings.Contains(err.Error(), "FLY") {
		t.Fatalf("got %v, want an error naming the bad permission", err)
	}
}
