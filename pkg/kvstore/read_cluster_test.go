package kvstore_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/kvstore"
	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// TestReaderSeesEveryAcknowledgedWriteInACluster: on a 3-node cluster with an R3
// bucket, a read through a Reader on any node's connection, right after a write
// the stream acknowledged, returns that write or a later one — also right after
// the stream's leader stepped down, and while the leader's node is dead and no
// leader is elected yet. A read may fail then (no leader answers); it may not
// return an older record.
func TestReaderSeesEveryAcknowledgedWriteInACluster(t *testing.T) {
	nodes := natstest.StartCluster(t, 3)
	ctx := context.Background()
	js := nodes[0].JetStream(t)
	if _, err := kvstore.CreateOrUpdateKeyValue(ctx, js, jetstream.KeyValueConfig{Bucket: "lin", Replicas: 3, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	jss := make([]jetstream.JetStream, len(nodes))
	readers := make([]*kvstore.Reader, len(nodes))
	for i, n := range nodes {
		jss[i] = n.JetStream(t)
		r, err := kvstore.NewReader(ctx, jss[i], "lin")
		if err != nil {
			t.Fatal(err)
		}
		if r.Direct() {
			t.Fatal("a Reader in a cluster uses direct gets")
		}
		readers[i] = r
	}

	var acked uint64 // the latest revision the stream acknowledged
	var stale, failed int
	// write writes the key through node w's connection; a write whose outcome is
	// unknown is settled by reading the key once a leader answers.
	write := func(w int, v string) error {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		rev, err := kvstore.CompareAndSet(wctx, jss[w], "lin", "k", acked, []byte(v))
		if err == nil {
			acked = rev
			return nil
		}
		// The write may have landed: what the leader has now counts as acknowledged.
		if e, rerr := kvstore.ReadLast(wctx, jss[w].Conn(), "lin", "k"); rerr == nil {
			acked = max(acked, e.Revision)
		}
		return err
	}
	read := func(i int, what string) {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		e, err := readers[i].Read(rctx, "k")
		switch {
		case err != nil:
			failed++
		case e.Revision < acked:
			stale++
			t.Errorf("%s: read through node %d returned revision %d, after revision %d was acknowledged", what, i, e.Revision, acked)
		}
	}

	sys := nodes[0].ServiceConn(t)
	for i := range 60 {
		if err := write(i%3, fmt.Sprint(i)); err != nil {
			continue
		}
		if i%3 == 0 {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := natstest.StepDown(sctx, sys, "KV_lin"); err != nil {
				t.Logf("step-down: %v", err)
			}
			cancel()
		}
		for r := range readers {
			read(r, fmt.Sprintf("write %d", i))
		}
	}

	// The leader's node dies: the others read while they elect a new leader.
	st, err := js.Stream(ctx, "KV_lin")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dead := slices.IndexFunc(nodes, func(n *natstest.Server) bool { return n.Name() == info.Cluster.Leader })
	if dead < 0 {
		t.Fatalf("no node is the leader %q", info.Cluster.Leader)
	}
	live := (dead + 1) % 3
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { return write(live, "before the death") })
	nodes[dead].Stop()
	elected := false
	for deadline := time.Now().Add(30 * time.Second); !elected && time.Now().Before(deadline); {
		for r := range readers {
			if r != dead {
				read(r, "no leader")
			}
		}
		elected = write(live, "after the death") == nil
	}
	if !elected {
		t.Fatal("no leader elected within 30 s")
	}
	for r := range readers {
		if r != dead {
			read(r, "the new leader's first write")
		}
	}
	t.Logf("stale reads: %d, failed reads: %d", stale, failed)
}
