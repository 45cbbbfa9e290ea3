package registry

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// removedByTTL returns nil if the last entry of a session's key is the marker the
// KV TTL leaves when it removes the record.
func (e *env) removedByTTL(id string) error {
	stream, err := e.js.Stream(context.Background(), "KV_"+sessions.Bucket)
	if err != nil {
		return err
	}
	m, err := stream.GetLastMsgForSubject(context.Background(), "$KV."+sessions.Bucket+"."+id)
	if err != nil {
		return fmt.Errorf("session %s: %w", id, err)
	}
	if reason := m.Header.Get(jetstream.MarkerReasonHeader); reason != "MaxAge" {
		return fmt.Errorf("session %s: last entry is no TTL marker (reason %q)", id, reason)
	}
	return nil
}

// closedCount returns the roster.sessions.closed count for reason that rd holds.
func closedCount(t *testing.T, rd *sdkmetric.ManualReader, reason wire.CloseReason) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := rd.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			sum, ok := m.Data.(metricdata.Sum[int64])
			if m.Name != "roster.sessions.closed" || !ok {
				continue
			}
			for _, p := range sum.DataPoints {
				if v, _ := p.Attributes.Value("roster.close.reason"); v.AsString() == string(reason) {
					n += p.Value
				}
			}
		}
	}
	return n
}

// waitRemoved waits until the KV TTL has replaced a session's record with a
// removal marker.
func (e *env) waitRemoved(t *testing.T, id string, within time.Duration) {
	t.Helper()
	natstest.CheckFor(t, within, 50*time.Millisecond, func() error { return e.removedByTTL(id) })
}

// A live record whose KV TTL fires while no registry runs is closed by the next
// instance to start, with one closed event, even when two start at once; a
// tombstone removed at the end of its retention is left removed, its session not
// closed a second time.
func TestSessionRemovedWhileNoRegistryRan(t *testing.T) {
	t.Parallel()
	// A live record's TTL: timeout 5 s + persist 1 s + slack 1 s (+1 s rounding); a
	// tombstone's: 1 s (+1 s).
	cfg := Config{PersistInterval: time.Second, TTLSlack: time.Second, TombstoneRetention: time.Second}
	e := newEnv(t, cfg)
	srv, a := e.srv, e.reg
	nc := srv.ClientConn(t)
	live, _ := open(t, nc, &wire.SessionOpenRequest{TimeoutMS: 5000, Credentials: &wire.Credentials{Type: wire.CredentialsPassword, Username: "carol", Password: "pw"}})
	done, _ := open(t, nc, &wire.SessionOpenRequest{TimeoutMS: 5000})
	if err := done.call(wire.SubjectSessionClose, nil, nil); err != nil {
		t.Fatal(err)
	}
	e.waitEventCount(t, done.id, wire.EventClosed, 1)
	e.waitEventCount(t, live.id, wire.EventOpened, 1)
	a.stop()
	if r := e.record(t, live.id); r.Closed() {
		t.Fatalf("session %s closed (%s) before the instance stopped; the test needs it open", live.id, r.CloseReason)
	}

	e.waitRemoved(t, done.id, 10*time.Second)
	e.waitRemoved(t, live.id, 15*time.Second)
	if n := e.eventCount(t, live.id, wire.EventClosed); n != 0 {
		t.Fatalf("got %d closed events while no registry ran", n)
	}

	// The close is counted once, by the instance that wrote it.
	rd := sdkmetric.NewManualReader()
	cfg.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(rd))
	b1, b2 := startUnready(t, srv, cfg), startUnready(t, srv, cfg)
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		entry, err := e.kv.Get(context.Background(), live.id)
		if err != nil {
			return err
		}
		r, err := sessions.Decode(entry.Value(), entry.Revision())
		if err != nil {
			return err
		}
		if !r.Closed() || r.CloseReason != wire.ClosedExpired || r.Principal != "carol" {
			return fmt.Errorf("session %s: %s (%s) of %q, want closed (expired) of carol", live.id, r.State, r.CloseReason, r.Principal)
		}
		return nil
	})
	e.waitEventCount(t, live.id, wire.EventClosed, 1)
	// Once both instances have checked the keys removed at their load, the one that
	// lost the write must not have closed the session again, and neither may have
	// revived the tombstone that ended.
	for _, s := range []*Service{b1, b2} {
		select {
		case <-s.track.goneChecked:
		case <-time.After(10 * time.Second):
			t.Fatal("an instance did not finish checking the removed keys")
		}
	}
	if n := e.eventCount(t, live.id, wire.EventClosed); n != 1 {
		t.Errorf("session %s: got %d closed events, want 1", live.id, n)
	}
	if n := e.eventCount(t, done.id, wire.EventClosed); n != 1 {
		t.Errorf("session %s: got %d closed events, want 1", done.id, n)
	}
	if err := e.removedByTTL(done.id); err != nil {
		t.Errorf("closed before its tombstone ended: %v; want it left removed", err)
	}
	if n := closedCount(t, rd, wire.ClosedExpired); n != 1 {
		t.Errorf("got roster.sessions.closed %d for reason expired, want 1", n)
	}
	// Every request naming the expired session is refused as closed.
	err := live.call(wire.SubjectSessionGet, nil, nil)
	wantCode(t, err, wire.CodeSessionClosed)
}

// A live record the KV TTL removes while a registry watches is closed from the last
// record the instance saw: the tombstone keeps its principal, and one closed event
// is stored whichever of two instances writes it.
func TestLiveRecordRemovedByTTLWhileWatched(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	startRegistry(t, e.srv, Config{})
	rec := e.createDoomed(t, newID())
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		entry, err := e.kv.Get(context.Background(), rec.ID)
		if err != nil {
			return err
		}
		r, err := sessions.Decode(entry.Value(), entry.Revision())
		if err != nil {
			return err
		}
		if !r.Closed() || r.CloseReason != wire.ClosedExpired || r.Principal != "dave" {
			return fmt.Errorf("session %s: %s (%s) of %q, want closed (expired) of dave", rec.ID, r.State, r.CloseReason, r.Principal)
		}
		return nil
	})
	e.waitEventCount(t, rec.ID, wire.EventClosed, 1)
}

// The check of the keys removed while no registry ran reads the events stream, which
// may not answer yet when the instance has loaded the sessions (after a whole cluster
// restarted, each stream elects its leader on its own). A check that failed used to
// be given up: the session removed by its TTL never got its tombstone nor its closed
// event from that instance, and requests naming it got session_not_found. It is
// retried until it succeeds.
func TestCheckOfRemovedSessionsIsRetried(t *testing.T) {
	t.Parallel()
	// The unanswered look waits out gonePatience (10 s by default) before the retry.
	cfg := Config{PersistInterval: time.Second, TTLSlack: time.Second, TombstoneRetention: time.Second, gonePatience: 2 * time.Second}
	e := newEnv(t, cfg)
	srv, a := e.srv, e.reg
	live, _ := open(t, srv.ClientConn(t), &wire.SessionOpenRequest{TimeoutMS: 1000})
	e.waitEventCount(t, live.id, wire.EventOpened, 1)
	a.stop()
	e.waitRemoved(t, live.id, 15*time.Second)

	// The new instance's first look at the events stream goes unanswered.
	d := &requestDropper{srv: srv.Server.Server, prefix: []byte("$JS.API.STREAM.INFO." + EventsStream)}
	d.arm(1)
	startDropped(t, srv, d, cfg)
	e.waitTombstone(t, live.id, 30*time.Second)
	if n := d.dropped(); n != 1 {
		t.Fatalf("dropped %d requests for the events stream's info, want 1", n)
	}
	e.waitEventCount(t, live.id, wire.EventClosed, 1)
}

// A live record the KV TTL removes while a registry watches gets its tombstone from
// that registry; when the write of the tombstone fails (here it goes unanswered), it
// is written again. It used to be given up with a warning: the session never got
// its tombstone nor its closed event.
func TestTombstoneOfARemovedRecordIsRetried(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	startAuth(t, srv)
	id := newID()
	d := &requestDropper{srv: srv.Server.Server, prefix: []byte("$KV." + sessions.Bucket + "." + id)}
	d.arm(1)
	// The unanswered write waits out gonePatience (10 s by default) before the retry.
	reg := startDropped(t, srv, d, Config{DrainTimeout: 5 * time.Second, gonePatience: 2 * time.Second})
	e := &env{srv: srv, reg: &instance{Service: reg}, js: srv.JetStream(t)}
	e.kv, _ = e.js.KeyValue(t.Context(), sessions.Bucket)

	rec := e.createDoomed(t, id)
	e.waitTombstone(t, rec.ID, 40*time.Second)
	if n := d.dropped(); n != 1 {
		t.Fatalf("dropped %d writes of the tombstone, want 1", n)
	}
	e.waitEventCount(t, rec.ID, wire.EventClosed, 1)
}

// waitTombstone waits until the session's record is a tombstone.
func (e *env) waitTombstone(t *testing.T, id string, within time.Duration) {
	t.Helper()
	natstest.CheckFor(t, within, 20*time.Millisecond, func() error {
		entry, err := e.kv.Get(context.Background(), id)
		if err != nil {
			return fmt.Errorf("session %s: %w", id, err)
		}
		if r, err := sessions.Decode(entry.Value(), entry.Revision()); err != nil || !r.Closed() {
			return fmt.Errorf("session %s has no tombstone (%v)", id, err)
		}
		return nil
	})
}

// createDoomed stores a live session of dave whose KV TTL (1 s) is far shorter than
// its timeout (10 min): it stands for a record whose TTL fires before any instance
// closed it.
func (e *env) createDoomed(t *testing.T, id string) *sessions.Record {
	t.Helper()
	now := time.Now()
	rec := &sessions.Record{
		ID: id, Principal: "dave", Roles: []string{"user"}, State: wire.StateActive,
		TimeoutMS: (10 * time.Minute).Milliseconds(), StartTime: now, LastActivity: now, UpdatedAt: now,
	}
	rec.Fixed = map[string]string{sessions.PropSessionID: rec.ID, sessions.PropPrincipal: rec.Principal}
	data, err := sessions.Encode(rec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.kv.Create(t.Context(), rec.ID, data, jetstream.KeyTTL(time.Second)); err != nil {
		t.Fatal(err)
	}
	return rec
}

// A registry sharing its process's view starts following it after the view loaded
// (its replay of the activity stream comes first), and a live record the KV TTL
// removed in between reached neither its check of the keys removed at the load, which
// the view took before, nor its watch: the session never got its tombstone nor its
// closed event, and requests naming it got session_not_found. The view now keeps the
// live sessions removed after its load too, with their last record, until the
// registry takes them, and the registry writes their tombstones from it.
func TestLiveRecordRemovedBeforeTheRegistryFollowsTheSharedView(t *testing.T) {
	t.Parallel()
	cfg := Config{PersistInterval: time.Second, TTLSlack: time.Second, TombstoneRetention: time.Minute}
	e := newEnv(t, cfg)
	live, _ := open(t, e.srv.ClientConn(t), &wire.SessionOpenRequest{TimeoutMS: 1000,
		Credentials: &wire.Credentials{Type: wire.CredentialsPassword, Username: "carol", Password: "pw"}})
	e.waitEventCount(t, live.id, wire.EventOpened, 1)
	e.reg.stop()

	// The process's view, as roster serve starts it before the registry runs.
	view, err := sessions.Watch(t.Context(), e.js, sessions.KeepGone())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(view.Close)
	if r, ok := view.Get(live.id); !ok || r.Closed() {
		t.Fatalf("session %s not live when the view loaded; the test needs it live", live.id)
	}
	e.waitRemoved(t, live.id, 15*time.Second)
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if _, ok := view.Get(live.id); ok {
			return fmt.Errorf("the view still holds session %s", live.id)
		}
		return nil
	})

	cfg.Sessions = view
	startRegistry(t, e.srv, cfg)
	e.waitTombstone(t, live.id, 10*time.Second)
	if r := e.record(t, live.id); r.CloseReason != wire.ClosedExpired || r.Principal != "carol" || r.Roles == nil {
		t.Fatalf("tombstone of session %s: %s of %q with roles %v, want expired of carol with the record's roles", live.id, r.CloseReason, r.Principal, r.Roles)
	}
	e.waitEventCount(t, live.id, wire.EventClosed, 1)
	err = live.call(wire.SubjectSessionGet, nil, nil)
	wantCode(t, err, wire.CodeSessionClosed)
}
