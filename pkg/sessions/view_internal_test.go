package sessions

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/embedded"
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

// TestTouchesWhosePublishFailedArePublishedLater: flushTouches emptied the set of
// touched sessions before publishing it, and a publish that failed — nats.go's
// reconnect buffer full during a long disconnect, none at all here — lost the
// activity: the registries never heard of it and closed those sessions a timeout after
// an earlier request, before their timeout. Now what was not published waits for the
// next flush.
func TestTouchesWhosePublishFailedArePublishedLater(t *testing.T) {
	srv := natstest.Start(t)
	px := natstest.StartPartition(t, srv.ClientURL())
	nc, err := nats.Connect(px.URL(), nats.UserInfo(embedded.ServiceUser, srv.Config().ServicePassword),
		nats.ReconnectBufSize(-1), nats.ReconnectWait(20*time.Millisecond), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// Flushed by the test alone.
	v, err := Watch(t.Context(), js, WithTouchInterval(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	seen := natstest.Subscribe(t, srv.ServiceConn(t), wire.SubjectSessionActivity, 16)

	id := strings.Repeat("a", IDLength)
	v.Touch(id)
	px.Cut()
	natstest.WaitConnected(t, nc, false)
	v.flushTouches()
	px.Heal()
	natstest.WaitConnected(t, nc, true)
	v.flushTouches()
	natstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		for len(seen) > 0 {
			var a wire.SessionActivity
			if err := json.Unmarshal((<-seen).Data, &a); err != nil {
				return err
			}
			if slices.Contains(a.Sessions, id) {
				return nil
			}
		}
		return errors.New("the touch was never published")
	})
}

// TestOlderRemovalLeavesALaterRecord: a record the view holds ahead of its watch (a
// fetch, or the process's own write through Apply) at a revision later than a removal
// the watch then delivers was dropped by it, and the subscribers were told the session
// was gone, then back when the watch reached the record: changes out of revision
// order. The removal is older than what the view holds and now changes nothing.
func TestOlderRemovalLeavesALaterRecord(t *testing.T) {
	for _, slim := range []bool{false, true} {
		v := &View{slim: slim, records: map[string]*Record{}, held: map[string]*held{}, subs: map[int]func(Change){}, removed: map[string]removal{}}
		var changes []Change
		v.Subscribe(func(c Change) { changes = append(changes, c) })
		tomb := &Record{ID: "s1", State: wire.StateClosed, CloseReason: wire.ClosedExpired, Revision: 10}
		v.applyRecord("s1", tomb, 10) // read ahead of the watch
		v.applyRecord("s1", nil, 8)   // the watch: the TTL marker the tombstone replaced
		if r, ok := v.Get("s1"); !ok || r.Revision != 10 {
			t.Fatalf("slim=%v: got %+v, %v; want the tombstone at revision 10", slim, r, ok)
		}
		if len(changes) != 1 {
			t.Fatalf("slim=%v: got %d changes, want the tombstone's alone", slim, len(changes))
		}
		v.applyRecord("s1", nil, 11) // a later removal still removes
		if _, ok := v.Get("s1"); ok {
			t.Fatalf("slim=%v: the session removed at revision 11 is still held", slim)
		}
	}
}
