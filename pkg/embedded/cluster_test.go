package embedded_test

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/conf"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// The route port admits only peers that share the cluster's route password,
// derived from the system password every node shares: a server that merely
// reaches the port (a different system password here, none at all on a raw
// connection) does not join, where it would be sent every account's traffic.
func TestRoutesAdmitOnlyNodesOfTheCluster(t *testing.T) {
	var mu sync.Mutex
	var logged strings.Builder
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logged.Write(p)
	}), nil))
	node := func(name, systemPassword string, routes []string, logger *slog.Logger) *embedded.Server {
		t.Helper()
		s, err := embedded.Start(embedded.Config{
			Name: name, Listen: "127.0.0.1:-1", DataDir: t.TempDir(), AllowAnonymous: true,
			SystemPassword: systemPassword,
			Cluster:        embedded.Cluster{Listen: "127.0.0.1:0", Routes: routes},
		}, logger)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Stop)
		return s
	}
	// JetStream in a cluster wants a route configured: one to nowhere, as a node
	// whose peers are not up yet has.
	a := node("a", "cluster-system-pw", []string{"nats://127.0.0.1:1"}, logger)
	route := []string{"nats://" + a.ClusterAddr().String()}

	// The port says it wants credentials before a peer sends any.
	conn, err := net.DialTimeout("tcp", a.ClusterAddr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	info, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(info, "INFO ") || !strings.Contains(info, `"auth_required":true`) {
		t.Errorf("route port greets with %q, want an INFO with auth_required", info)
	}

	stranger := node("stranger", "another-system-pw", route, nil)
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if !strings.Contains(logged.String(), "authentication error") {
			return errors.New("no route refused yet")
		}
		return nil
	})
	if n := stranger.NumRoutes(); n != 0 {
		t.Errorf("a node with another system password has %d routes, want none", n)
	}

	peer := node("peer", "cluster-system-pw", route, nil)
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if a.NumRoutes() == 0 || peer.NumRoutes() == 0 {
			return errors.New("no route between the nodes yet")
		}
		return nil
	})
	if n := stranger.NumRoutes(); n != 0 {
		t.Errorf("after a peer joined, the stranger has %d routes, want none", n)
	}
}

// A route password read from the environment, as nats.conf reads
// $NATS_ROUTE_PASSWORD, is the string itself: nats-server parses a variable's
// value as configuration, where leading digits make a number.
func TestRoutePasswordReadsAsAString(t *testing.T) {
	for i := range 200 {
		pw := embedded.RoutePassword(fmt.Sprintf("system-%d", i))
		t.Setenv("ROSTER_TEST_ROUTE_PASSWORD", pw)
		got, err := conf.Parse("password: $ROSTER_TEST_ROUTE_PASSWORD")
		if err != nil {
			t.Fatalf("%q: %v", pw, err)
		}
		if v, ok := got["password"].(string); !ok || v != pw {
			t.Fatalf("%q reads as %#v", pw, got["password"])
		}
	}
	// What an unprefixed hex password could be.
	t.Setenv("ROSTER_TEST_ROUTE_PASSWORD", "1234567890123456e")
	if got, err := conf.Parse("password: $ROSTER_TEST_ROUTE_PASSWORD"); err == nil {
		if _, ok := got["password"].(string); ok {
			t.Fatal("digits with a size suffix read as a string: the test shows nothing")
		}
	}
}
