package main

import (
	"context"
	"encoding/json"
	"net"
	"slices"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/seed-3c836eab/roster/pkg/client"
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
	url, stop := startServe(t)
	connectAll(t, url)
	if err := stop(); err != nil {
		t.Fatalf("serve stopped with %v, want a clean stop", err)
	}
}

func TestServeRejectsUnknownService(t *testing.T) {
	err := run(context.Background(), []string{"serve", "--services", "registry,nope", "--data-dir", t.TempDir()})
	if err == nil || exitCode(err) != 2 {
		t.Fatalf("got %v (exit %d), want a usage error", err, exitCode(err))
	}
}

func TestServeRunsSelectedServices(t *testing.T) {
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
