package registry

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// startClusterRegistries starts a 3-node cluster with the auth double and two
// registry instances keeping 3 copies: a on node 0, b on node 2.
func startClusterRegistries(t *testing.T) (nodes []*natstest.Server, a, b *instance) {
	t.Helper()
	nodes = natstest.StartCluster(t, 3, func(c *embedded.Config) { c.SyncInterval = time.Minute })
	startAuth(t, nodes[0])
	a = startRegistry(t, nodes[0], Config{Replicas: 3})
	b = startRegistry(t, nodes[2], Config{Replicas: 3})
	return nodes, a, b
}

// getThrough asks inst, as the session itself, for the session.
func getThrough(ctx context.Context, inst *instance, c *client) (*wire.SessionGetResponse, error) {
	return inst.handleGet(ctx, &endpoint.Call{SessionID: c.id, Token: c.token}, &wire.SessionGetRequest{})
}

// closeThrough closes the session through inst, as the session itself.
func closeThrough(ctx context.Context, inst *instance, c *client) error {
	_, err := inst.handleClose(ctx, &endpoint.Call{SessionID: c.id, Token: c.token}, &wire.SessionCloseRequest{})
	return err
}

// TestCloseThenGetAcrossInstancesThroughStepDowns: a session closed through one
// registry instance (the close answered) is never reported open by a get through
// another instance, on another node, while the sessions bucket's leader is made to
// step down between the close and the get. An unavailable answer is allowed (no
// leader yet); an open session is not.
func TestCloseThenGetAcrossInstancesThroughStepDowns(t *testing.T) {
	t.Parallel()
	nodes, a, b := startClusterRegistries(t)
	nc := nodes[1].ClientConn(t)
	sys := nodes[1].ServiceConn(t)
	const rounds = 40
	var violations, unavailable, closed int
	for i := range rounds {
		c, _ := open(t, nc, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		if err := closeThrough(ctx, a, c); err != nil {
			cancel()
			t.Fatalf("round %d: close: %v", i, err)
		}
		// Every other round, the leader steps down right after the close.
		if i%2 == 0 {
			if err := natstest.StepDown(ctx, sys, "KV_"+sessions.Bucket); err != nil {
				t.Logf("round %d: step-down: %v", i, err)
			}
		}
		resp, err := getThrough(ctx, b, c)
		cancel()
		switch code := wire.CodeOf(err); {
		case err == nil:
			violations++
			t.Errorf("round %d: a get through the other instance after the close answered %s (revision %d)", i, resp.Session.State, resp.Session.Revision)
		case code == wire.CodeSessionClosed || code == wire.CodeSessionNotFound:
			closed++
		case code == wire.CodeUnavailable:
			unavailable++
		default:
			t.Fatalf("round %d: get: %v", i, err)
		}
	}
	t.Logf("%d rounds: %d closed, %d unavailable, %d reported open", rounds, closed, unavailable, violations)
}

// TestGetNeverAnswersFromALaggingReplica: the node that instance b reads through
// misses a close (it is down while the other two store it), then is the only node
// left: it holds the session's record from before the close, and no leader can be
// elected. A get through b must not report the session open — the close was
// answered — but say that storage is unavailable.
func TestGetNeverAnswersFromALaggingReplica(t *testing.T) {
	t.Parallel()
	nodes, a, _ := startClusterRegistries(t)
	// b reaches node 2 over TCP, so that its connection comes back when node 2
	// is restarted on the same address.
	lag := nodes[2]
	cfg := lag.Config()
	u, err := url.Parse(lag.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = u.Host
	bnc, err := nats.Connect(lag.ClientURL(), nats.UserInfo(embedded.ServiceUser, cfg.ServicePassword),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bnc.Close)
	bs, err := New(bnc, Config{Replicas: 3, DrainTimeout: time.Second}, testPolicy(), noop.NewTracerProvider(), natstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	natstest.Run(t, bs.Run, bnc.Close)
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { return bs.track.ready(t.Context()) })
	b := &instance{Service: bs}

	c, _ := open(t, nodes[0].ClientConn(t), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if resp, err := getThrough(ctx, b, c); err != nil || resp.Session.State != wire.StateActive {
		t.Fatalf("before: got %+v, %v; want the session active", resp, err)
	}

	lag.Stop()
	natstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return closeThrough(cctx, a, c)
	})
	a.stop()
	nodes[0].Stop()
	nodes[1].Stop()
	natstest.Start(t, func(c *embedded.Config) { *c = cfg })
	natstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if !bnc.IsConnected() {
			return errors.New("b not reconnected")
		}
		return nil
	})

	gctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := getThrough(gctx, b, c)
	switch code := wire.CodeOf(err); {
	case err == nil:
		t.Fatalf("a get through b after the close answered %s (revision %d): read from the lagging replica", resp.Session.State, resp.Session.Revision)
	case code != wire.CodeUnavailable:
		t.Fatalf("got %v, want unavailable", err)
	}
}

// startPartitionableCluster starts a 3-node cluster whose node 2 reaches the other
// two only through the partitions it returns (nodes 0 and 1 route to each other
// directly and know no route to node 2).
func startPartitionableCluster(t *testing.T) (nodes []*natstest.Server, cut []*natstest.Partition) {
	t.Helper()
	routes := natstest.FreeAddrs(t, 3)
	cut = []*natstest.Partition{natstest.StartPartition(t, routes[0]), natstest.StartPartition(t, routes[1])}
	// Node 2 admits no route (a password of its own): nodes 0 and 1, told of it by
	// each other, cannot connect to it directly. It presents theirs through the
	// partitions.
	pw := embedded.RoutePassword("natstest-system")
	through := func(p *natstest.Partition) string {
		return "nats://" + embedded.RouteUser + ":" + pw + "@" + strings.TrimPrefix(p.URL(), "nats://")
	}
	peers := [][]string{{"nats://" + routes[1]}, {"nats://" + routes[0]}, {through(cut[0]), through(cut[1])}}
	for i := range routes {
		nodes = append(nodes, natstest.Start(t, func(c *embedded.Config) {
			c.Name = fmt.Sprintf("roster-test-%d", i)
			c.ServicePassword = "natstest-service"
			c.SystemPassword = "natstest-system"
			c.SyncInterval = time.Minute
			c.Cluster = embedded.Cluster{Name: "roster-test", Listen: routes[i], Routes: peers[i]}
			if i == 2 {
				c.Cluster.Password = "node-2-admits-no-route"
			}
		}))
	}
	natstest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		for _, s := range nodes {
			if peers := s.JetStreamClusterPeers(); len(peers) > 0 && len(peers) < 3 {
				return fmt.Errorf("%d of 3 nodes can hold a stream", len(peers))
			} else if len(peers) == 3 {
				return nil
			}
		}
		return errors.New("no meta leader")
	})
	return nodes, cut
}

// TestGetThroughAPartitionedNodeIsNotAnOldRecord: node 2, not the sessions
// bucket's leader, is cut off from the other two, which go on without it; a
// session is closed through an instance on node 0, and the close answered. A get
// through an instance on node 2 — whose copy of the bucket holds the record from
// before the close, and which no leader answers — must not report the session
// open, but say that storage is unavailable.
func TestGetThroughAPartitionedNodeIsNotAnOldRecord(t *testing.T) {
	t.Parallel()
	nodes, cut := startPartitionableCluster(t)
	startAuth(t, nodes[0])
	a := startRegistry(t, nodes[0], Config{Replicas: 3})
	b := startRegistry(t, nodes[2], Config{Replicas: 3})
	c, _ := open(t, nodes[0].ClientConn(t), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if resp, err := getThrough(ctx, b, c); err != nil || resp.Session.State != wire.StateActive {
		t.Fatalf("before: got %+v, %v; want the session active", resp, err)
	}
	// The bucket's leader on node 0 or 1, so that they go on writing without an
	// election once node 2 is cut off.
	js := nodes[0].JetStream(t)
	natstest.CheckFor(t, 30*time.Second, 200*time.Millisecond, func() error {
		st, err := js.Stream(ctx, "KV_"+sessions.Bucket)
		if err != nil {
			return err
		}
		if l := st.CachedInfo().Cluster.Leader; l == nodes[2].Name() || l == "" {
			_ = natstest.StepDown(ctx, js.Conn(), "KV_"+sessions.Bucket)
			return fmt.Errorf("leader %q", l)
		}
		return nil
	})
	// Every route of node 2 goes through a partition.
	rz, err := nodes[2].Routez(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rz.Routes {
		if addr := fmt.Sprintf("nats://%s:%d", r.IP, r.Port); addr != cut[0].URL() && addr != cut[1].URL() {
			t.Fatalf("node 2 has a route to %s at %s, not through a partition", r.RemoteName, addr)
		}
	}
	// Cut off: node 2 sees its routes close (and cannot open new ones), so that
	// a request on it reaches nothing but what node 2 runs.
	for _, p := range cut {
		p.Cut()
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := nodes[2].NumRoutes(); n > 0 {
			return fmt.Errorf("node 2 has %d routes", n)
		}
		return nil
	})
	natstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := closeThrough(cctx, a, c); err != nil && wire.CodeOf(err) != wire.CodeSessionClosed {
			return err
		}
		return nil
	})

	// Node 2's copy of the bucket answers direct gets (a follower joins their queue
	// group once it has caught up with what it knows, checked every 2 s).
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		sz, err := nodes[2].Subsz(&server.SubszOptions{Account: embedded.ServicesAccount, Subscriptions: true,
			Test: "$JS.API.DIRECT.GET.KV_" + sessions.Bucket + ".$KV." + sessions.Bucket + "." + c.id})
		if err != nil {
			return err
		}
		if sz.Total == 0 {
			return errors.New("node 2 answers no direct get yet")
		}
		return nil
	})
	gctx, gcancel := context.WithTimeout(ctx, 3*time.Second)
	defer gcancel()
	resp, err := getThrough(gctx, b, c)
	switch code := wire.CodeOf(err); {
	case err == nil:
		t.Fatalf("a get through node 2 after the close answered %s (revision %d): the record from before the close", resp.Session.State, resp.Session.Revision)
	case code != wire.CodeUnavailable:
		t.Fatalf("got %v, want unavailable", err)
	}
}
