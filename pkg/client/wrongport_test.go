package client_test

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// TestConnectNamesAWrongPort: Connect given a node's cluster route port, or its
// HTTP monitoring port, says which it is and that clients connect to the client
// port. The route port refused the connection with nats-server's bare
// "Authorization Violation", which read as refused credentials
// (ErrUnauthenticated); the monitoring port, which answers nothing until it reads
// an HTTP request, left only "read tcp …: i/o timeout".
func TestConnectNamesAWrongPort(t *testing.T) {
	t.Parallel()
	s := natstest.StartCluster(t, 2, func(c *embedded.Config) { c.Monitor = "127.0.0.1:-1" })[0]
	route := "nats://" + s.ClusterAddr().String()
	monitor := "nats://" + s.MonitorAddr().String()
	const clientPort = "clients connect to the client port, 4222 by default"
	for _, tc := range []struct {
		name, url string
		opts      []client.ConnectOption
		want      string
	}{
		// nats.go follows the client URLs a route port's INFO advertises, and
		// connects through them; a cluster that advertises none (no_advertise), or
		// ones the client cannot reach, leaves it with the route port's refusal.
		// IgnoreDiscoveredServers stands for that.
		{"route port", route, []client.ConnectOption{client.WithNATSOptions(nats.IgnoreDiscoveredServers())},
			route + " is a NATS cluster route port, not a client port (" + clientPort + ")"},
		{"monitoring port", monitor, nil,
			monitor + " answers HTTP, as a NATS monitoring port does, not the NATS protocol (" + clientPort + ")"},
		{"monitoring port in a list", "nats://127.0.0.1:1, " + s.MonitorAddr().String(), nil,
			s.MonitorAddr().String() + " answers HTTP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client.Connect(tc.url, tc.opts...)
			if err == nil {
				_ = c.Close(t.Context())
				t.Fatal("connected")
			}
			if !errors.Is(err, client.ErrUnavailable) || errors.Is(err, client.ErrUnauthenticated) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want unavailable: %s", err, tc.want)
			}
		})
	}
	// The route port's advertised client URL is followed as before.
	c, err := client.Connect(route)
	if err != nil {
		t.Fatalf("route port advertising its client URL: %v", err)
	}
	_ = c.Close(t.Context())
	// A client port that refuses the credentials is left to say so.
	_, err = client.Connect(s.ClientURL(), client.WithNATSOptions(nats.UserInfo("nobody", "wrong")))
	if !errors.Is(err, client.ErrUnauthenticated) || strings.Contains(err.Error(), "port") {
		t.Errorf("wrong credentials: got %v, want unauthenticated without a hint", err)
	}
	// A port nothing listens on gets no hint.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "nats://" + l.Addr().String()
	_ = l.Close()
	if _, err := client.Connect(closed); !errors.Is(err, client.ErrUnavailable) || strings.Contains(err.Error(), "port") {
		t.Errorf("closed port: got %v, want unavailable without a hint", err)
	}
}

// TestConnectDoesNotRepeatAnUnparsableURL: a URL whose password keeps it from
// parsing (a '/' of base64, a '%' not followed by hex digits) failed Connect with
// url.Parse's error as nats.go returns it, which repeats the URL whole, and
// "cannot connect to" repeated it once more: the password reached the caller's log.
// The error still says what is wrong, and with no credentials in the URL it names
// the URL.
func TestConnectDoesNotRepeatAnUnparsableURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ url, secret, piece string }{
		{"nats://alice:k7Q/x9Z+Secret@127.0.0.1:4222", "k7Q/x9Z+Secret", "k7Q"},
		{"nats://alice:ab%zzSecret@127.0.0.1:4222", "ab%zzSecret", "%zz"},
		{"nats://127.0.0.1:4222, nats://k7Q/x9Z+Secret@127.0.0.1:4223", "k7Q/x9Z+Secret", "k7Q"},
	} {
		c, err := client.Connect(tc.url)
		if err == nil {
			_ = c.Close(t.Context())
			t.Fatalf("%s: connected", tc.url)
		}
		if !errors.Is(err, client.ErrBadRequest) || errors.Is(err, client.ErrUnavailable) || !strings.Contains(err.Error(), "does not parse") {
			t.Errorf("got %v, want bad_request (no retry makes it parse): the URL does not parse", err)
		}
		if strings.Contains(err.Error(), tc.secret) || strings.Contains(err.Error(), tc.piece) {
			t.Errorf("the error repeats the password (or a piece of it, %q): %v", tc.piece, err)
		}
	}
	_, err := client.Connect("nats://127.0.0.1:port")
	if !errors.Is(err, client.ErrBadRequest) || !strings.Contains(err.Error(), `server URL "nats://127.0.0.1:port" does not parse`) {
		t.Errorf("a URL without credentials: got %v, want it named", err)
	}
	// A well-formed URL with credentials, a trailing slash and all, is tried.
	_, err = client.Connect("nats://alice:wonderland@127.0.0.1:1/")
	if !errors.Is(err, client.ErrUnavailable) || strings.Contains(err.Error(), "does not parse") || strings.Contains(err.Error(), "wonderland") {
		t.Errorf("a well-formed URL: got %v, want it tried, and not named with its password", err)
	}
}
