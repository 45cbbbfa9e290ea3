package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/natstest"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startServe runs "roster serve" in-process and returns its client URL and a function
// that stops it and returns run's error.
func startServe(t *testing.T, extra ...string) (string, func() error) {
	t.Helper()
	url := "nats://127.0.0.1:" + strconv.Itoa(freePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	args := []string{"serve", "--log-level", "warn"}
	if !slices.Contains(extra, "--nats-url") { // the embedded server's flags are usage errors with it
		args = append(args, "--listen", url[len("nats://"):], "--data-dir", t.TempDir())
	}
	args = append(args, extra...)
	done := make(chan error, 1)
	go func() { done <- run(ctx, args) }()
	var once sync.Once
	var stopErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(30 * time.Second):
				t.Error("serve did not stop within 30s")
			}
		})
		return stopErr
	}
	t.Cleanup(func() { _ = stop() })
	return url, stop
}

// pingAll collects $SRV.PING replies for a second.
func pingAll(t *testing.T, nc *nats.Conn) []string {
	t.Helper()
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest("$SRV.PING", inbox, nil); err != nil {
		t.Fatal(err)
	}
	var names []string
	for {
		msg, err := sub.NextMsg(time.Second)
		if err != nil {
			break
		}
		var p micro.Ping
		if err := json.Unmarshal(msg.Data, &p); err != nil {
			t.Fatalf("bad ping reply %q: %v", msg.Data, err)
		}
		names = append(names, p.Name)
	}
	sort.Strings(names)
	return names
}

// connectAll connects anonymously to url and waits until all four services answer
// $SRV.PING; the connection closes when the test ends.
func connectAll(t *testing.T, url string) *nats.Conn {
	t.Helper()
	var nc *nats.Conn
	natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() (err error) {
		nc, err = nats.Connect(url)
		return err
	})
	t.Cleanup(nc.Close)
	want := []string{"roster-auth", "roster-lock", "roster-messaging", "roster-registry"}
	natstest.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		if got := pingAll(t, nc); !equal(got, want) {
			return errorf("got services %v, want %v", got, want)
		}
		return nil
	})
	return nc
}

func TestServeAnswersPingForAllServices(t *testing.T) {
	t.Parallel()
	url, stop := startServe(t)
	connectAll(t, url)
	if err := stop(); err != nil {
		t.Fatalf("serve stopped with %v, want a clean stop", err)
	}
}

func TestServeRejectsUnknownService(t *testing.T) {
	t.Parallel()
	err := run(context.Background(), []string{"serve", "--services", "registry,nope", "--data-dir", t.TempDir()})
	if err == nil || exitCode(err) != 2 {
		t.Fatalf("got %v (exit %d), want a usage error", err, exitCode(err))
	}
}

func TestServeRunsSelectedServices(t *testing.T) {
	t.Parallel()
	url, _ := startServe(t, "--services", "lock")
	var nc *nats.Conn
	natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() (err error) {
		nc, err = nats.Connect(url)
		return err
	})
	defer nc.Close()
	// The server accepts connections before the service has started.
	natstest.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		if got, want := pingAll(t, nc), []string{"roster-lock"}; !equal(got, want) {
			return errorf("got services %v, want %v", got, want)
		}
		return nil
	})
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestServeWebSocket opens a session over the optional WebSocket listener: the
// registry sees the transport from the server-written request info.
func TestServeWebSocket(t *testing.T) {
	t.Parallel()
	ws := "127.0.0.1:" + strconv.Itoa(freePort(t))
	url, _ := startServe(t, "--websocket", ws)
	natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		nc, err := nats.Connect(url)
		if err == nil {
			nc.Close()
		}
		return err
	})
	var s *client.Session
	natstest.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() (err error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err = client.Open(ctx, "ws://"+ws, client.Options{})
		return err
	})
	defer s.Close(context.Background())
	if got := s.Properties()["$Transport"]; got != "WEBSOCKET" {
		t.Fatalf("got $Transport %q over WebSocket, want WEBSOCKET", got)
	}
}

// TestServeTuningFlags: the services' limits and timeouts are set from serve's flags
// (and so from their ROSTER_ variables); before, only a Go program embedding
// pkg/roster could change them.
func TestServeTuningFlags(t *testing.T) {
	t.Parallel()
	url, _ := startServe(t, "--session-timeout", "7s", "--max-properties", "2", "--max-value-length", "8", "--lock-max-per-session", "1")
	connectAll(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close(ctx) }()
	s, err := c.Open(ctx, client.Options{Properties: map[string]string{"a": "1", "b": "2"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Info().TimeoutMS; got != 7000 {
		t.Errorf("a session asking for no timeout got %d ms, want --session-timeout's 7000", got)
	}
	if _, err := c.Open(ctx, client.Options{Properties: map[string]string{"a": "1", "b": "2", "c": "3"}}); !errors.Is(err, client.ErrLimitExceeded) {
		t.Errorf("three properties with --max-properties 2: got %v, want limit_exceeded", err)
	}
	if err := s.SetProperties(ctx, map[string]string{"a": "123456789"}); !errors.Is(err, client.ErrLimitExceeded) {
		t.Errorf("a 9-byte value with --max-value-length 8: got %v, want limit_exceeded", err)
	}
	if _, err := s.TryLock(ctx, "a", client.LockOptions{}); err != nil {
		t.Fatalf("a first lock: %v", err)
	}
	if _, err := s.TryLock(ctx, "b", client.LockOptions{}); !errors.Is(err, client.ErrLimitExceeded) {
		t.Errorf("a second lock with --lock-max-per-session 1: got %v, want limit_exceeded", err)
	}
}

// TestServeTuningFlagsOutOfRange: a limit of 0 or below, or a default timeout outside
// its bounds, is a usage error: the services would have replaced it with their
// default without a word.
func TestServeTuningFlagsOutOfRange(t *testing.T) {
	t.Parallel()
	for name, args := range map[string][]string{
		"--max-properties 0":                                    {"--max-properties", "0"},
		"--lock-max-waiters -1":                                 {"--lock-max-waiters", "-1"},
		"--lock-max-per-session 0":                              {"--lock-max-per-session", "0"},
		"--max-principal-requests 0":                            {"--max-principal-requests", "0"},
		"--max-requests 0":                                      {"--max-requests", "0"},
		"--reconnect-window 0":                                  {"--reconnect-window", "0"},
		"--session-timeout above the max":                       {"--session-timeout", "2h", "--session-max-timeout", "1h"},
		"--session-timeout below the min":                       {"--session-timeout", "1s", "--session-min-timeout", "5s"},
		"--events-max-age 1m":                                   {"--events-max-age", "1m"},
		"--max-principal-requests above half of --max-requests": {"--max-requests", "100", "--max-principal-requests", "51"},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			err := run(ctx, append([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir()}, args...))
			if exitCode(err) != 2 {
				t.Fatalf("got %v (exit %d), want a usage error (2)", err, exitCode(err))
			}
		})
	}
}

// TestServePrincipalRequestsFollowMaxRequests: the bound on one principal's requests
// in progress is at most half of --max-requests (docs/architecture.md, "Flow
// control"), or one principal's sessions could take every request an instance
// gathers. Left at its default it follows a lower --max-requests down; given, it
// must fit (TestServeTuningFlagsOutOfRange refuses one that does not).
func TestServePrincipalRequestsFollowMaxRequests(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want int
	}{
		{nil, 128},
		{[]string{"--max-requests", "100"}, 50},
		{[]string{"--max-requests", "1"}, 1},
		{[]string{"--max-requests", "100", "--max-principal-requests", "50"}, 50},
		{[]string{"--max-principal-requests", "20"}, 20},
	} {
		cmd, o := serveCommand()
		if err := cmd.ParseFlags(c.args); err != nil {
			t.Fatal(err)
		}
		o.changed = cmd.Flags().Changed
		cfg, err := o.config()
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if got := cfg.Messaging.MaxPrincipalRequests; got != c.want {
			t.Errorf("%v: the messaging service gets MaxPrincipalRequests %d, want %d", c.args, got, c.want)
		}
	}
}

// TestServeNamesAMonitoringPort: a --nats-url that is a node's HTTP monitoring port
// fails at once, saying so and where clients connect. The port never sends INFO, and
// serve took that for NATS not up yet: it retried for a minute, then said only "NATS
// not reachable for 1m0s: read tcp …: i/o timeout".
func TestServeNamesAMonitoringPort(t *testing.T) {
	t.Parallel()
	s := natstest.Start(t, func(c *embedded.Config) { c.Monitor = "127.0.0.1:-1" })
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	monitor := "nats://" + s.MonitorAddr().String()
	err := run(ctx, []string{"serve", "--log-level", "error", "--services", "lock",
		"--nats-url", monitor, "--nats-user", "roster-service"})
	want := monitor + " answers HTTP, as a NATS monitoring port does, not the NATS protocol (clients connect to the client port, 4222 by default)"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want an error naming the monitoring port: %s", err, want)
	}
}
