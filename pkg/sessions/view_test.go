package sessions_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func put(t *testing.T, srv *natstest.Server, r *sessions.Record) {
	t.Helper()
	kv, err := sessions.EnsureBucket(context.Background(), srv.JetStream(t))
	if err != nil {
		t.Fatal(err)
	}
	data, err := sessions.Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), r.ID, data); err != nil {
		t.Fatal(err)
	}
}

func TestView(t *testing.T) {
	srv := natstest.Start(t)
	live := &sessions.Record{ID: "live", Principal: "p", State: wire.StateActive, TokenHash: sessions.HashToken("t1"),
		Fixed: map[string]string{"$Principal": "p"}, User: map[string]string{"team": "red"}}
	put(t, srv, live)

	view, err := sessions.Watch(context.Background(), srv.JetStream(t), sessions.WithTouchInterval(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()

	changes := make(chan sessions.Change, 10)
	cancel := view.Subscribe(func(c sessions.Change) { changes <- c })
	defer cancel()
	if c := <-changes; c.ID != "live" || c.Prev != nil || c.Record.Properties()["team"] != "red" || c.Record.Properties()["$Principal"] != "p" {
		t.Fatalf("got initial change %+v", c)
	}

	for _, tc := range []struct {
		name, id, token string
		want            error
	}{
		{"ok", "live", "t1", nil},
		{"wrong token", "live", "t2", wire.ErrInvalidToken},
		{"empty token", "live", "", wire.ErrInvalidToken},
		{"unknown", "ghost", "t1", wire.ErrSessionNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := view.Authenticate(tc.id, tc.token)
			if !errors.Is(err, tc.want) && !(err == nil && tc.want == nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}

	closed := *live
	closed.State, closed.CloseReason = wire.StateClosed, wire.ClosedExpired
	put(t, srv, &closed)
	if c := <-changes; c.Record.State != wire.StateClosed || c.Prev == nil || c.Prev.State != wire.StateActive {
		t.Fatalf("got change %+v, want ACTIVE to CLOSED", c)
	}
	if _, err := view.Authenticate("live", "t1"); !errors.Is(err, wire.ErrSessionClosed) {
		t.Fatalf("got %v, want session_closed", err)
	}

	// Touch batches ids on the activity subject.
	sub, err := srv.ServiceConn(t).SubscribeSync(wire.SubjectSessionActivity)
	if err != nil {
		t.Fatal(err)
	}
	view.Touch("a")
	view.Touch("a")
	view.Touch("b")
	msg, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var batch wire.SessionActivity
	if err := json.Unmarshal(msg.Data, &batch); err != nil || len(batch.Sessions) != 2 {
		t.Fatalf("got batch %s (%v), want the two ids once each", msg.Data, err)
	}
}

// TestViewAcceptsARotatedToken checks that a token rotated by a write the view has
// not seen yet is accepted at once (the view reads the record again before refusing
// it), and that the old token is refused.
func TestViewAcceptsARotatedToken(t *testing.T) {
	srv := natstest.Start(t)
	id := "0123456789abcdefABCDEF"
	rec := &sessions.Record{ID: id, Principal: "alice", State: wire.StateActive, TokenHash: sessions.HashToken("old")}
	put(t, srv, rec)
	view, err := sessions.Watch(context.Background(), srv.JetStream(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := view.Authenticate(id, "old"); err != nil {
		t.Fatalf("old token before the rotation: got %v, want nil", err)
	}
	// Stop the watch, so that the view cannot learn the rotation from it.
	view.Close()
	rotated := *rec
	rotated.Principal, rotated.TokenHash = "bob", sessions.HashToken("new")
	put(t, srv, &rotated)
	got, err := view.Authenticate(id, "new")
	if err != nil || got.Principal != "bob" {
		t.Fatalf("new token: got %v, %v; want the rotated record", got, err)
	}
	if _, err := view.Authenticate(id, "old"); !errors.Is(err, wire.ErrInvalidToken) {
		t.Fatalf("old token after the rotation: got %v, want invalid_token", err)
	}
	// A close the watch has not delivered is seen by a wrong token too.
	closed := rotated
	closed.State, closed.CloseReason = wire.StateClosed, wire.ClosedByClient
	put(t, srv, &closed)
	if _, err := view.Authenticate(id, "old"); !errors.Is(err, wire.ErrSessionClosed) {
		t.Fatalf("old token after the close: got %v, want session_closed", err)
	}
}

// TestViewOutlivesItsStartContext: the context given to Watch bounds the start only,
// so that a caller can pass the context it was asked to stop with; the view follows
// the bucket until Close.
func TestViewOutlivesItsStartContext(t *testing.T) {
	srv := natstest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	view, err := sessions.Watch(ctx, srv.JetStream(t))
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()
	cancel()
	id := "0123456789abcdefABCDEF"
	put(t, srv, &sessions.Record{ID: id, Principal: "alice", State: wire.StateActive})
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if _, ok := view.Get(id); !ok {
			return errors.New("a record written after the start context ended is not in the view")
		}
		return nil
	})
}

// TestWatchEndsWithItsStartContext: a Watch whose context ends before the bucket's
// initial values are in returns the context's error.
func TestWatchEndsWithItsStartContext(t *testing.T) {
	srv := natstest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if view, err := sessions.Watch(ctx, srv.JetStream(t)); !errors.Is(err, context.Canceled) {
		if view != nil {
			view.Close()
		}
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

func Example() {
	// The registry stores only the token's hash; any service checks a token
	// against a record in constant time.
	rec := &sessions.Record{ID: "s1", State: wire.StateActive, TokenHash: sessions.HashToken("secret")}
	fmt.Println(rec.CheckToken("secret") == nil)
	fmt.Println(errors.Is(rec.CheckToken("guess"), wire.ErrInvalidToken))
	fmt.Println(sessions.ValidateKey("Department"))
	fmt.Println(sessions.ValidateKey("$Principal"))
	// Output:
	// true
	// true
	// <nil>
	// invalid_name: property key "$Principal": keys starting with $ are fixed properties that only the server sets
}

// TestViewUsesKnownRecords: a record the caller already holds at the revision the
// watch delivers is used as is, not decoded again.
func TestViewUsesKnownRecords(t *testing.T) {
	srv := natstest.Start(t)
	held := &sessions.Record{ID: "a", Principal: "held", State: wire.StateActive}
	view, err := sessions.Watch(context.Background(), srv.JetStream(t), sessions.WithKnown(func(id string, rev uint64) *sessions.Record {
		if id == "a" && rev > 0 {
			return held
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()
	put(t, srv, &sessions.Record{ID: "a", Principal: "stored", State: wire.StateActive})
	put(t, srv, &sessions.Record{ID: "b", Principal: "stored", State: wire.StateActive})
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if _, ok := view.Get("b"); !ok {
			return errors.New("b not seen yet")
		}
		return nil
	})
	if r, _ := view.Get("a"); r != held {
		t.Fatalf("got %+v for a, want the known record", r)
	}
	if r, _ := view.Get("b"); r.Principal != "stored" {
		t.Fatalf("got %+v for b, want the decoded record", r)
	}
}

// TestViewOutlivesItsWatch deletes the bucket under a view: nats.go cannot recreate
// the watch's consumer and ends the watch. The view loads the bucket again once it
// exists: it learns the sessions written since and forgets those gone, telling its
// subscribers.
func TestViewOutlivesItsWatch(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	js := srv.JetStream(t)
	for _, id := range []string{"a", "b"} {
		put(t, srv, &sessions.Record{ID: id, Principal: "p", State: wire.StateActive})
	}
	logs := &natstest.Buffer{}
	view, err := sessions.Watch(context.Background(), js, sessions.WithLogger(logs.Logger()))
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()
	var mu sync.Mutex
	removed := map[string]bool{}
	cancel := view.Subscribe(func(c sessions.Change) {
		if c.Record == nil {
			mu.Lock()
			removed[c.ID] = true
			mu.Unlock()
		}
	})
	defer cancel()

	if err := js.DeleteStream(context.Background(), "KV_"+sessions.Bucket); err != nil {
		t.Fatal(err)
	}
	// The watch's consumer misses its heartbeats and cannot be recreated (10 s).
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "watch of the sessions bucket ended") {
			return errors.New("the view has not noticed its watch ended")
		}
		return nil
	})
	put(t, srv, &sessions.Record{ID: "c", Principal: "p", State: wire.StateActive})
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if _, ok := view.Get("c"); !ok {
			return errors.New("the view does not hold the session written after its watch ended")
		}
		for _, id := range []string{"a", "b"} {
			if _, ok := view.Get(id); ok {
				return fmt.Errorf("the view still holds %s, gone with the bucket", id)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if !removed["a"] || !removed["b"] {
			return fmt.Errorf("subscribers were told of removals %v, want a and b", removed)
		}
		return nil
	})
	put(t, srv, &sessions.Record{ID: "d", Principal: "p", State: wire.StateActive})
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if _, ok := view.Get("d"); !ok {
			return errors.New("the view does not follow the new watch")
		}
		return nil
	})
}

// TestViewFollowsABucketCreatedAgainAtOnce deletes the bucket and creates it again
// before the watch's consumer misses a heartbeat: nats.go then recreates the consumer
// on the new stream, after the last revision it delivered, and the watch goes on
// without the new bucket's first revisions and without an error. The view notices
// the new stream and loads the bucket again.
func TestViewFollowsABucketCreatedAgainAtOnce(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	js := srv.JetStream(t)
	for _, id := range []string{"a", "b", "c"} {
		put(t, srv, &sessions.Record{ID: id, Principal: "p", State: wire.StateActive})
	}
	view, err := sessions.Watch(context.Background(), js, sessions.WithLogger(natstest.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()
	if err := js.DeleteStream(context.Background(), "KV_"+sessions.Bucket); err != nil {
		t.Fatal(err)
	}
	put(t, srv, &sessions.Record{ID: "d", Principal: "p", State: wire.StateActive}) // creates it again
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if _, ok := view.Get("d"); !ok {
			return errors.New("the view does not hold the session written in the bucket created again")
		}
		if _, ok := view.Get("a"); ok {
			return errors.New("the view still holds a, gone with the bucket")
		}
		return nil
	})
}

// TestViewKeepsTombstonesCompact: a closed session is kept for the tombstone's
// retention, a day by default, and with sessions that live minutes the tombstones
// outnumber the live sessions; a full view kept each as decoded, roles and three
// maps of properties, though it is only ever asked whether the session is closed.
// It now keeps the close and the record's JSON, and still answers everything the
// record did.
func TestViewKeepsTombstonesCompact(t *testing.T) {
	srv := natstest.Start(t)
	view, err := sessions.Watch(context.Background(), srv.JetStream(t))
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()
	changes := make(chan sessions.Change, 10)
	defer view.Subscribe(func(c sessions.Change) { changes <- c })()

	closedAt := time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC)
	rec := &sessions.Record{ID: "gone", Principal: "p", Roles: []string{"trader"}, State: wire.StateClosed,
		CloseReason: wire.ClosedByClient, ClosedAt: &closedAt, TokenHash: sessions.HashToken("t"),
		Fixed: map[string]string{"$Principal": "p"}, User: map[string]string{"team": "red"},
		Outbox: []sessions.PendingEvent{{MsgID: "gone-closed", Trace: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}}
	put(t, srv, rec)
	c := <-changes
	got, ok := view.Get("gone")
	if !ok {
		t.Fatal("the view does not hold the tombstone")
	}
	if got.Roles != nil || got.Fixed != nil || got.User != nil || got.TokenHash != "" {
		t.Errorf("the view keeps the tombstone with roles %v, fixed %v, user %v, token hash %q; want none of them", got.Roles, got.Fixed, got.User, got.TokenHash)
	}
	if c.Record != got {
		t.Error("subscribers are given another copy of the tombstone than the view keeps")
	}
	if _, err := view.Authenticate("gone", "t"); !errors.Is(err, wire.ErrSessionClosed) {
		t.Errorf("got %v, want session_closed", err)
	}
	if got.ChangeTrace() != rec.Outbox[0].Trace || !got.Closed() || got.CloseReason != wire.ClosedByClient {
		t.Errorf("got trace %q, closed %v (%s); want the close's trace and reason", got.ChangeTrace(), got.Closed(), got.CloseReason)
	}
	rec.Revision = got.Revision
	if !reflect.DeepEqual(got.Public(), rec.Public()) {
		t.Errorf("public view of the tombstone:\n got %+v\nwant %+v", got.Public(), rec.Public())
	}
	if p := got.Properties(); p["team"] != "red" || p["$Principal"] != "p" {
		t.Errorf("got properties %v", p)
	}
	if full := got.Full(); full.TokenHash != "" || full.User["team"] != "red" || !slices.Equal(full.Roles, rec.Roles) {
		t.Errorf("got full record %+v", full)
	}
	if _, err := sessions.Encode(got); err == nil {
		t.Error("a compact tombstone encoded: writing it would store a record without its properties")
	}
}

// TestViewKeepsTheSessionsRemovedBeforeTheyAreTaken: a view started with KeepGone
// kept only the keys gone when it loaded, and a live session removed after — before
// the registry, whose shared view had loaded before it ran, subscribed — was seen by
// nobody who would close it. Until TakeGoneAtLoad, the view now keeps such removals
// too, with the record it held; after, it keeps none.
func TestViewKeepsTheSessionsRemovedBeforeTheyAreTaken(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	js := srv.JetStream(t)
	put(t, srv, &sessions.Record{ID: "early", Principal: "p", State: wire.StateActive})
	put(t, srv, &sessions.Record{ID: "late", Principal: "q", State: wire.StateActive})
	view, err := sessions.Watch(t.Context(), js, sessions.KeepGone())
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()
	kv, err := js.KeyValue(t.Context(), sessions.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	removed := func(id string) {
		t.Helper()
		if err := kv.Delete(t.Context(), id); err != nil {
			t.Fatal(err)
		}
		natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			if _, ok := view.Get(id); ok {
				return fmt.Errorf("the view still holds %s", id)
			}
			return nil
		})
	}
	removed("early")
	gone := view.TakeGoneAtLoad()
	if len(gone) != 1 || gone[0].ID != "early" || gone[0].Record == nil || gone[0].Record.Principal != "p" {
		t.Fatalf("got gone %+v, want early with its record", gone)
	}
	removed("late")
	if gone := view.TakeGoneAtLoad(); len(gone) != 0 {
		t.Fatalf("got gone %+v after the first take, want none", gone)
	}
}
