package auth

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestUsersFileMidSaveCountsNoFailures: an editor saving the users file removes it
// and writes it anew (vim), or truncates it and writes it in place (cat >, many
// tools). A reload that reads it in between found no users: every user was
// "unknown" and denied until the next reload a second later, and each denial
// counted a failure against the user and their address: users behind one NAT, or
// one user's clients on several hosts, were throttled for a minute by a save. A users file that held
// users and reads missing or empty now fails attempts (internal, not counted) as a
// file that does not load does, and the save's result is read at the next check.
func TestUsersFileMidSaveCountsNoFailures(t *testing.T) {
	for _, tc := range []struct {
		name string
		save func(string) error
	}{
		{"removed", os.Remove},
		{"truncated", func(name string) error { return os.Truncate(name, 0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := writeUsers(t, map[string][2]string{"alice": {"alice-pw", "user"}, "bob": {"bob-pw", "user"}, "carol": {"carol-pw", "user"}})
			saved, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			f, err := NewUsersFile(name)
			if err != nil {
				t.Fatal(err)
			}
			h := start(t, nil, Config{
				Authenticators: []Authenticator{f},
				InitialPolicy:  testPolicy(),
				Throttle:       ThrottleConfig{MaxFailures: 3, Window: time.Hour},
			})
			creds := func(user string) *wire.Credentials {
				return &wire.Credentials{Type: wire.CredentialsPassword, Username: user, Password: user + "-pw"}
			}

			if err := tc.save(name); err != nil {
				t.Fatal(err)
			}
			_ = f.reload(time.Now(), false) // a check that falls in the middle of the save
			// Three users behind one address (a NAT) log in during the save.
			for _, user := range []string{"alice", "bob", "carol"} {
				if _, err := h.svc.authenticate(t.Context(), creds(user), nil, "10.0.0.1"); err == nil {
					t.Fatalf("%s was admitted in the middle of the save", user)
				}
			}

			if err := os.WriteFile(name, saved, 0o600); err != nil {
				t.Fatal(err)
			}
			_ = f.reload(time.Now(), false) // the next check, after the save
			a, err := h.svc.authenticate(t.Context(), creds("alice"), nil, "10.0.0.1")
			if errors.Is(err, wire.ErrThrottled) {
				t.Fatalf("alice, with her password, after the save: %v; the save counted failures against her address", err)
			}
			if err != nil || a.Principal != "alice" {
				t.Fatalf("alice after the save: %v, %v", a, err)
			}
		})
	}
}
