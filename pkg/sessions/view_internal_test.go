package sessions

import (
	"context"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// A record read before its key was removed (a fetch racing the watch) and applied
// after the removal does not bring the session back; a later record (a tombstone
// written after a TTL removal) does.
func TestRemovalIsNotUndoneByAnOlderRead(t *testing.T) {
	for _, slim := range []bool{false, true} {
		v := &View{slim: slim, records: map[string]*Record{}, held: map[string]*held{}, subs: map[int]func(Change){}, removed: map[string]removal{}}
		live := &Record{ID: "s1", State: wire.StateActive, Revision: 5}
		v.applyRecord("s1", live, 5)
		v.applyRecord("s1", nil, 7)  // the TTL removed the key
		v.applyRecord("s1", live, 5) // a fetch that read revision 5 before the removal
		if _, ok := v.Get("s1"); ok {
			t.Fatalf("slim=%v: the removed session is back", slim)
		}
		tomb := &Record{ID: "s1", State: wire.StateClosed, CloseReason: wire.ClosedExpired, Revision: 8}
		v.applyRecord("s1", tomb, 8)
		if r, ok := v.Get("s1"); !ok || !r.Closed() {
			t.Fatalf("slim=%v: got %+v, %v; want the tombstone", slim, r, ok)
		}
		v.applyRecord("s1", nil, 9)
		v.forgetRemovals(time.Now().Add(2 * removedFor))
		if len(v.removed) != 0 {
			t.Fatalf("slim=%v: %d removals remembered past removedFor", slim, len(v.removed))
		}
	}
}

// reload, after a watch ended on its own, forgets the sessions whose keys are gone
// from the bucket and keeps a record the process wrote after the load began.
func TestReloadReconciles(t *testing.T) {
	for _, slim := range []bool{false, true} {
		srv := natstest.Start(t)
		js := srv.JetStream(t)
		ctx := context.Background()
		kv, err := EnsureBucket(ctx, js)
		if err != nil {
			t.Fatal(err)
		}
		data, err := Encode(&Record{ID: "kept", Principal: "p", State: wire.StateActive})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, "kept", data); err != nil {
			t.Fatal(err)
		}
		var opts []Option
		if slim {
			opts = append(opts, Slim())
		}
		v, err := Watch(ctx, js, opts...)
		if err != nil {
			t.Fatal(err)
		}
		// What a stopped watch missed: a key removed without a marker left in the
		// bucket (its revision is the bucket's first), and a write of the process
		// at a revision the bucket has not reached when reload starts.
		v.applyRecord("gone", &Record{ID: "gone", State: wire.StateActive, Revision: 1}, 1)
		v.Apply(&Record{ID: "new", State: wire.StateActive, Revision: 1000})
		w, err := v.reload(ctx, js)
		if err != nil {
			t.Fatal(err)
		}
		_ = w.Stop()
		for id, want := range map[string]bool{"kept": true, "gone": false, "new": true} {
			if _, ok := v.Get(id); ok != want {
				t.Errorf("slim=%v: %s held: got %v, want %v", slim, id, ok, want)
			}
		}
		v.Close()
	}
}
