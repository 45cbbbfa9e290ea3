package lock

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestLockRecordOfANewerFormatIsNotWrittenBack: an instance does not write back a
// lock record a newer version of Roster wrote (a rolling upgrade overlaps the
// versions): it would keep only the fields it knows, or delete the record when by
// those the lock is free. Its changes are refused as unavailable and the record
// stays as the newer version left it; a record of no format (written before the
// format was kept) is written as usual.
func TestLockRecordOfANewerFormatIsNotWrittenBack(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{})
	locks, err := e.js.KeyValue(context.Background(), Bucket)
	if err != nil {
		t.Fatal(err)
	}
	a, b := e.open(t, "admin", 0), e.open(t, "admin", 0)
	a.mustAcquire(t, &wire.LockAcquireRequest{Name: "doc/1"})
	if got := e.lockRecord(t, "doc/1").Format; got != recordFormat {
		t.Fatalf("a granted lock's record has format %d, want %d", got, recordFormat)
	}

	natstest.RewriteJSON(t, locks, KeyFor("doc/1"), func(m map[string]any) {
		m["format"] = recordFormat + 1
		m["added_by_newer"] = "kept"
	})
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"release", func() error { return a.release(ctx10(t), "doc/1", 0) }},
		{"waiting acquire", func() error {
			_, err := b.acquire(ctx10(t), &wire.LockAcquireRequest{Name: "doc/1", WaitMS: 5000})
			return err
		}},
	} {
		err := tc.call()
		wantCode(t, err, wire.CodeUnavailable)
		if !strings.Contains(err.Error(), "newer version") {
			t.Errorf("%s: got %v, want it to say a newer version wrote the record", tc.name, err)
		}
	}
	rec := e.lockRecord(t, "doc/1")
	if len(rec.Holders) != 1 || rec.Holders[0].Session != a.id || len(rec.Waiters) != 0 {
		t.Errorf("the record changed: holders %+v, waiters %+v", rec.Holders, rec.Waiters)
	}
	natstest.RewriteJSON(t, locks, KeyFor("doc/1"), func(m map[string]any) {
		if m["added_by_newer"] != "kept" {
			t.Errorf("the stored record lost the newer version's field: %v", m)
		}
		delete(m, "format")
		delete(m, "added_by_newer")
	})
	a.mustRelease(t, "doc/1")
	b.mustAcquire(t, &wire.LockAcquireRequest{Name: "doc/1"})
	if got := e.lockRecord(t, "doc/1").Format; got != recordFormat {
		t.Errorf("got format %d after a write, want %d", got, recordFormat)
	}
}

// TestReleaseLeftToANewerVersionIsNotTraced: an instance that leaves a closed
// session's lock to a newer version (its record is of a later format) records no
// span of that release: it released nothing, and the instance of the newer version
// that does release it records the span. Before, every attempt of every older
// instance recorded an error span "lock release on session close", counting the
// holds it would have released, in the trace of the request that closed the
// session — again at every recheck, without end when no newer instance ran (after a
// rollback).
func TestReleaseLeftToANewerVersionIsNotTraced(t *testing.T) {
	e := newEnv(t)
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	var attempts atomic.Int32 // writes of the lock tried since the close
	var closed atomic.Bool
	e.startLockTraced(t, Config{beforeWrite: func(_, _ context.Context, name string) {
		if name == "newer/closed" && closed.Load() {
			attempts.Add(1)
		}
	}}, tp)
	locks, err := e.js.KeyValue(context.Background(), Bucket)
	if err != nil {
		t.Fatal(err)
	}
	holder := e.open(t, "admin", 0)
	holder.mustAcquire(t, &wire.LockAcquireRequest{Name: "newer/closed"})
	natstest.RewriteJSON(t, locks, KeyFor("newer/closed"), func(m map[string]any) { m["format"] = recordFormat + 1 })

	closed.Store(true)
	ctx, closer := tp.Tracer("application").Start(ctx10(t), "close")
	err = holder.call(ctx, wire.SubjectSessionClose, &wire.SessionCloseRequest{}, nil)
	closer.End()
	if err != nil {
		t.Fatalf("close session: %v", err)
	}
	// The release is tried on the session's close (from the cache, then from a
	// fresh read), and again at the next recheck: by then the first attempt is over.
	natstest.CheckFor(t, 3*recheckEvery, 10*time.Millisecond, func() error {
		if n := attempts.Load(); n < 3 {
			return fmt.Errorf("%d writes of the lock tried, want 3", n)
		}
		return nil
	})
	if r := e.lockRecord(t, "newer/closed"); r == nil || len(r.Holders) != 1 {
		t.Fatalf("the newer version's record changed: %+v", r)
	}
	for _, s := range spans.Ended() {
		if strings.HasPrefix(s.Name(), "lock release on") {
			t.Errorf("span %q recorded (status %v) for a release this instance left to a newer version", s.Name(), s.Status())
		}
	}
}
