package kvstore_test

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/kvstore"
	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// TestWatchConvergesAcrossAReset: when the consumer behind a watch goes away
// (deleted here, as when its node dies), the watch recreates it after the last
// revision it delivered and goes on to the bucket's current value of every key,
// revisions only rising. The revisions superseded meanwhile are not delivered: the
// bucket keeps one per key, so they are gone — for nats.go's kv.Watch as for this
// one. A follower of a watch holds the latest value of each key, never a sequence.
func TestWatchConvergesAcrossAReset(t *testing.T) {
	s := natstest.Start(t)
	js := s.JetStream(t)
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "r"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	put := func(k, v string) {
		t.Helper()
		if _, err := kv.Put(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
		want[k] = v
	}
	for i := range 3 {
		put(fmt.Sprint("k", i), "start")
	}
	w, err := kvstore.WatchAll(ctx, js.Conn(), kv)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	got := map[string]string{}
	var last uint64
	converge := func() {
		t.Helper()
		for !maps.Equal(got, want) {
			select {
			case e := <-w.Updates():
				if e == nil {
					continue
				}
				if e.Revision() <= last {
					t.Fatalf("revision %d after %d", e.Revision(), last)
				}
				last = e.Revision()
				got[e.Key()] = string(e.Value())
			case <-time.After(30 * time.Second):
				t.Fatalf("the watch holds %v, the bucket %v", got, want)
			}
		}
	}
	converge()
	stream, err := js.Stream(ctx, "KV_r")
	if err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		names := stream.ConsumerNames(ctx)
		for name := range names.Name() {
			if err := stream.DeleteConsumer(ctx, name); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 5 {
			put(fmt.Sprint("k", i%4), fmt.Sprint(round, "-", i))
		}
		converge()
	}
}
