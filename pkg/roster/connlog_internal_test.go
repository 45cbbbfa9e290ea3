package roster

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// TestConnectionLogShowsNoCredentials: the line logged when a connection is restored
// names the server's URL without the credentials a --nats-url may carry. It logged
// nats.go's ConnectedUrlRedacted, which hides a password but not a token given as
// the URL's user (nats://TOKEN@host): every reconnect wrote the token to the log.
func TestConnectionLogShowsNoCredentials(t *testing.T) {
	t.Parallel()
	const token = "s3cr3t-token-in-url"
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, Authorization: token, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	var logs natstest.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	url := strings.Replace(ns.ClientURL(), "nats://", "nats://"+token+"@", 1)
	nc, err := nats.Connect(url, append(connLog(log, "lock"), nats.ReconnectWait(10*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "NATS connection restored") {
			return errors.New("no reconnect logged yet")
		}
		return nil
	})
	want := strings.Replace(ns.ClientURL(), "nats://", "nats://xxxxx@", 1)
	if out := logs.String(); strings.Contains(out, token) || !strings.Contains(out, `"url":"`+want+`"`) {
		t.Errorf("log %q: want the server's URL as %s", out, want)
	}
}
