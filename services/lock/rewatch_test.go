package lock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestStoreOutlivesItsWatch deletes the locks bucket under a store's watch: nats.go
// cannot recreate the watch's consumer and ends it. The store loads the bucket again
// once it exists: it learns the locks written since and forgets those gone.
func TestStoreOutlivesItsWatch(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	js := srv.JetStream(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	st, err := openStore(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	logs := &natstest.Buffer{}
	if err := st.watch(ctx, &wg, logs.Logger()); err != nil {
		t.Fatal(err)
	}
	held := func(name string) *record {
		return &record{Name: name, Holders: []holder{{Session: "s1", Mode: wire.LockExclusive, Scope: wire.ScopeSession, GrantedAt: 1}}}
	}
	if _, err := st.write(ctx, KeyFor("before"), held("before"), 0); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, ok := st.cached(KeyFor("before")); !ok {
			return errors.New("the watch has not cached the lock")
		}
		return nil
	})

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
	other, err := openStore(ctx, js, 1) // another instance, creating the bucket again
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.write(ctx, KeyFor("after"), held("after"), 0); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if e, ok := st.cached(KeyFor("after")); !ok || e.rec == nil {
			return errors.New("the store has not learnt the lock written after its watch ended")
		}
		if _, ok := st.cached(KeyFor("before")); ok {
			return fmt.Errorf("the store still caches the lock gone with the bucket")
		}
		return nil
	})
}

// TestStoreFollowsABucketCreatedAgainAtOnce deletes the locks bucket and creates it
// again before the watch's consumer misses a heartbeat: nats.go then recreates the
// consumer on the new stream, after the last revision it delivered, and the watch
// goes on without the new bucket's first revisions and without an error. The store
// notices the new stream and loads the bucket again.
func TestStoreFollowsABucketCreatedAgainAtOnce(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	js := srv.JetStream(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	st, err := openStore(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.watch(ctx, &wg, natstest.Logger(t)); err != nil {
		t.Fatal(err)
	}
	held := func(name string) *record {
		return &record{Name: name, Holders: []holder{{Session: "s1", Mode: wire.LockExclusive, Scope: wire.ScopeSession, GrantedAt: 1}}}
	}
	for _, name := range []string{"a", "b", "c"} {
		if _, err := st.write(ctx, KeyFor(name), held(name), 0); err != nil {
			t.Fatal(err)
		}
	}
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, ok := st.cached(KeyFor("c")); !ok {
			return errors.New("the watch has not cached the lock")
		}
		return nil
	})

	if err := js.DeleteStream(ctx, "KV_"+Bucket); err != nil {
		t.Fatal(err)
	}
	other, err := openStore(ctx, js, 1) // another instance, creating the bucket again
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.write(ctx, KeyFor("after"), held("after"), 0); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if e, ok := st.cached(KeyFor("after")); !ok || e.rec == nil {
			return errors.New("the store has not learnt the lock written in the bucket created again")
		}
		if _, ok := st.cached(KeyFor("a")); ok {
			return fmt.Errorf("the store still caches a lock gone with the bucket")
		}
		return nil
	})
}
