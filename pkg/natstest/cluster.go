package natstest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/embedded"
)

// FreeAddrs returns n loopback addresses (host:port) free now, for listeners started
// a moment later: the route addresses every node of a cluster must know before any
// of them starts.
func FreeAddrs(t testing.TB, n int) []string {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("natstest: free port: %v", err)
		}
		addrs[i] = l.Addr().String()
		_ = l.Close()
	}
	return addrs
}

// StartCluster starts n servers as the nodes of one NATS cluster with clustered
// JetStream, each with the options given, and returns once JetStream answers. The
// nodes share their service and system passwords, as every node of a cluster must.
// They stop when the test ends.
func StartCluster(t testing.TB, n int, opts ...Option) []*Server {
	t.Helper()
	routes := FreeAddrs(t, n)
	servers := make([]*Server, n)
	for i := range servers {
		var others []string
		for j, r := range routes {
			if j != i {
				others = append(others, "nats://"+r)
			}
		}
		servers[i] = Start(t, append([]Option{func(c *embedded.Config) {
			c.Name = fmt.Sprintf("roster-test-%d", i)
			c.ServicePassword = "natstest-service"
			c.SystemPassword = "natstest-system"
			c.Cluster = embedded.Cluster{Name: "roster-test", Listen: routes[i], Routes: others}
		}}, opts...)...)
	}
	js := servers[0].JetStream(t)
	CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		return err
	})
	// Every node a member with current stats: until then a stream of n copies is
	// refused "no suitable peers for placement" (seen in CI).
	CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		for _, s := range servers {
			if peers := s.JetStreamClusterPeers(); len(peers) > 0 {
				if len(peers) < n {
					return fmt.Errorf("natstest: %d of %d nodes can hold a stream", len(peers), n)
				}
				return nil
			}
		}
		return errors.New("natstest: no meta leader")
	})
	return servers
}

// StepDown asks a stream's leader to hand over to another replica.
func StepDown(ctx context.Context, nc *nats.Conn, stream string) error {
	reply, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.LEADER.STEPDOWN."+stream, nil)
	if err != nil {
		return err
	}
	var resp struct {
		Success bool `json:"success"`
		Error   *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return err
	}
	if !resp.Success {
		return fmt.Errorf("stepdown of %s: %+v", stream, resp.Error)
	}
	return nil
}

// ConsumerNodes returns the consumers of a stream and the node each is on (its
// leader's name); it fails the test if they cannot be listed.
func ConsumerNodes(t testing.TB, js jetstream.JetStream, stream string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	l := s.ListConsumers(ctx)
	for ci := range l.Info() {
		if ci.Cluster != nil {
			out[ci.Name] = ci.Cluster.Leader
		}
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
