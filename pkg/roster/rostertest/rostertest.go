// Package rostertest runs the whole of Roster in a test process — the embedded NATS
// server with the auth callout and all four services — exactly as roster serve does,
// on a random port with storage in t.TempDir().
package rostertest

import (
	"context"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/roster"
)

// Option adjusts the configuration.
type Option func(*roster.Config)

// WithConfig lets a test change anything in the configuration.
func WithConfig(fn func(*roster.Config)) Option { return Option(fn) }

// Start runs Roster until the test ends. The default configuration is roster serve's
// development one (anonymous clients admitted by the development policy), except
// that JetStream fsyncs once a minute rather than on every write: tests do not
// measure durability, and a shared disk's fsync latency would make them slow.
func Start(t testing.TB, opts ...Option) *roster.Process {
	t.Helper()
	cfg := roster.Config{
		Embedded: embedded.Config{
			Name:         "roster-test",
			Listen:       "127.0.0.1:-1",
			DataDir:      t.TempDir(),
			SyncInterval: 60e9,
		},
	}
	for _, o := range opts {
		o(&cfg)
	}
	p, err := roster.Start(context.Background(), cfg, natstest.Logger(t))
	if err != nil {
		t.Fatalf("rostertest: start: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("rostertest: stop: %v", err)
		}
	})
	return p
}
