package natstest

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/embedded"
)

// StartCluster starts n servers as the nodes of one NATS cluster with clustered
// JetStream, each with the options given, and returns once JetStream answers. The
// nodes share their service and system passwords, as every node of a cluster must.
// They stop when the test ends.
func StartCluster(t testing.TB, n int, opts ...Option) []*Server {
	t.Helper()
	routes := make([]string, n)
	for i := range routes {
		// A free port now, bound by the node a moment later: every node must know
		// the others' route addresses before any of them starts.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("natstest: route port: %v", err)
		}
		routes[i] = l.Addr().String()
		_ = l.Close()
	}
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
	return servers
}
