package kvstore_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/kvstore"
	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// When the node holding a watch's consumer dies, kvstore.Watch delivers the keys
// written after the death while kv.WatchAll, whose consumer was on the same node,
// still delivers nothing; both then deliver the same entries. Both watches
// delivered a key just before the kill, so nats.go's first check of the stock
// watch after it (within 10 s) finds it active: the stock watch recreates its
// consumer at its second check, 10 s or more after the kill, while kvstore.Watch
// checks every two heartbeats. The node killed is neither the meta leader (the
// connection's node) nor the stream's leader: the writes after the kill and the
// consumer's recreation wait for no election.
func TestWatchResumesWhenItsConsumersNodeDies(t *testing.T) {
	nodes := natstest.StartCluster(t, 3)
	ctx := context.Background()
	meta := slices.IndexFunc(nodes, func(n *natstest.Server) bool { return n.JetStreamIsLeader() })
	if meta < 0 {
		t.Fatal("no meta leader")
	}
	js := nodes[meta].JetStream(t)
	nc := js.Conn()
	kv, err := kvstore.CreateOrUpdateKeyValue(ctx, js, jetstream.KeyValueConfig{Bucket: "hb", Replicas: 3, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	putRetrying(t, kv, "k0")
	stream, err := js.Stream(ctx, "KV_hb")
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The nodes that may be killed.
	var victims []string
	for _, n := range nodes {
		if name := n.Name(); name != nodes[meta].Name() && name != info.Cluster.Leader {
			victims = append(victims, name)
		}
	}

	stock := placed(t, js, victims, func() (jetstream.KeyWatcher, error) { return kv.WatchAll(ctx) })
	defer stock.w.Stop()
	mine := placed(t, js, []string{stock.node}, func() (jetstream.KeyWatcher, error) { return kvstore.WatchAll(ctx, nc, kv) })
	defer mine.w.Stop()
	t.Logf("both consumers on %s; meta leader %s, stream leader %s", stock.node, nodes[meta].Name(), info.Cluster.Leader)

	putRetrying(t, kv, "before")
	for _, w := range []jetstream.KeyWatcher{stock.w, mine.w} {
		if got := next(t, w, 1, false)[0]; !strings.Contains(got, "/before=") {
			t.Fatalf("got %s, want the key before", got)
		}
	}
	victim := slices.IndexFunc(nodes, func(n *natstest.Server) bool { return n.Name() == stock.node })
	killed := time.Now()
	nodes[victim].Stop()
	const after = 3
	for i := range after {
		putRetrying(t, kv, fmt.Sprintf("after%d", i))
	}

	got := next(t, mine.w, after, false)
	mineAt := time.Since(killed)
	var early []string
	for drained := false; !drained; {
		select {
		case e := <-stock.w.Updates():
			early = append(early, describe(e, false))
		default:
			drained = true
		}
	}
	if len(early) > 0 {
		t.Fatalf("the stock watch delivered %q no later than kvstore.Watch (%v after the kill): it was not stalled, or kvstore.Watch was", early, mineAt)
	}
	want := next(t, stock.w, after, false)
	t.Logf("after the kill: kvstore.Watch delivered the keys in %v, kv.WatchAll in %v", mineAt, time.Since(killed))
	if !slices.Equal(got, want) {
		t.Fatalf("after the kill: got\n%q\nwant what kv.WatchAll delivered\n%q", got, want)
	}
}

// putRetrying writes key, retrying while the cluster cannot take the write.
func putRetrying(t *testing.T, kv jetstream.KeyValue, key string) {
	t.Helper()
	natstest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := kv.Put(ctx, key, []byte("v"))
		return err
	})
}

type placedWatch struct {
	w    jetstream.KeyWatcher
	node string
}

// placed starts watches with start until one's consumer is on one of the nodes
// named, and returns it after its initial values (the others are stopped). nats-server
// places an R1 consumer on any replica of the stream.
func placed(t *testing.T, js jetstream.JetStream, nodes []string, start func() (jetstream.KeyWatcher, error)) placedWatch {
	t.Helper()
	for range 100 {
		before := natstest.ConsumerNodes(t, js, "KV_hb")
		w, err := start()
		if err != nil {
			t.Fatal(err)
		}
		for e := range w.Updates() {
			if e == nil {
				break
			}
		}
		for name, node := range natstest.ConsumerNodes(t, js, "KV_hb") {
			if _, ok := before[name]; !ok && slices.Contains(nodes, node) {
				return placedWatch{w, node}
			}
		}
		if err := w.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatalf("no watch's consumer was placed on %v", nodes)
	return placedWatch{}
}
