package roster

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// TestAsyncErrorsAreLogged: an asynchronous error on a connection of the process
// (here a slow consumer) goes to the process's logger. nats.go wrote it to stderr as
// a line of its own ("nats: slow consumer, messages dropped on connection [7] for
// subscription on …"), which broke --log-format json.
func TestAsyncErrorsAreLogged(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	var logs natstest.Buffer
	p, err := Start(context.Background(), Config{
		Services:     []string{"lock"},
		NATSURL:      srv.ClientURL(),
		NATSOptions:  []nats.Option{nats.UserInfo(embedded.ServiceUser, srv.Config().ServicePassword)},
		DrainTimeout: 2 * time.Second,
	}, slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop() })

	nc := p.running[0].nc
	release := make(chan struct{})
	defer close(release)
	sub, err := nc.Subscribe("test.slow", func(*nats.Msg) { <-release })
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(1, -1); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if err := nc.Publish("test.slow", nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		for line := range strings.Lines(logs.String()) {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["connection"] == "lock" && rec["subject"] == "test.slow" &&
				strings.Contains(rec["err"].(string), "slow consumer") {
				return nil
			}
		}
		return errors.New("no slow consumer error logged: " + logs.String())
	})
}
