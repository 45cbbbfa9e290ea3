package roster_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/roster"
)

// TestBadPolicyFileFailsBeforeAnythingStarts: a policy file that does not load is a
// ConfigError before the embedded server starts (or a process waits for its NATS):
// it was found only when the auth service started, after the server had created
// its data directory.
func TestBadPolicyFileFailsBeforeAnythingStarts(t *testing.T) {
	t.Parallel()
	bad := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(bad, []byte("roles: {x: [{permission: FLY}]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(t.TempDir(), "data")
	p, err := roster.Start(context.Background(), roster.Config{
		Embedded: embedded.Config{Name: "bad-policy", Listen: "127.0.0.1:-1", DataDir: data, SyncInterval: time.Minute},
		Auth:     roster.AuthConfig{PolicyFile: bad},
	}, natstest.Logger(t))
	if err == nil {
		_ = p.Stop()
		t.Fatal("started with a bad policy file")
	}
	var ce *roster.ConfigError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "FLY") {
		t.Fatalf("got %v, want a ConfigError naming FLY", err)
	}
	if _, err := os.Stat(data); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the embedded server started (its data directory: %v)", err)
	}
}

// TestCalloutSeedMustBeAnAccountSeed: a user seed (SU…, such as gensecrets'
// admin.nk) in the callout seed file is a ConfigError naming what is wanted. It
// passed as a seed: the embedded server then refused its configuration ("Expected
// callout user to be a valid public account nkey"), after creating its data
// directory, and an auth service joining a cluster failed only once connected.
func TestCalloutSeedMustBeAnAccountSeed(t *testing.T) {
	t.Parallel()
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := user.Seed()
	file := filepath.Join(t.TempDir(), "callout.nk")
	if err := os.WriteFile(file, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = roster.Start(context.Background(), roster.Config{
		Embedded: embedded.Config{Name: "user-seed", Listen: "127.0.0.1:-1", DataDir: t.TempDir(), SyncInterval: time.Minute},
		Auth:     roster.AuthConfig{CalloutSeedFile: file},
	}, natstest.Logger(t))
	var ce *roster.ConfigError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "account seed") {
		t.Fatalf("got %v, want a ConfigError asking for an account seed", err)
	}
}

// TestAuthLogsItsCalloutIssuer: an auth instance logs the public key it answers the
// auth callout as, or that it answers none. An instance joining a cluster without
// --auth-callout-seed-file answers no callout, and one given another seed than the
// one nats.conf names has every connection refused; neither said a word, and the
// issuer is what an operator compares with NATS_CALLOUT_ISSUER.
func TestAuthLogsItsCalloutIssuer(t *testing.T) {
	t.Parallel()
	issuer, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := issuer.Seed()
	pub, _ := issuer.PublicKey()
	file := filepath.Join(t.TempDir(), "callout.nk")
	if err := os.WriteFile(file, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		auth roster.AuthConfig
		want string
	}{
		{"seed file", roster.AuthConfig{CalloutSeedFile: file}, `"callout_issuer":"` + pub + `"`},
		{"callout off", roster.AuthConfig{DisableCallout: true}, `"callout_issuer":"none"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs natstest.Buffer
			p, err := roster.Start(context.Background(), roster.Config{
				Services: []string{"auth"},
				Embedded: embedded.Config{Name: "issuer-log", Listen: "127.0.0.1:-1", DataDir: t.TempDir(), SyncInterval: time.Minute},
				Auth:     tc.auth,
			}, logs.Logger())
			if err != nil {
				t.Fatal(err)
			}
			_ = p.Stop()
			if !strings.Contains(logs.String(), tc.want) {
				t.Errorf("log %s: want %s", logs.String(), tc.want)
			}
		})
	}
}
