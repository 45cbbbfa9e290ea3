package kvstore_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/kvstore"
	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// describe returns an entry of a watch as a line ("marker" for nil). The delta is
// left out when withDelta is false: the messages still to come when the server sent
// the entry, which depends on when it sent it.
func describe(e jetstream.KeyValueEntry, withDelta bool) string {
	if e == nil {
		return "marker"
	}
	s := fmt.Sprintf("%s/%s=%q rev=%d op=%v created=%s",
		e.Bucket(), e.Key(), e.Value(), e.Revision(), e.Operation(), e.Created().Format(time.RFC3339Nano))
	if withDelta {
		s += fmt.Sprintf(" delta=%d", e.Delta())
	}
	return s
}

// next returns the next n entries of w (described, with their delta if withDelta),
// failing the test if w closes or delivers nothing for a long while.
func next(t *testing.T, w jetstream.KeyWatcher, n int, withDelta bool) []string {
	t.Helper()
	var out []string
	for range n {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				t.Fatalf("the watch closed after %q", out)
			}
			out = append(out, describe(e, withDelta))
		case <-time.After(30 * time.Second):
			t.Fatalf("the watch delivered nothing more after %q", out)
		}
	}
	return out
}

// TestWatchDeliversWhatKVWatchDelivers: kvstore.Watch's entries are kv.Watch's —
// key, value, revision, delta, creation time and operation of values, deletes, purges
// and TTL expiry markers, the initial values then the nil marker — for a whole bucket
// and for one key, and Stop closes Updates.
func TestWatchDeliversWhatKVWatchDelivers(t *testing.T) {
	s := natstest.Start(t)
	js := s.JetStream(t)
	nc := js.Conn()
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "w", LimitMarkerTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}

	// An empty bucket: the marker alone.
	mine, err := kvstore.WatchAll(ctx, nc, kv)
	if err != nil {
		t.Fatal(err)
	}
	stock, err := kv.WatchAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := next(t, mine, 1, true), next(t, stock, 1, true); !slices.Equal(got, want) {
		t.Fatalf("empty bucket: got %q, want %q", got, want)
	}
	stopBoth(t, mine, stock)

	// Initial values: a value updated, a delete, a purge, a TTL expiry marker.
	put := func(k, v string) {
		t.Helper()
		if _, err := kv.Put(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	put("a", "1")
	put("a", "2")
	put("b.x", "1")
	put("c", "1")
	if err := kv.Delete(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	put("d", "1")
	if err := kv.Purge(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	expire(t, ctx, nc, kv, "e")

	type pair struct {
		name        string
		mine, stock jetstream.KeyWatcher
	}
	var pairs []pair
	for _, key := range []string{">", "a"} {
		mine, err := kvstore.Watch(ctx, nc, kv, key)
		if err != nil {
			t.Fatal(err)
		}
		stock, err := kv.Watch(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		pairs = append(pairs, pair{key, mine, stock})
	}
	initial := map[string]int{">": 6, "a": 2} // with the marker
	for _, p := range pairs {
		got, want := next(t, p.mine, initial[p.name], true), next(t, p.stock, initial[p.name], true)
		if !slices.Equal(got, want) {
			t.Errorf("watch %s, initial values: got\n%q\nwant\n%q", p.name, got, want)
		}
		if got[len(got)-1] != "marker" {
			t.Errorf("watch %s, initial values: got %q, want the marker last", p.name, got)
		}
	}

	// Changes: a value, a delete, a new key, a purge, a TTL expiry marker. Each to
	// a key of its own: the bucket keeps one revision per key, and a revision
	// superseded before a consumer sent it is never sent (to either watch), which
	// a loaded machine made happen here (a's value, deleted at once after).
	put("a", "3")
	if err := kv.Delete(ctx, "b.x"); err != nil {
		t.Fatal(err)
	}
	put("g", "1")
	if err := kv.Purge(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	expire(t, ctx, nc, kv, "f")
	changes := map[string]int{">": 6, "a": 1}
	for _, p := range pairs {
		got, want := next(t, p.mine, changes[p.name], false), next(t, p.stock, changes[p.name], false)
		if !slices.Equal(got, want) {
			t.Errorf("watch %s, changes: got\n%q\nwant\n%q", p.name, got, want)
		}
		stopBoth(t, p.mine, p.stock)
	}
}

// expire creates key in kv (on nc) with a 1 s TTL and waits for the server's expiry
// marker.
func expire(t *testing.T, ctx context.Context, nc *nats.Conn, kv jetstream.KeyValue, key string) {
	t.Helper()
	if _, err := kv.Create(ctx, key, []byte("ttl"), jetstream.KeyTTL(time.Second)); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		e, err := kvstore.ReadLast(ctx, nc, kv.Bucket(), key)
		if err != nil {
			return err
		}
		if e.Header.Get(jetstream.MarkerReasonHeader) == "" {
			return fmt.Errorf("%s has no expiry marker yet", key)
		}
		return nil
	})
}

// stopBoth stops both watches and checks that their Updates close.
func stopBoth(t *testing.T, ws ...jetstream.KeyWatcher) {
	t.Helper()
	for i, w := range ws {
		if err := w.Stop(); err != nil {
			t.Fatalf("watch %d: stop: %v", i, err)
		}
		for closed := false; !closed; {
			select {
			case _, ok := <-w.Updates():
				closed = !ok
			case <-time.After(30 * time.Second):
				t.Fatalf("watch %d: Updates did not close after Stop", i)
			}
		}
	}
}

// TestStopEndsAWatchNobodyReads: a watch stopped while its updates channel is full
// (a burst its follower had not read yet when it stopped following: its context
// ended, or the bucket was recreated under it) lets go of the goroutine that
// delivers to it, and closes Updates, without anyone reading. Before, that
// goroutine stayed blocked on the full channel for good, holding the watch's lock
// and the messages buffered behind it; Updates never closed.
func TestStopEndsAWatchNobodyReads(t *testing.T) {
	s := natstest.Start(t)
	js := s.JetStream(t)
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "full"})
	if err != nil {
		t.Fatal(err)
	}
	w, err := kvstore.WatchAll(ctx, js.Conn(), kv)
	if err != nil {
		t.Fatal(err)
	}
	// More than the channel holds (the marker takes one place).
	for i := range cap(w.Updates()) + 10 {
		if _, err := kv.Put(ctx, fmt.Sprint("k", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := len(w.Updates()); n < cap(w.Updates()) {
			return fmt.Errorf("%d entries waiting, want the channel full", n)
		}
		return nil
	})
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := watchDeliveries(); n > 0 {
			return fmt.Errorf("%d goroutines still deliver to a stopped watch", n)
		}
		return nil
	})
	// Updates ends after what was in the channel when the watch stopped.
	n := 0
	for range w.Updates() {
		n++
	}
	if n > cap(w.Updates()) {
		t.Fatalf("read %d entries after Stop, more than the channel held", n)
	}
}

// watchDeliveries counts the goroutines inside kvstore.Watch's delivery callback.
func watchDeliveries() int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "kvstore.watch.func") {
			n++
		}
	}
	return n
}
