package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/wire"
	"github.com/seed-3c836eab/roster/services/auth"
)

func TestUserAdd(t *testing.T) {
	file := filepath.Join(t.TempDir(), "users.yaml")
	add := func(stdin string, args ...string) error {
		root := newRootCmd()
		root.SetArgs(append([]string{"user", "add", "--users-file", file, "--bcrypt-cost", "4"}, args...))
		root.SetIn(strings.NewReader(stdin))
		root.SetOut(&bytes.Buffer{})
		return root.ExecuteContext(context.Background())
	}
	if err := add("s3cret-pw\n", "alice", "--role", "user,trader", "--property", "Department=ops"); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "s3cret-pw") || !strings.Contains(string(data), "$2a$04$") {
		t.Fatalf("users file does not hold only a bcrypt hash:\n%s", data)
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
		t.Fatalf("got mode %v, want 0600", st.Mode().Perm())
	}
	if err := add("other\n", "alice"); err == nil || exitCode(err) != 2 {
		t.Fatalf("adding alice twice: got %v, want a usage error", err)
	}
	if err := add("", "bob"); err == nil || exitCode(err) != 2 {
		t.Fatalf("no password: got %v, want a usage error", err)
	}
	users, err := auth.NewUsersFile(file)
	if err != nil {
		t.Fatal(err)
	}
	d, err := users.Authenticate(context.Background(), &auth.Attempt{Credentials: &wire.Credentials{Type: "password", Username: "alice", Password: "s3cret-pw"}})
	if err != nil || d.Verdict != auth.Allow || strings.Join(d.Roles, ",") != "user,trader" || d.Properties["Department"] != "ops" {
		t.Fatalf("got %+v (%v), want alice allowed with her roles and property", d, err)
	}
}
