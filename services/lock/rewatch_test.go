package lock

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// watchedStore opens the locks bucket on a fresh server with its watch running until
// the test ends, holding a lock named before, cached.
func watchedStore(t *testing.T, logs *natstest.Buffer) (context.Context, jetstream.JetStream, *store) {
	t.Helper()
	srv := natstest.Start(t)
	js := srv.JetStream(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	st, err := openStore(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.watch(ctx, &wg, logs.Logger()); err != nil {
		t.Fatal(err)
	}
	writeHeld(t, ctx, st, "before")
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, ok := st.cached(KeyFor("before")); !ok {
			return errors.New("the watch has not cached the lock")
		}
		return nil
	})
	return ctx, js, st
}

// writeHeld writes lock name, held exclusively by a session, through st.
func writeHeld(t *testing.T, ctx context.Context, st *store, name string) {
	t.Helper()
	rec := &record{Name: name, Holders: []holder{{Session: "s1", Mode: wire.LockExclusive, Scope: wire.ScopeSession, GrantedAt: 1}}}
	if _, err := st.write(ctx, KeyFor(name), rec, 0, nil); err != nil {
		t.Fatal(err)
	}
}

// recreateAndWaitFor has another instance create the bucket again and write lock
// after in it; st must then cache after, and no longer before, and count its
// holder's locks from what it caches.
func recreateAndWaitFor(t *testing.T, ctx context.Context, js jetstream.JetStream, st *store, within time.Duration) {
	t.Helper()
	other, err := openStore(ctx, js, 1) // another instance, creating the bucket again
	if err != nil {
		t.Fatal(err)
	}
	writeHeld(t, ctx, other, "after")
	natstest.CheckFor(t, within, 20*time.Millisecond, func() error {
		if e, ok := st.cached(KeyFor("after")); !ok || e.rec == nil {
			return errors.New("the store has not learnt the lock written in the bucket created again")
		}
		if _, ok := st.cached(KeyFor("before")); ok {
			return errors.New("the store still caches the lock gone with the bucket")
		}
		// Its holder holds the lock written again, and not the one gone.
		return wantIndexed(st, map[string]int{"s1": 1})
	})
}

// TestStoreOutlivesItsWatch deletes the locks bucket under a store's watch: nats.go
// cannot recreate the watch's consumer and ends it. The store loads the bucket again
// once it exists: it learns the locks written since and forgets those gone.
func TestStoreOutlivesItsWatch(t *testing.T) {
	t.Parallel()
	logs := &natstest.Buffer{}
	ctx, js, st := watchedStore(t, logs)
	if err := js.DeleteStream(ctx, "KV_"+Bucket); err != nil {
		t.Fatal(err)
	}
	// The watch's consumer misses its heartbeats and cannot be recreated (10 s).
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "watch of the locks bucket ended") {
			return errors.New("the store has not noticed its watch ended")
		}
		return nil
	})
	recreateAndWaitFor(t, ctx, js, st, 10*time.Second)
}

// TestStoreFollowsABucketCreatedAgainAtOnce deletes the locks bucket and creates it
// again before the watch's consumer misses a heartbeat: nats.go then recreates the
// consumer on the new stream, after the last revision it delivered, and the watch
// goes on without the new bucket's first revisions and without an error. The store
// notices the new stream and loads the bucket again.
func TestStoreFollowsABucketCreatedAgainAtOnce(t *testing.T) {
	t.Parallel()
	ctx, js, st := watchedStore(t, &natstest.Buffer{})
	if err := js.DeleteStream(ctx, "KV_"+Bucket); err != nil {
		t.Fatal(err)
	}
	recreateAndWaitFor(t, ctx, js, st, 30*time.Second)
}
