// Package natstest starts the embedded NATS configuration that roster serve runs —
// the same accounts, imports and JetStream settings — on a random port with storage in
// t.TempDir(), for tests of every service and of the client SDK.
package natstest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/embedded"
)

// Server is an embedded server started for one test.
type Server struct {
	*embedded.Server
}

// Option adjusts the configuration before the server starts.
type Option func(*embedded.Config)

// WithDataDir stores JetStream under dir instead of a fresh t.TempDir().
func WithDataDir(dir string) Option { return func(c *embedded.Config) { c.DataDir = dir } }

// WithWebSocket enables a WebSocket listener on a free port.
func WithWebSocket() Option { return func(c *embedded.Config) { c.WebSocket = "127.0.0.1:-1" } }

// WithAuthCallout turns on the auth callout with issuer as the callout's account key
// (see embedded.Config.CalloutIssuer): client connections are refused until an auth
// service answers. users are CLIENTS users that bypass the callout (observers).
func WithAuthCallout(issuer string, users ...embedded.UserPassword) Option {
	return func(c *embedded.Config) {
		c.CalloutIssuer = issuer
		c.ClientUsers = users
	}
}

// Start starts a server and stops it when the test ends. Anonymous clients are
// admitted, as in roster serve's development configuration.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	cfg := embedded.Config{
		Name:           "roster-test",
		Listen:         "127.0.0.1:-1",
		DataDir:        t.TempDir(),
		AllowAnonymous: true,
	}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := embedded.Start(cfg, Logger(t))
	if err != nil {
		t.Fatalf("natstest: start: %v", err)
	}
	t.Cleanup(s.Stop)
	return &Server{Server: s}
}

// ServiceConn connects to the SERVICES account; the connection closes when the test ends.
func (s *Server) ServiceConn(t testing.TB, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := s.ConnectService(opts...)
	if err != nil {
		t.Fatalf("natstest: service connection: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// ClientConn connects over TCP as an anonymous client; it closes when the test ends.
func (s *Server) ClientConn(t testing.TB, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("natstest: client connection: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// JetStream returns a JetStream context on a new service connection.
func (s *Server) JetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(s.ServiceConn(t))
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	return js
}

// Logger returns a logger that writes through t.Log when ROSTER_TEST_LOG is set, and
// discards otherwise.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv("ROSTER_TEST_LOG") == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// CheckFor calls fn every step until it returns nil or total has passed, then fails
// the test with fn's last error. Use it to wait for a condition instead of sleeping.
func CheckFor(t testing.TB, total, step time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for {
		if err = fn(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("natstest: condition not met after %v: %v", total, err)
		}
		time.Sleep(step)
	}
}

// Responder subscribes a plain responder on subject that runs fn for each request
// and answers it with an empty body — a benchmark's floor for a service that does
// fn's work. A failing fn fails the test.
func Responder(t testing.TB, nc *nats.Conn, subject string, fn func(*nats.Msg) error) {
	t.Helper()
	if _, err := nc.Subscribe(subject, func(m *nats.Msg) {
		if err := fn(m); err != nil {
			t.Error(err)
		}
		_ = m.Respond(nil)
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// Subscribe returns the messages published on subject from now on (the server has
// the subscription when it returns), buffered up to size; the subscription ends
// with the test.
func Subscribe(t testing.TB, nc *nats.Conn, subject string, size int) <-chan *nats.Msg {
	t.Helper()
	msgs := make(chan *nats.Msg, size)
	sub, err := nc.ChanSubscribe(subject, msgs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return msgs
}

// Run runs a service's Run on a goroutine until stop is called or the test ends.
// stop cancels Run's context, waits for it to return, fails the test if it returned
// an error, then runs after (closing the service's connection, say). It may be called
// more than once.
func Run(t testing.TB, run func(context.Context) error, after ...func()) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
			for _, fn := range after {
				fn()
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// RewriteJSON replaces the JSON object stored under key in kv with change applied
// to it, by a compare-and-set on the revision read: a record as another writer (an
// older or newer version, a hand edit) might have left it.
func RewriteJSON(t testing.TB, kv jetstream.KeyValue, key string, change func(map[string]any)) {
	t.Helper()
	ctx := context.Background()
	entry, err := kv.Get(ctx, key)
	if err != nil {
		t.Fatalf("rewrite %s: %v", key, err)
	}
	var m map[string]any
	if err := json.Unmarshal(entry.Value(), &m); err != nil {
		t.Fatalf("rewrite %s: %v", key, err)
	}
	change(m)
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatalf("rewrite %s: %v", key, err)
	}
	if _, err := kv.Update(ctx, key, data, entry.Revision()); err != nil {
		t.Fatalf("rewrite %s: %v", key, err)
	}
}

// WaitConnected waits, for 10 s at most, until nc is connected (connected true) or
// not (false: the link was cut and nats.go noticed).
func WaitConnected(t testing.TB, nc *nats.Conn, connected bool) {
	t.Helper()
	CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if nc.IsConnected() != connected {
			return fmt.Errorf("connection %v, want connected %v", nc.Status(), connected)
		}
		return nil
	})
}
