package roster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestStopClosesEveryConnection: when Stop returns, every connection the process
// opened is closed, its last replies sent: roster serve exits right after, and a
// program embedding the process expects no connection or goroutine of it left.
func TestStopClosesEveryConnection(t *testing.T) {
	t.Parallel()
	p := startJoined(t, "lock", "messaging")
	if err := p.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	for _, r := range p.running {
		if !r.nc.IsClosed() {
			t.Errorf("%s: connection %v after Stop returned, want closed", r.name, r.nc.Status())
		}
	}
	if !p.policy.nc.IsClosed() || !p.view.nc.IsClosed() {
		t.Error("policy or sessions view connection open after Stop returned, want closed")
	}
}

// TestStopWhileNATSIsDown: a process told to stop while its NATS server is gone
// stops its services and reports no error: their last replies cannot be sent, and
// waiting for the connection to flush them only held the stop for --drain-timeout
// per service and ended it with "flush connection: nats: timeout" (exit status 1).
func TestStopWhileNATSIsDown(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	p := startJoinedTo(t, srv, "registry", "lock", "messaging")
	srv.Stop()
	for _, r := range p.running {
		natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			if r.nc.IsConnected() {
				return errors.New(r.name + " still connected")
			}
			return nil
		})
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

// TestConnectionLossIsLogged: a service's connection that loses its server says so
// in the process's log, and says so again when it is back — the registry's too,
// whose tracker has handlers of its own on that connection.
func TestConnectionLossIsLogged(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := natstest.Start(t, natstest.WithDataDir(dir))
	var logs natstest.Buffer
	p, err := Start(context.Background(), Config{
		Services:     []string{"registry", "lock"},
		NATSURL:      srv.ClientURL(),
		NATSOptions:  []nats.Option{nats.UserInfo(embedded.ServiceUser, srv.Config().ServicePassword)},
		DrainTimeout: 2 * time.Second,
	}, logs.Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop() })
	// Each line names the server lost, or found again.
	server := srv.Server.Name()
	expect := func(msg string) {
		t.Helper()
		natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
			seen := map[string]bool{}
			for line := range strings.Lines(logs.String()) {
				var rec struct{ Msg, Connection, Server string }
				if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == msg && rec.Server == server {
					seen[rec.Connection] = true
				}
			}
			for _, conn := range []string{"registry", "lock", "sessions-view", "policy"} {
				if !seen[conn] {
					return fmt.Errorf("no %q for %s in the log:\n%s", msg, conn, logs.String())
				}
			}
			return nil
		})
	}
	addr := strings.TrimPrefix(srv.ClientURL(), "nats://")
	srv.Stop()
	expect("NATS connection lost; reconnecting")
	natstest.Start(t, natstest.WithDataDir(dir), func(c *embedded.Config) {
		c.Listen = addr
		c.ServicePassword = srv.Config().ServicePassword
	})
	expect("NATS connection restored")
}

// startJoined starts a process running services that joins a server of its own
// (NATSURL), as a production process does; it stops when the test ends.
func startJoined(t *testing.T, services ...string) *Process {
	t.Helper()
	return startJoinedTo(t, natstest.Start(t), services...)
}

// startJoinedTo starts a process running services that joins srv.
func startJoinedTo(t *testing.T, srv *natstest.Server, services ...string) *Process {
	t.Helper()
	p, err := Start(context.Background(), Config{
		Services:     services,
		NATSURL:      srv.ClientURL(),
		NATSOptions:  []nats.Option{nats.UserInfo(embedded.ServiceUser, srv.Config().ServicePassword)},
		DrainTimeout: 2 * time.Second,
	}, natstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop() })
	return p
}

// TestMissingUsersFileIsWarnedOf: a users file that does not exist is no error (it
// is read again as it changes, and may be written later), but the log says so: a
// mistyped path refused every password without a word.
func TestMissingUsersFileIsWarnedOf(t *testing.T) {
	t.Parallel()
	var logs natstest.Buffer
	missing := t.TempDir() + "/users.yaml"
	p, err := Start(context.Background(), Config{
		Services: []string{"auth"},
		Embedded: embedded.Config{Listen: "127.0.0.1:-1", DataDir: t.TempDir(), SyncInterval: time.Minute},
		Auth:     AuthConfig{UsersFile: missing},
	}, logs.Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop() })
	if !strings.Contains(logs.String(), "the users file does not exist") || !strings.Contains(logs.String(), missing) {
		t.Fatalf("no warning naming %s in the log:\n%s", missing, logs.String())
	}
}

// TestStopAnswersTheRequestsQueuedForAService: the requests a service's endpoints
// took but had not started when the process stopped (waiting for a slot, queued in
// the subscription) are answered — unavailable — before the connection closes.
// Before, Stop flushed and closed the connection as soon as the requests in
// flight were done, while the endpoints' subscriptions were still draining: the
// queued requests were dropped and their clients waited out their timeouts.
func TestStopAnswersTheRequestsQueuedForAService(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	p := startJoinedTo(t, srv, "lock")
	// A service with one slot and a handler that waits to be released, run by
	// the process like its own.
	nc := srv.ServiceConn(t)
	svc, err := endpoint.New(nc, endpoint.Config{Name: "roster-stoptest", Version: "1.0.0", Prefix: "roster.v1.stoptest", MaxConcurrent: 1},
		noop.NewTracerProvider(), natstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var started atomic.Int32
	err = endpoint.Add(svc, endpoint.Endpoint{Name: "wait"}, func(context.Context, *endpoint.Call, *struct{}) (*struct{}, error) {
		started.Add(1)
		<-release
		return &struct{}{}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	mctx, cancel := context.WithCancelCause(context.Background())
	r := &running{name: "stoptest", nc: nc, health: svc.Health, cancel: cancel, done: make(chan error, 1)}
	p.running = append(p.running, r)
	go func() { r.done <- svc.Serve(mctx, 10*time.Second) }()

	client := srv.ServiceConn(t)
	const queued = 100
	errs := make(chan error, queued+1)
	call := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		errs <- wire.Call(ctx, client, "roster.v1.stoptest.wait", nil, nil, nil)
	}
	go call()
	natstest.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if started.Load() == 0 {
			return errors.New("the first request is not running yet")
		}
		return nil
	})
	for range queued {
		go call()
	}
	// All of them reach the service, and wait there for the slot.
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if n := nc.Stats().InMsgs; n < queued+1 {
			return fmt.Errorf("the service received %d requests of %d", n, queued+1)
		}
		return nil
	})
	stopped := make(chan error, 1)
	go func() { stopped <- p.Stop() }()
	// Released once the endpoint stopped taking requests: a request now finds
	// no responder.
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if _, err := client.Request("roster.v1.stoptest.wait", nil, time.Second); !errors.Is(err, nats.ErrNoResponders) {
			return fmt.Errorf("a request after Stop: %v, want no responders", err)
		}
		return nil
	})
	close(release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	var answered, unavailable int
	for range queued + 1 {
		switch err := <-errs; {
		case err == nil:
			answered++
		case errors.Is(err, wire.ErrUnavailable):
			unavailable++
		default:
			t.Error(err)
		}
	}
	if answered != 1 || unavailable != queued {
		t.Fatalf("%d answered and %d unavailable; want the one in flight answered and the %d queued unavailable", answered, unavailable, queued)
	}
}

// TestWaitReturnsWhenStopped: Wait returns once the process is stopped by Stop
// (from another goroutine: a program's own shutdown), with Stop's result. It went
// on waiting for its ctx or a service failure, which a stopped process never
// gives: with context.Background a goroutine blocked for good.
func TestWaitReturnsWhenStopped(t *testing.T) {
	t.Parallel()
	p := startJoined(t, "lock")
	waited := make(chan error, 1)
	go func() { waited <- p.Wait(context.Background()) }()
	if err := p.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("Wait: %v, want Stop's nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Wait still blocked 15 s after Stop returned")
	}
}
