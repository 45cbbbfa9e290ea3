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
