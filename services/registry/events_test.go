package registry

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// writeWithoutPublishing does what modify does for a change, except publishing the
// event: it is what an instance that died between its compare-and-set and its
// publish leaves behind.
func writeWithoutPublishing(t *testing.T, inst *instance, id string, kind wire.SessionEventKind, fn func(*sessions.Record)) *sessions.Record {
	t.Helper()
	ctx := context.Background()
	cur, err := inst.st.get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	next := cur.Clone()
	fn(next)
	next.UpdatedAt = time.Now()
	if err := inst.carryOutbox(ctx, cur, next); err != nil {
		t.Fatal(err)
	}
	stage(context.Background(), next, kind, nil)
	data, err := inst.encode(next)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := inst.st.write(ctx, next.ID, next.Revision, data, ttlFor(&inst.cfg, next))
	if err != nil {
		t.Fatal(err)
	}
	next.Revision = rev
	return next
}

// waitStored waits until an instance knows the event is stored: it has seen it
// acknowledged, its own publish or a republish.
func waitStored(t *testing.T, inst *instance, id, msgID string) {
	t.Helper()
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !inst.track.eventStored(id, msgID) {
			return fmt.Errorf("instance does not know %s is stored", msgID)
		}
		return nil
	})
}

func TestOutboxPublishesWhatADeadInstanceWrote(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	c, _ := open(t, nc, nil)
	gone, _ := open(t, nc, nil)
	e.waitEventCount(t, c.id, wire.EventOpened, 1)

	// A running instance publishes an event another instance wrote but never
	// published, and exactly once.
	rec := writeWithoutPublishing(t, e.reg, c.id, wire.EventClosed, func(r *sessions.Record) {
		now := time.Now()
		r.State, r.CloseReason, r.ClosedAt = wire.StateClosed, wire.ClosedByServer, &now
	})
	e.waitEventCount(t, c.id, wire.EventClosed, 1)
	evs := e.events(t, c.id, wire.EventClosed)
	if ev := evs[0]; ev.Revision != rec.Revision || ev.Reason != wire.ClosedByServer || ev.State != wire.StateClosed {
		t.Fatalf("got event %+v, want the close written at revision %d", ev, rec.Revision)
	}
	// An instance starting now republishes it too (it has not seen it stored); the
	// message id keeps it single.
	b := startRegistry(t, e.srv, Config{})
	waitStored(t, b, c.id, closedMsgID(c.id))
	if got := e.eventCount(t, c.id, wire.EventClosed); got != 1 {
		t.Fatalf("got %d closed events after a second instance swept, want 1", got)
	}

	// With no registry running at all, a starting instance publishes what the dead
	// one left.
	rec = writeWithoutPublishing(t, b, gone.id, wire.EventUpdated, func(r *sessions.Record) { r.User["k"] = "v" })
	e.reg.stop()
	b.stop()
	if got := e.eventCount(t, gone.id, wire.EventUpdated); got != 0 {
		t.Fatalf("got %d updated events before any instance published one, want 0", got)
	}
	startRegistry(t, e.srv, Config{})
	e.waitEventCount(t, gone.id, wire.EventUpdated, 1)
	if ev := e.events(t, gone.id, wire.EventUpdated)[0]; ev.Revision != rec.Revision {
		t.Fatalf("got event revision %d, want %d", ev.Revision, rec.Revision)
	}
}

func TestOutboxIsTrimmed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	c, _ := open(t, e.srv.ClientConn(t), nil)
	waitStored(t, e.reg, c.id, eventMsgID(c.id, wire.EventOpened, 1))
	for i := range 3 {
		if err := c.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Set: map[string]string{"k": fmt.Sprint(i)}}, nil); err != nil {
			t.Fatal(err)
		}
		rec := e.record(t, c.id)
		want := eventMsgID(c.id, wire.EventUpdated, uint64(i+2))
		if len(rec.Outbox) != 1 || rec.Outbox[0].MsgID != want {
			t.Fatalf("update %d: got outbox %+v, want only %s", i, rec.Outbox, want)
		}
		waitStored(t, e.reg, c.id, want)
	}
	e.waitEventCount(t, c.id, wire.EventUpdated, 3)
}
