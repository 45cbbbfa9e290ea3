//go:build unix

package roster_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/roster"
)

// TestWarnsOfATrustedFileOthersMayWrite: a users file others may write (an editor
// saving under umask 002, a chmod too wide) lets any of them add a user of any
// role, which the auth service reads within a second; nothing said so. Start now
// warns of each file the auth service trusts that is writable by group or others,
// and of no other: the policy file here may be read by all, as a container's bind
// mount needs, and is not named.
func TestWarnsOfATrustedFileOthersMayWrite(t *testing.T) {
	t.Parallel()
	cfg := roster.Config{Embedded: embedded.Config{
		Name: "roster-test", Listen: "127.0.0.1:-1", DataDir: t.TempDir(), SyncInterval: time.Minute,
	}}
	authFiles(t)(&cfg)
	if err := os.Chmod(cfg.Auth.UsersFile, 0o664); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(cfg.Auth.PolicyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &natstest.Buffer{}
	p, err := roster.Start(context.Background(), cfg, logs.Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop() })
	var warned []string
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "may be written by other users") {
			warned = append(warned, line)
		}
	}
	if len(warned) != 1 || !strings.Contains(warned[0], `"flag":"--users-file"`) || !strings.Contains(warned[0], `"mode":"0664"`) {
		t.Fatalf("want one warning, of the users file (0664); got %q", warned)
	}
}
