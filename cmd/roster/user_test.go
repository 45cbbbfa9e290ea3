package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/wire"
	"github.com/seed-3c836eab/roster/services/auth"
)

func TestUserAdd(t *testing.T) {
	t.Parallel()
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

// TestUserAddRefusesAFileTheServerWouldNot: user add refuses, with a usage error, a
// user it cannot write. A --bcrypt-cost below bcrypt's minimum was hashed with cost 10
// without a word, and one other than the file's users' wrote a file of mixed costs,
// which the auth service refuses, locking every user out; a cost above the maximum
// or an empty name exited 1.
func TestUserAddRefusesAFileTheServerWouldNot(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "users.yaml")
	add := func(args ...string) error {
		root := newRootCmd()
		root.SetArgs(append([]string{"user", "add", "--users-file", file}, args...))
		root.SetIn(strings.NewReader("pw\n"))
		root.SetOut(&bytes.Buffer{})
		return root.ExecuteContext(context.Background())
	}
	if err := add("alice", "--bcrypt-cost", "4"); err != nil {
		t.Fatal(err)
	}
	for name, args := range map[string][]string{
		"cost below the minimum":    {"bob", "--bcrypt-cost", "1"},
		"cost above the maximum":    {"carol", "--bcrypt-cost", "32"},
		"cost of none of the users": {"dave", "--bcrypt-cost", "5"},
		"the default cost":          {"erin"},
		"empty name":                {"", "--bcrypt-cost", "4"},
	} {
		t.Run(name, func(t *testing.T) {
			if err := add(args...); exitCode(err) != 2 {
				t.Errorf("got %v (exit %d), want a usage error (2)", err, exitCode(err))
			}
		})
	}
	users, err := auth.ReadUsers(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 1 {
		t.Errorf("got users %v, want alice alone", users)
	}
	if _, err := auth.NewUsersFile(file); err != nil {
		t.Errorf("the users file no longer loads: %v", err)
	}
}

// TestUserAddPrintsJSON: user add -o json prints JSON, like every other command; it
// printed its line of text.
func TestUserAddPrintsJSON(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "users.yaml")
	root := newRootCmd()
	root.SetArgs([]string{"user", "add", "alice", "--users-file", file, "--bcrypt-cost", "4", "-o", "json"})
	root.SetIn(strings.NewReader("pw\n"))
	var out bytes.Buffer
	root.SetOut(&out)
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	var got map[string]string
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || got["user"] != "alice" || got["users_file"] != file {
		t.Errorf("got %q (%v), want {\"user\": \"alice\", \"users_file\": %q}", out.String(), err, file)
	}
}
