package lock

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/kvstore"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// checkIndex compares the store's session index with the one its cache implies.
func checkIndex(st *store) error {
	st.mu.RLock()
	defer st.mu.RUnlock()
	want := map[string]map[string]struct{}{}
	add := func(id, key string) {
		if want[id] == nil {
			want[id] = map[string]struct{}{}
		}
		want[id][key] = struct{}{}
	}
	for key, e := range st.cache {
		if e.rec == nil {
			continue
		}
		for _, h := range e.rec.Holders {
			add(h.Session, key)
		}
		for _, w := range e.rec.Waiters {
			add(w.Session, key)
		}
	}
	if !maps.EqualFunc(st.bySession, want, maps.Equal) {
		return fmt.Errorf("the session index is %v, the cache implies %v", st.bySession, want)
	}
	return nil
}

// wantIndexed fails unless the store's index is consistent with its cache and gives
// each session the lock count of want.
func wantIndexed(st *store, want map[string]int) error {
	if err := checkIndex(st); err != nil {
		return err
	}
	for id, n := range want {
		if got := st.sessionLocks(id, ""); got != n {
			return fmt.Errorf("session %s: %d locks indexed, want %d", id, got, n)
		}
	}
	return nil
}

// TestLocksPerSessionAreBounded: a session holding or waiting for
// MaxLocksPerSession locks is refused another, limit_exceeded naming the count and
// the limit, while re-acquiring a lock it holds or waiting again for one it waits
// for is not counted twice; another session has a count of its own; a release
// makes room. Unbounded, a session allowed an open-ended name pattern grew the
// bucket and every instance's cache without end.
func TestLocksPerSessionAreBounded(t *testing.T) {
	e := newEnv(t)
	in := e.startLock(t, Config{MaxLocksPerSession: 3})
	a, b := e.open(t, "admin", 0), e.open(t, "admin", 0)
	b.mustAcquire(t, &wire.LockAcquireRequest{Name: "busy"})
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "a/1"})
	held := a.mustAcquire(t, &wire.LockAcquireRequest{Name: "a/2"})
	// The first copy of w1 is re-issued below, which takes over its place: the
	// copy is never answered, and the test gives up on it.
	first, giveUp := context.WithCancel(context.Background())
	defer giveUp()
	w1 := make(chan error, 1)
	go func() {
		_, err := a.acquire(first, &wire.LockAcquireRequest{Name: "busy", WaitMS: 20000, RequestID: "w1"})
		w1 <- err
	}()
	e.waitQueued(t, "busy", 1)
	reply := e.waiterReply(t, "busy", "w1")

	for _, req := range []*wire.LockAcquireRequest{
		{Name: "a/3"},
		{Name: "a/3", WaitMS: 20000},
		{Name: "a/3", Mode: wire.LockShared},
	} {
		_, err := a.acquire(ctx10(t), req)
		wantCode(t, err, wire.CodeLimitExceeded)
		if msg := err.Error(); !strings.Contains(msg, "3 locks") || !strings.Contains(msg, "at most 3") {
			t.Errorf("the refusal %q does not name the count (3) and the limit (3)", msg)
		}
	}
	e.waitQueued(t, "busy", 1)

	// What the session holds or waits for is counted once.
	if l := a.mustAcquire(t, &wire.LockAcquireRequest{Name: "a/2"}); l.Token != held.Token {
		t.Errorf("re-acquiring a held lock at the limit: token %d, want the held %d", l.Token, held.Token)
	}
	w2 := a.acquireAsync(&wire.LockAcquireRequest{Name: "busy", WaitMS: 20000, RequestID: "w2"})
	e.waitQueued(t, "busy", 2)
	w1again := a.acquireAsync(&wire.LockAcquireRequest{Name: "busy", WaitMS: 20000, RequestID: "w1"})
	natstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if e.waiterReply(t, "busy", "w1") == reply {
			return errors.New("the re-issue of w1 has not taken over its place")
		}
		return nil
	})
	giveUp()
	<-w1
	e.waitQueued(t, "busy", 2)

	// b's count is its own: it holds busy and may take two more.
	b.mustAcquire(t, &wire.LockAcquireRequest{Name: "b/1"})
	b.mustAcquire(t, &wire.LockAcquireRequest{Name: "b/2"})
	_, err := b.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "b/3"})
	wantCode(t, err, wire.CodeLimitExceeded)

	a.mustRelease(t, "a/1")
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "a/3"})
	_, err = a.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "a/4"})
	wantCode(t, err, wire.CodeLimitExceeded)
	if err := wantIndexed(in.st, map[string]int{a.id: 3, b.id: 3}); err != nil {
		t.Fatal(err)
	}

	// The waits end with the holder's release: a gets busy, and is at its limit still.
	b.mustRelease(t, "busy")
	for _, p := range []*pending{w1again, w2} {
		if _, err := p.wait(t, 5*time.Second); err != nil {
			t.Fatalf("a waiting request after the release: %v", err)
		}
	}
	_, err = a.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "a/4"})
	wantCode(t, err, wire.CodeLimitExceeded)
	b.mustAcquire(t, &wire.LockAcquireRequest{Name: "b/3"})
}

// waiterReply returns the reply subject of request id waiting for lock name, read
// from the bucket.
func (e *env) waiterReply(t *testing.T, name, id string) string {
	t.Helper()
	kv, err := e.js.KeyValue(ctx10(t), Bucket)
	if err != nil {
		t.Fatal(err)
	}
	ent, err := kv.Get(ctx10(t), KeyFor(name))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := decodeRecord(ent.Value(), ent.Revision())
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range rec.Waiters {
		if w.ID == id {
			return w.Reply
		}
	}
	t.Fatalf("request %s does not wait for lock %s", id, name)
	return ""
}

// TestLocksPerSessionFollowTheBucket: the count of a session whose locks are
// released when it closes drops to nothing, and an instance started later counts
// the locks in the bucket, and refuses a session at its limit.
func TestLocksPerSessionFollowTheBucket(t *testing.T) {
	e := newEnv(t)
	cfg := Config{MaxLocksPerSession: 2}
	in := e.startLock(t, cfg)
	a, b := e.open(t, "admin", 0), e.open(t, "admin", 0)
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "a/1"})
	b.mustAcquire(t, &wire.LockAcquireRequest{Name: "b/1"})
	wa := a.acquireAsync(&wire.LockAcquireRequest{Name: "b/1", WaitMS: 20000})
	e.waitQueued(t, "b/1", 1)
	b.mustAcquire(t, &wire.LockAcquireRequest{Name: "b/2"})
	if err := wantIndexed(in.st, map[string]int{a.id: 2, b.id: 2}); err != nil {
		t.Fatal(err)
	}

	if err := a.call(ctx10(t), wire.SubjectSessionClose, &wire.SessionCloseRequest{}, nil); err != nil {
		t.Fatalf("close session: %v", err)
	}
	_, err := wa.wait(t, 5*time.Second)
	wantCode(t, err, wire.CodeSessionClosed)
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		return wantIndexed(in.st, map[string]int{a.id: 0, b.id: 2})
	})

	in.kill()
	again := e.startLock(t, cfg)
	if err := wantIndexed(again.st, map[string]int{a.id: 0, b.id: 2}); err != nil {
		t.Fatalf("an instance started after: %v", err)
	}
	_, err = b.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "b/3"})
	wantCode(t, err, wire.CodeLimitExceeded)
	b.mustRelease(t, "b/1")
	b.mustAcquire(t, &wire.LockAcquireRequest{Name: "b/3"})
}

// TestSessionIndexFollowsEveryCacheChange: the store's session index follows the
// cache through every change — an entry replaced by one with other sessions, a
// deleted key, the eviction of a deleted key, and the removal of keys a reload of the
// bucket no longer finds.
func TestSessionIndexFollowsEveryCacheChange(t *testing.T) {
	srv := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := openStore(ctx, srv.JetStream(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	rec := func(holders []string, waiters ...string) *record {
		r := &record{Name: "n"}
		for _, s := range holders {
			r.Holders = append(r.Holders, holder{Session: s, Mode: wire.LockShared, Scope: wire.ScopeSession})
		}
		for i, s := range waiters {
			r.Waiters = append(r.Waiters, waiter{ID: fmt.Sprint("r", i), Session: s, Mode: wire.LockExclusive})
		}
		return r
	}
	for _, step := range []struct {
		name   string
		change func()
		want   map[string]int
	}{
		{"a record", func() { st.remember("k1", entry{rec: rec([]string{"s1"}, "s2", "s2"), rev: 1}) },
			map[string]int{"s1": 1, "s2": 1}},
		{"replaced by other sessions", func() { st.remember("k1", entry{rec: rec([]string{"s2"}, "s3"), rev: 2}) },
			map[string]int{"s1": 0, "s2": 1, "s3": 1}},
		{"an older revision", func() { st.remember("k1", entry{rec: rec([]string{"s1"}), rev: 1}) },
			map[string]int{"s1": 0, "s2": 1, "s3": 1}},
		{"another record", func() { st.remember("k2", entry{rec: rec([]string{"s2", "s4"}), rev: 3}) },
			map[string]int{"s2": 2, "s3": 1, "s4": 1}},
		{"a deleted key", func() { st.remember("k1", entry{rev: 4}) },
			map[string]int{"s2": 1, "s3": 0, "s4": 1}},
		{"its eviction", func() {
			st.mu.Lock()
			st.goneTTL = 0
			st.evictGoneLocked(time.Now())
			st.mu.Unlock()
			if _, ok := st.cached("k1"); ok {
				t.Fatal("the deleted key was not evicted")
			}
		}, map[string]int{"s2": 1, "s4": 1}},
		{"a reload without the keys", func() {
			// The bucket holds none of these keys: a reload removes them.
			w, err := st.load(ctx, 100)
			if err != nil {
				t.Fatal(err)
			}
			kvstore.StopWatch(st.js.Conn(), w)
		}, map[string]int{"s2": 0, "s4": 0}},
	} {
		step.change()
		if err := wantIndexed(st, step.want); err != nil {
			t.Fatalf("after %s: %v", step.name, err)
		}
	}
	if n := len(st.bySession); n != 0 {
		t.Fatalf("the index of an empty cache names %d sessions", n)
	}
}
