package lock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/kvstore"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/schematest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

func ctx10(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestBadInputChangesNothing(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{})
	a := e.open(t, "admin", 0)
	held := a.mustAcquire(t, &wire.LockAcquireRequest{Name: "held"})

	tests := []struct {
		name    string
		subject string
		body    string
		want    wire.Code
	}{
		{"empty name", wire.SubjectLockAcquire, `{"name":""}`, wire.CodeInvalidName},
		{"missing name", wire.SubjectLockAcquire, `{}`, wire.CodeInvalidName},
		{"space in name", wire.SubjectLockAcquire, `{"name":"a b"}`, wire.CodeInvalidName},
		{"wildcard", wire.SubjectLockAcquire, `{"name":"a/*"}`, wire.CodeInvalidName},
		{"gt", wire.SubjectLockAcquire, `{"name":"a>"}`, wire.CodeInvalidName},
		{"control char", wire.SubjectLockAcquire, `{"name":"a\u0007"}`, wire.CodeInvalidName},
		{"empty segment", wire.SubjectLockAcquire, `{"name":"a//b"}`, wire.CodeInvalidName},
		{"leading slash", wire.SubjectLockAcquire, `{"name":"/a"}`, wire.CodeInvalidName},
		{"too long", wire.SubjectLockAcquire, `{"name":"` + fmt.Sprintf("%0300d", 0) + `"}`, wire.CodeInvalidName},
		{"unknown mode", wire.SubjectLockAcquire, `{"name":"x","mode":"upgradable"}`, wire.CodeBadRequest},
		{"unknown scope", wire.SubjectLockAcquire, `{"name":"x","scope":"forever"}`, wire.CodeBadRequest},
		{"negative wait", wire.SubjectLockAcquire, `{"name":"x","wait_ms":-2}`, wire.CodeBadRequest},
		{"bad request id", wire.SubjectLockAcquire, `{"name":"x","wait_ms":10,"request_id":"a b"}`, wire.CodeBadRequest},
		{"unknown field", wire.SubjectLockAcquire, `{"name":"x","ttl":3}`, wire.CodeBadRequest},
		{"wrong type", wire.SubjectLockAcquire, `{"name":3}`, wire.CodeBadRequest},
		{"not json", wire.SubjectLockAcquire, `{"name":`, wire.CodeBadRequest},
		{"release empty name", wire.SubjectLockRelease, `{"name":""}`, wire.CodeInvalidName},
		{"release wrong token", wire.SubjectLockRelease, fmt.Sprintf(`{"name":"held","token":%d}`, held.Token+1), wire.CodeLockNotHeld},
		{"release not held", wire.SubjectLockRelease, `{"name":"other"}`, wire.CodeLockNotHeld},
		{"cancel without id", wire.SubjectLockCancel, `{"name":"x"}`, wire.CodeBadRequest},
		{"cancel unknown", wire.SubjectLockCancel, `{"name":"held","request_id":"nope"}`, wire.CodeNotFound},
		{"list negative limit", wire.SubjectLockList, `{"limit":-1}`, wire.CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.rawCall(ctx10(t), tt.subject, []byte(tt.body))
			wantCode(t, err, tt.want)
		})
	}

	t.Run("session headers", func(t *testing.T) {
		body, _ := json.Marshal(&wire.LockAcquireRequest{Name: "x"})
		for _, tc := range []struct {
			id, token string
			want      wire.Code
		}{
			{"", "", wire.CodeUnauthenticated},
			{a.id, "wrong", wire.CodeInvalidToken},
			{"no-such-session", "t", wire.CodeSessionNotFound},
		} {
			h := map[string][]string{wire.HeaderSession: {tc.id}, wire.HeaderToken: {tc.token}}
			_, err := wire.CallRaw(ctx10(t), a.nc, wire.SubjectLockAcquire, h, body)
			wantCode(t, err, tc.want)
		}
	})

	// Nothing changed: only the held lock exists, with its token.
	var list wire.LockListResponse
	if err := a.call(ctx10(t), wire.SubjectLockList, &wire.LockListRequest{}, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Locks) != 1 || list.Locks[0].Name != "held" || list.Locks[0].Holders[0].Token != held.Token || len(list.Locks[0].Waiters) != 0 {
		t.Fatalf("got locks %s, want only held with token %d", jsonString(list.Locks), held.Token)
	}
}

func TestExclusiveAndShared(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{})
	a, b, c := e.open(t, "admin", 0), e.open(t, "admin", 0), e.open(t, "admin", 0)

	la := a.mustAcquire(t, &wire.LockAcquireRequest{Name: "doc/1"})
	if la.Mode != wire.LockExclusive || la.Scope != wire.ScopeSession || la.Session != a.id || la.Token == 0 {
		t.Fatalf("got lock %+v, want exclusive, session scope, held by %s, a token", la, a.id)
	}
	_, err := b.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "doc/1", Mode: wire.LockShared})
	wantCode(t, err, wire.CodeTimeout)

	pb := b.acquireAsync(&wire.LockAcquireRequest{Name: "doc/1", Mode: wire.LockShared, WaitMS: 10000})
	pc := c.acquireAsync(&wire.LockAcquireRequest{Name: "doc/1", Mode: wire.LockShared, WaitMS: 10000})
	e.waitQueued(t, "doc/1", 2)
	if pb.completed() || pc.completed() {
		t.Fatal("shared granted beside an exclusive holder")
	}
	a.mustRelease(t, "doc/1")
	lb, err := pb.wait(t, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	lc, err := pc.wait(t, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if lb.Token != lc.Token || lb.Token <= la.Token || lb.Mode != wire.LockShared {
		t.Fatalf("got shared tokens %d and %d after exclusive %d: want equal and higher", lb.Token, lc.Token, la.Token)
	}
	// A third shared request joins at once; an exclusive one fails.
	if l := a.mustAcquire(t, &wire.LockAcquireRequest{Name: "doc/1", Mode: wire.LockShared}); l.Token <= lb.Token {
		t.Fatalf("got token %d, want above %d", l.Token, lb.Token)
	}
	_, err = e.open(t, "admin", 0).acquire(ctx10(t), &wire.LockAcquireRequest{Name: "doc/1"})
	wantCode(t, err, wire.CodeTimeout)
}

func TestFIFOExclusiveNotStarved(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{})
	s0 := e.open(t, "admin", 0)
	s0.mustAcquire(t, &wire.LockAcquireRequest{Name: "q", Mode: wire.LockShared})

	x := e.open(t, "admin", 0)
	px := x.acquireAsync(&wire.LockAcquireRequest{Name: "q", WaitMS: 20000, RequestID: "x"})
	e.waitQueued(t, "q", 1)
	var shared []*pending
	var ids []string
	for i := range 5 {
		s := e.open(t, "admin", 0)
		id := fmt.Sprintf("s%d", i)
		shared = append(shared, s.acquireAsync(&wire.LockAcquireRequest{Name: "q", Mode: wire.LockShared, WaitMS: 20000, RequestID: id}))
		ids = append(ids, id)
		e.waitQueued(t, "q", i+2)
	}
	if got, want := e.waiting(t, "q"), append([]string{"x"}, ids...); !slices.Equal(got, want) {
		t.Fatalf("got queue %v, want %v", got, want)
	}
	for _, p := range shared {
		if p.completed() {
			t.Fatal("a shared request overtook the waiting exclusive one")
		}
	}
	s0.mustRelease(t, "q")
	lx, err := px.wait(t, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range shared {
		if p.completed() {
			t.Fatal("shared granted beside the exclusive holder")
		}
	}
	x.mustRelease(t, "q")
	var tok uint64
	for i, p := range shared {
		l, err := p.wait(t, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			tok = l.Token
		}
		if l.Token != tok || l.Token <= lx.Token {
			t.Fatalf("shared %d got token %d, want %d (batch) above %d", i, l.Token, tok, lx.Token)
		}
	}
}

func TestRepeatedAcquireReturnsEqualLock(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{})
	a := e.open(t, "admin", 0)
	first := a.mustAcquire(t, &wire.LockAcquireRequest{Name: "r"})
	again := a.mustAcquire(t, &wire.LockAcquireRequest{Name: "r", WaitMS: 1000})
	if *again != *first {
		t.Fatalf("got %+v, want the equal lock %+v", again, first)
	}
	weaker := a.mustAcquire(t, &wire.LockAcquireRequest{Name: "r", Scope: wire.ScopeConnection})
	if weaker.Token != first.Token || weaker.Scope != wire.ScopeConnection {
		t.Fatalf("got %+v, want token %d with the weaker connection scope", weaker, first.Token)
	}
	// A shared holder asking for exclusive is refused and keeps its lock.
	s := a.mustAcquire(t, &wire.LockAcquireRequest{Name: "r2", Mode: wire.LockShared})
	_, err := a.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "r2"})
	wantCode(t, err, wire.CodeConflict)
	if l := a.mustAcquire(t, &wire.LockAcquireRequest{Name: "r2", Mode: wire.LockShared}); *l != *s {
		t.Fatalf("got %+v, want %+v", l, s)
	}
}

func TestTimeoutAndCancel(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{})
	a, b := e.open(t, "admin", 0), e.open(t, "admin", 0)
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "t"})

	start := time.Now()
	_, err := b.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "t", WaitMS: 200})
	wantCode(t, err, wire.CodeTimeout)
	// Deadlines are kept in whole milliseconds, so the answer may come up to a
	// millisecond before 200 ms measured here.
	if d := time.Since(start); d < 198*time.Millisecond {
		t.Fatalf("timed out after %v, before the 200 ms wait", d)
	}
	e.waitQueued(t, "t", 0)

	p := b.acquireAsync(&wire.LockAcquireRequest{Name: "t", WaitMS: wire.WaitForever, RequestID: "mine"})
	e.waitQueued(t, "t", 1)
	// Another session cannot cancel it.
	err = a.call(ctx10(t), wire.SubjectLockCancel, &wire.LockCancelRequest{Name: "t", RequestID: "mine"}, nil)
	wantCode(t, err, wire.CodeNotFound)
	var cr wire.LockCancelResponse
	if err := b.call(ctx10(t), wire.SubjectLockCancel, &wire.LockCancelRequest{Name: "t", RequestID: "mine"}, &cr); err != nil || !cr.Cancelled {
		t.Fatalf("cancel: %v %+v", err, cr)
	}
	validate(t, "lock.cancel.response", cr)
	_, err = p.wait(t, 5*time.Second)
	wantCode(t, err, wire.CodeTimeout)
	e.waitQueued(t, "t", 0)
	// The holder is unaffected; release by a non-holder is lock_not_held.
	wantCode(t, b.release(ctx10(t), "t", 0), wire.CodeLockNotHeld)
	a.mustRelease(t, "t")
	wantCode(t, a.release(ctx10(t), "t", 0), wire.CodeLockNotHeld)
}

func TestListNeedsViewLocks(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{})
	a, v, tr := e.open(t, "admin", 0), e.open(t, "viewer", 0), e.open(t, "trader", 0)
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "l/1"})
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "l/2", Mode: wire.LockShared, Scope: wire.ScopeConnection})
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "m/1"})
	p := e.open(t, "admin", 0).acquireAsync(&wire.LockAcquireRequest{Name: "l/1", WaitMS: 10000, RequestID: "w1"})
	e.waitQueued(t, "l/1", 1)

	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		msg, err := v.rawCall(ctx10(t), wire.SubjectLockList, []byte(`{"prefix":"l/","limit":1}`))
		if err != nil {
			return err
		}
		schematest.Validate(t, "lock.list.response", msg.Data)
		var resp wire.LockListResponse
		if err := json.Unmarshal(msg.Data, &resp); err != nil {
			return err
		}
		if len(resp.Locks) != 1 || resp.Locks[0].Name != "l/1" || resp.Next != "l/1" ||
			len(resp.Locks[0].Waiters) != 1 || resp.Locks[0].Waiters[0].RequestID != "w1" {
			return fmt.Errorf("got %s", msg.Data)
		}
		return nil
	})
	var page2 wire.LockListResponse
	if err := v.call(ctx10(t), wire.SubjectLockList, &wire.LockListRequest{Prefix: "l/", After: "l/1"}, &page2); err != nil {
		t.Fatal(err)
	}
	if len(page2.Locks) != 1 || page2.Locks[0].Name != "l/2" || page2.Next != "" || page2.Locks[0].Holders[0].Scope != wire.ScopeConnection {
		t.Fatalf("page 2: %s", jsonString(page2))
	}
	err := tr.call(ctx10(t), wire.SubjectLockList, &wire.LockListRequest{}, nil)
	wantCode(t, err, wire.CodeForbidden)
	a.mustRelease(t, "l/1")
	if _, err := p.wait(t, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestAcquirePermissionByPattern(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{})
	tr := e.open(t, "trader", 0)
	tr.mustAcquire(t, &wire.LockAcquireRequest{Name: "update-topic/a"})
	for _, name := range []string{"update-topic/b", "update-topic/a/x", "other"} {
		_, err := tr.acquire(ctx10(t), &wire.LockAcquireRequest{Name: name})
		wantCode(t, err, wire.CodeForbidden)
	}
	_, err := e.open(t, "viewer", 0).acquire(ctx10(t), &wire.LockAcquireRequest{Name: "update-topic/a"})
	wantCode(t, err, wire.CodeForbidden)
	if got := e.waiting(t, "update-topic/b"); got != nil {
		t.Fatalf("a refused acquire left %v", got)
	}
}

func TestRepliesMatchSchemas(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{})
	a := e.open(t, "admin", 0)
	for _, tc := range []struct {
		subject, schema string
		req             any
	}{
		{wire.SubjectLockAcquire, "lock.acquire", &wire.LockAcquireRequest{Name: "s/1", Mode: wire.LockShared, Scope: wire.ScopeConnection, WaitMS: 100, RequestID: "r-1"}},
		{wire.SubjectLockList, "lock.list", &wire.LockListRequest{Prefix: "s/", Limit: 10}},
		{wire.SubjectLockRelease, "lock.release", &wire.LockReleaseRequest{Name: "s/1"}},
	} {
		body, _ := json.Marshal(tc.req)
		schematest.Validate(t, tc.schema+".request", body)
		msg, err := a.rawCall(ctx10(t), tc.subject, body)
		if err != nil {
			t.Fatalf("%s: %v", tc.subject, err)
		}
		schematest.Validate(t, tc.schema+".response", msg.Data)
	}
	_, err := a.rawCall(ctx10(t), wire.SubjectLockRelease, []byte(`{"name":"s/1"}`))
	wantCode(t, err, wire.CodeLockNotHeld)
	m := nats.NewMsg(wire.SubjectLockRelease)
	m.Header, m.Data = a.header(), []byte(`{"name":"s/1"}`)
	msg, err := a.nc.RequestMsg(m, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	schematest.Validate(t, "error", msg.Data)
	schematest.Validate(t, "lock.cancel.request", []byte(`{"name":"s/1","request_id":"r-1"}`))
}

func TestFencingTokensIncreaseAcrossRestart(t *testing.T) {
	e := newEnv(t)
	in := e.startLock(t, Config{})
	a := e.open(t, "admin", 0)
	var last uint64
	step := func(name string) {
		t.Helper()
		l := a.mustAcquire(t, &wire.LockAcquireRequest{Name: name})
		if l.Token <= last {
			t.Fatalf("token %d after %d: not increasing", l.Token, last)
		}
		last = l.Token
		a.mustRelease(t, name)
	}
	for range 5 {
		step("f")
	}
	in.kill()
	e.startLock(t, Config{})
	for range 5 {
		step("f")
		step("g") // other locks' writes move the sequence too; tokens stay increasing per name
	}
}

// TestLongWaitKeepsPlaceAcrossBound: a wait longer than the server holds one request
// is answered timeout at the bound, keeps its place, and the re-issued request (same
// request id) is granted in queue order.
func TestLongWaitKeepsPlaceAcrossBound(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{MaxWait: 300 * time.Millisecond, Reattach: 10 * time.Second})
	a, b, c := e.open(t, "admin", 0), e.open(t, "admin", 0), e.open(t, "admin", 0)
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "long"})
	reqB := &wire.LockAcquireRequest{Name: "long", WaitMS: wire.WaitForever, RequestID: "b1"}
	reqC := &wire.LockAcquireRequest{Name: "long", WaitMS: 60000, RequestID: "c1"}
	pb := b.acquireAsync(reqB)
	e.waitQueued(t, "long", 1)
	pc := c.acquireAsync(reqC)
	e.waitQueued(t, "long", 2)
	for _, p := range []*pending{pb, pc} {
		_, err := p.wait(t, 5*time.Second)
		wantCode(t, err, wire.CodeTimeout)
	}
	if got := e.waiting(t, "long"); !slices.Equal(got, []string{"b1", "c1"}) {
		t.Fatalf("got queue %v after the bound, want [b1 c1] kept", got)
	}
	// Re-issued in the other order, they keep their places.
	pc = c.acquireAsync(reqC)
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		var list wire.LockListResponse
		if err := a.call(ctx10(t), wire.SubjectLockList, &wire.LockListRequest{Prefix: "long"}, &list); err != nil {
			return err
		}
		if len(list.Locks) != 1 || len(list.Locks[0].Waiters) != 2 || list.Locks[0].Waiters[1].Detached {
			return fmt.Errorf("c1 not re-attached yet: %s", jsonString(list.Locks))
		}
		if !list.Locks[0].Waiters[0].Detached || list.Locks[0].Waiters[0].Until != nil {
			return fmt.Errorf("b1 should be detached with no end: %s", jsonString(list.Locks))
		}
		return nil
	})
	pb = b.acquireAsync(reqB)
	a.mustRelease(t, "long")
	lb, err := pb.wait(t, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if pc.completed() {
		t.Fatal("c granted before b, which was ahead of it")
	}
	b.mustRelease(t, "long")
	lc, err := pc.wait(t, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if lc.Token <= lb.Token {
		t.Fatalf("tokens %d then %d: not increasing", lb.Token, lc.Token)
	}
}

// TestFencingTokensIncreaseAcrossServerRestart: the NATS server itself restarts on
// the same storage; the next grant's token is above every earlier one.
func TestFencingTokensIncreaseAcrossServerRestart(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, natstest.WithDataDir(dir))
	in := e.startLock(t, Config{})
	a := e.open(t, "admin", 0)
	var last uint64
	for range 3 {
		l := a.mustAcquire(t, &wire.LockAcquireRequest{Name: "f"})
		last = l.Token
		a.mustRelease(t, "f")
	}
	in.stop()
	e.stopRegistry()
	e.srv.Stop()

	e2 := newEnv(t, natstest.WithDataDir(dir))
	e2.startLock(t, Config{})
	b := e2.open(t, "admin", 0)
	l := b.mustAcquire(t, &wire.LockAcquireRequest{Name: "f"})
	if l.Token <= last {
		t.Fatalf("after the server restart got token %d, want above %d", l.Token, last)
	}
}

// TestFreeLockRecordDeletedWhenItsIDsExpire: a lock released by a request with the
// client's id keeps its record (to refuse late copies) for the retention of answered
// ids; then the record is deleted, whether or not the lock is used again, so that the
// bucket holds only live locks and does not grow with every name ever locked.
func TestFreeLockRecordDeletedWhenItsIDsExpire(t *testing.T) {
	e := newEnv(t)
	var offset atomic.Int64
	in := e.startLock(t, Config{Now: func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }})
	a := e.open(t, "admin", 0)
	if _, err := a.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "once", RequestID: "r1"}); err != nil {
		t.Fatal(err)
	}
	a.mustRelease(t, "once")
	kv, err := e.js.KeyValue(ctx10(t), Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx10(t), KeyFor("once")); err != nil {
		t.Fatalf("right after the release: %v, want the record kept for the answered id", err)
	}
	offset.Store(int64(doneRetention*time.Millisecond + time.Second))
	// The instance's timer would fire in two minutes of real time; wake it now.
	select {
	case in.wake <- struct{}{}:
	default:
	}
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, err := kv.Get(ctx10(t), KeyFor("once")); !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("after the retention got %v, want the record deleted", err)
		}
		return nil
	})
}

// TestDeletedLockRecordLeavesNothingBehind: the marker that deletes a free lock's
// record expires, so that neither the bucket nor an instance's cache grows with
// every lock name ever used (names like orders/<uuid> would otherwise leak one
// marker and one cache entry each, for good); the name can be locked again after,
// with a later fencing token.
func TestDeletedLockRecordLeavesNothingBehind(t *testing.T) {
	e := newEnv(t)
	var offset atomic.Int64
	in := e.startLock(t, Config{goneTTL: time.Second, Now: func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }})
	a := e.open(t, "admin", 0)
	first, err := a.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "orders/1", RequestID: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	a.mustRelease(t, "orders/1")
	offset.Store(int64(doneRetention*time.Millisecond + time.Second))
	select {
	case in.wake <- struct{}{}:
	default:
	}
	key := KeyFor("orders/1")
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		last, err := kvstore.ReadLast(ctx10(t), e.srv.ServiceConn(t), Bucket, key)
		switch {
		case errors.Is(err, kvstore.ErrNotFound):
			return nil
		case err != nil:
			return err
		case last.Deleted:
			return fmt.Errorf("the record's delete marker (revision %d) is still in the bucket", last.Revision)
		default:
			return fmt.Errorf("the record (revision %d) is still in the bucket", last.Revision)
		}
	})
	// The cache drops a deleted key at its next change once the marker has expired.
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "orders/2"})
	a.mustRelease(t, "orders/2")
	if e, ok := in.st.cached(key); ok {
		t.Fatalf("the instance still caches the deleted key, at revision %d", e.rev)
	}
	again := a.mustAcquire(t, &wire.LockAcquireRequest{Name: "orders/1"})
	if again.Token <= first.Token {
		t.Fatalf("locked again: token %d, want above %d", again.Token, first.Token)
	}
}

// TestHugeWaitWaits: a wait_ms so large that the end of the wait does not fit in
// the clock's range waits like one until cancelled, instead of ending at once.
func TestHugeWaitWaits(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{})
	a, b := e.open(t, "admin", 0), e.open(t, "admin", 0)
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "w"})
	pb := b.acquireAsync(&wire.LockAcquireRequest{Name: "w", WaitMS: math.MaxInt64})
	e.waitQueued(t, "w", 1)
	a.mustRelease(t, "w")
	if _, err := pb.wait(t, 5*time.Second); err != nil {
		t.Fatalf("got %v, want the lock once a released it", err)
	}
}

// TestCancelWithoutTheRightWritesNothing: a cancel of a request the lock service
// has not seen is remembered, so that the request is refused should it arrive late;
// from a session that may not acquire the lock it is not, and writes no record for a
// name the session has no right on (it would have been kept two minutes).
func TestCancelWithoutTheRightWritesNothing(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{})
	tr := e.open(t, "trader", 0)
	kv, err := e.srv.JetStream(t).KeyValue(ctx10(t), Bucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"update-topic/b", "update-topic/a"} {
		err := tr.call(ctx10(t), wire.SubjectLockCancel, &wire.LockCancelRequest{Name: name, RequestID: "never-sent"}, nil)
		wantCode(t, err, wire.CodeNotFound)
	}
	if _, err := kv.Get(ctx10(t), KeyFor("update-topic/b")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("a cancel without ACQUIRE_LOCK on the name: the key is %v, want none", err)
	}
	// Where the session may acquire, the id is remembered and a late acquire refused.
	_, err = tr.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "update-topic/a", RequestID: "never-sent"})
	wantCode(t, err, wire.CodeStaleRequest)
}
