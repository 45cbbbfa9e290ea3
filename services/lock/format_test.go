package lock

import (
	"context"
	"strings"
	"testing"

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
