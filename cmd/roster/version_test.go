package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// TestVersionIsOneForTheBinaryAndItsServices builds roster with its version set as a
// release sets it (-ldflags -X on pkg/version.Version) and checks that `roster
// --version` and every service's $SRV.INFO of `roster serve` report that one
// version. Before, the binary said 0.1.0-dev (main.version) and each service its
// own constant 0.1.0.
func TestVersionIsOneForTheBinaryAndItsServices(t *testing.T) {
	t.Parallel()
	const want = "1.2.3-test.4"
	bin := filepath.Join(t.TempDir(), "roster")
	build := exec.Command("go", "build", "-o", bin,
		"-ldflags", "-X github.com/seed-3c836eab/roster/pkg/version.Version="+want, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("roster --version: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "roster version "+want {
		t.Errorf("roster --version says %q, want %q", got, "roster version "+want)
	}

	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	var serveLog natstest.Buffer
	serve := shell(bin+" serve", append(os.Environ(), "ROSTER_LISTEN="+addr, "ROSTER_DATA_DIR="+t.TempDir()))
	serve.Stdout, serve.Stderr = &serveLog, &serveLog
	done := start(t, serve)
	defer func() {
		if err := interrupt(t, serve, done); err != nil {
			t.Errorf("serve after SIGINT: %v\n%s", err, serveLog.String())
		}
	}()
	nc := connectAll(t, "nats://"+addr)
	for _, name := range []string{"roster-auth", "roster-lock", "roster-messaging", "roster-registry"} {
		msg, err := nc.Request("$SRV.INFO."+name, nil, 5*time.Second)
		if err != nil {
			t.Fatalf("$SRV.INFO.%s: %v", name, err)
		}
		var info micro.Info
		if err := json.Unmarshal(msg.Data, &info); err != nil {
			t.Fatalf("$SRV.INFO.%s: %v", name, err)
		}
		if info.Version != want {
			t.Errorf("%s reports version %q in $SRV.INFO, want %q (the binary's)", name, info.Version, want)
		}
	}
}
