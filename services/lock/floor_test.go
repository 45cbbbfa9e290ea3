package lock

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/seed-3c836eab/roster/pkg/fence"
	"github.com/seed-3c836eab/roster/pkg/kvstore"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// grantAfterWrites has a session of e acquire a few locks, then lock name, and
// returns name's token: the bucket has revisions below it, as a bucket in use has.
func grantAfterWrites(t *testing.T, e *env, name string) uint64 {
	t.Helper()
	c := e.open(t, "admin", 0)
	for _, other := range []string{"a", "b", "c"} {
		c.mustAcquire(t, &wire.LockAcquireRequest{Name: other})
		c.mustRelease(t, other)
	}
	return c.mustAcquire(t, &wire.LockAcquireRequest{Name: name}).Token
}

// TestTokensClimbAcrossALostBucket loses the locks bucket under a resource that
// fences with a Guard — the bucket deleted and the lock service restarted, or the
// whole server started again on an empty data directory (a container without a
// volume) — and grants the same lock again. The new holder's token must be above the
// old holder's, so that the Guard admits the new holder's writes and refuses the old
// one's. Before the lock service created its bucket from a clock floor, the new bucket
// started at revision 1 and the Guard refused every new holder.
func TestTokensClimbAcrossALostBucket(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose func(t *testing.T, e *env, in *instance) *env
	}{
		{"bucket deleted", func(t *testing.T, e *env, in *instance) *env {
			in.stop()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := e.js.DeleteKeyValue(ctx, Bucket); err != nil {
				t.Fatal(err)
			}
			e.startLock(t, Config{})
			return e
		}},
		{"fresh data directory", func(t *testing.T, e *env, in *instance) *env {
			in.stop()
			e.stopRegistry()
			e.srv.Stop()
			fresh := newEnv(t)
			fresh.startLock(t, Config{})
			return fresh
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			in := e.startLock(t, Config{})
			old := grantAfterWrites(t, e, "orders/42")
			var guard fence.Guard
			if err := guard.Check("orders/42", old); err != nil {
				t.Fatal(err)
			}

			e = tc.lose(t, e, in)
			l := e.open(t, "admin", 0).mustAcquire(t, &wire.LockAcquireRequest{Name: "orders/42"})
			if l.Token <= old {
				t.Fatalf("after the bucket was lost the lock was granted with token %d, want above the old holder's %d", l.Token, old)
			}
			if err := guard.Check("orders/42", l.Token); err != nil {
				t.Fatalf("the guard refuses the new holder: %v", err)
			}
			if err := guard.Check("orders/42", old); err == nil {
				t.Fatal("the guard admits the old holder after the new one wrote")
			}
		})
	}
}

// TestBucketCreatedBeforeFloorsIsKept starts the lock service on a locks bucket
// created as versions before the floor created it (no first sequence), holding a
// lock: the bucket stays as it was — its record and revision, no first sequence —
// and its revisions go on from where they were, across a restart of the service.
func TestBucketCreatedBeforeFloorsIsKept(t *testing.T) {
	e := newEnv(t)
	ctx := ctx10(t)
	kv, err := kvstore.CreateOrUpdateKeyValue(ctx, e.js, BucketConfig(1)) // as openStore did
	if err != nil {
		t.Fatal(err)
	}
	a := e.open(t, "admin", 0)
	data, err := json.Marshal(&record{Format: recordFormat, Name: "kept", Holders: []holder{
		{Session: a.id, Mode: wire.LockExclusive, Scope: wire.ScopeSession, GrantedAt: time.Now().UnixMilli()}}})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := kv.Create(ctx, KeyFor("kept"), data)
	if err != nil {
		t.Fatal(err)
	}
	last := rev

	for round := range 2 {
		in := e.startLock(t, Config{})
		var list wire.LockListResponse
		if err := a.call(ctx, wire.SubjectLockList, &wire.LockListRequest{}, &list); err != nil {
			t.Fatal(err)
		}
		if len(list.Locks) != 1+round || list.Locks[0].Name != "kept" || len(list.Locks[0].Holders) != 1 ||
			list.Locks[0].Holders[0].Session != a.id || list.Locks[0].Holders[0].Token != rev {
			t.Fatalf("round %d: got locks %s, want kept held by %s with token %d", round, jsonString(list.Locks), a.id, rev)
		}
		_, err := e.open(t, "admin", 0).acquire(ctx, &wire.LockAcquireRequest{Name: "kept"})
		wantCode(t, err, wire.CodeTimeout)
		next := a.mustAcquire(t, &wire.LockAcquireRequest{Name: fmt.Sprint("new", round)})
		if next.Token != last+1 {
			t.Fatalf("round %d: a new lock got token %d, want %d: the bucket's revisions go on", round, next.Token, last+1)
		}
		last = next.Token
		if first := streamOf(t, e.js).Config.FirstSeq; first != 0 {
			t.Fatalf("round %d: the bucket's stream was given first sequence %d", round, first)
		}
		in.stop()
	}
}

// TestInstancesStartingTogetherShareTheBucket starts two lock instances at once on
// a fresh server: each creates the locks bucket from its own clock reading, and both
// must end up on the one the server created.
func TestInstancesStartingTogetherShareTheBucket(t *testing.T) {
	e := newEnv(t)
	ins := make([]*instance, 2)
	errs := make([]error, len(ins))
	var wg sync.WaitGroup
	for i := range ins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ins[i], errs[i] = e.launchLock(t, Config{}, noop.NewTracerProvider())
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("instance %d: %v", i, err)
		}
	}
	first := streamOf(t, e.js).Config.FirstSeq
	if first < firstRevision(time.Now().Add(-time.Hour)) {
		t.Fatalf("the bucket starts at %d, not from a clock floor", first)
	}
	l := e.open(t, "admin", 0).mustAcquire(t, &wire.LockAcquireRequest{Name: "shared/bucket"})
	if l.Token < first {
		t.Fatalf("token %d below the bucket's first revision %d", l.Token, first)
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		for i, in := range ins {
			if e, ok := in.st.cached(KeyFor("shared/bucket")); !ok || e.rev != l.Token {
				return fmt.Errorf("instance %d caches %+v, want the lock at revision %d", i, e, l.Token)
			}
		}
		return nil
	})
}

// streamOf returns the locks bucket's stream info.
func streamOf(t *testing.T, js jetstream.JetStream) *jetstream.StreamInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "KV_"+Bucket)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo()
}
