package registry

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// Session events go through an outbox in the record (sessions.Record.Outbox): the
// compare-and-set that changes a session also writes the event describing the
// change, and the event is then published to the events stream without waiting for
// its acknowledgement, so a reply waits for one fsynced write instead of two. Every
// event has a deterministic message id (<id>-closed for the one CLOSED event,
// <id>-<seq> for the others), so publishing it again is a no-op within the stream's
// duplicate window. An instance learns that an event is stored from the
// acknowledgement of its own publish; events it has not seen acknowledged for
// outboxSettle — its own that failed, and those of other instances, which may have
// died between their write and the acknowledgement — it publishes again. Every
// publish of an event happens within outboxHorizon of the event, which is shorter than
// the duplicate window, so none can store it twice. Events known stored are dropped
// from the outbox by the next write of the record.
const (
	// eventsDedup is the events stream's duplicate window.
	eventsDedup = 5 * time.Minute
	// MinEventsMaxAge is the shortest Config.EventsMaxAge: JetStream refuses a
	// stream whose duplicate window is longer than its MaxAge.
	MinEventsMaxAge = eventsDedup
	// outboxHorizon bounds the age of an event anyone publishes: the duplicate window
	// less a margin for clock differences between instances and the sweep period.
	outboxHorizon = eventsDedup - time.Minute
	// outboxSettle is how old an event must be before an instance that has not seen
	// it acknowledged publishes it again.
	outboxSettle = 2 * time.Second
	// outboxSweepEvery is how often an instance looks for such events.
	outboxSweepEvery = time.Second
	// maxOutbox bounds the events a record carries. A write that would carry more
	// first publishes the oldest and waits for their acknowledgements (rare: it takes
	// many changes of one session within outboxSettle from several instances).
	maxOutbox = 32
	// eventAckTimeout bounds the wait for an event's acknowledgement; an event not
	// acknowledged in time is published again by the sweep.
	eventAckTimeout = 5 * time.Second
)

// eventMsgID is the message id of a session's event: the CLOSED event has one per
// session, whatever the path that closed it; the others are numbered.
func eventMsgID(id string, kind wire.SessionEventKind, seq uint64) string {
	if kind == wire.EventClosed {
		return closedMsgID(id)
	}
	return id + "-" + strconv.FormatUint(seq, 10)
}

func closedMsgID(id string) string { return id + "-closed" }

// stage adds the event describing rec, as it is about to be written, to its outbox,
// with the trace context of ctx (the request making the change).
func stage(ctx context.Context, rec *sessions.Record, kind wire.SessionEventKind, keys []string) {
	rec.EventSeq++
	rec.Outbox = append(rec.Outbox, sessions.PendingEvent{
		MsgID: eventMsgID(rec.ID, kind, rec.EventSeq),
		Trace: wire.TraceParent(ctx),
		Event: wire.SessionEvent{
			Kind:       kind,
			SessionID:  rec.ID,
			Time:       rec.UpdatedAt,
			Principal:  rec.Principal,
			State:      rec.State,
			Reason:     rec.CloseReason,
			Keys:       keys,
			Connection: rec.Connection,
		},
	})
}

// carryOutbox prepares the outbox of next, a change of cur about to be written: the
// event cur's own write staged learns its revision, and events known to be stored or
// older than the horizon are dropped. When more than maxOutbox would remain, the
// oldest are published and acknowledged first.
func (s *Service) carryOutbox(ctx context.Context, cur, next *sessions.Record) error {
	now := s.cfg.Now()
	kept := next.Outbox[:0]
	for _, p := range next.Outbox {
		if p.Event.Revision == 0 {
			p.Event.Revision = cur.Revision
		}
		if now.Sub(p.Event.Time) > outboxHorizon || s.track.eventStored(next.ID, p.MsgID) {
			continue
		}
		kept = append(kept, p)
	}
	for len(kept) >= maxOutbox {
		if err := s.st.publishEvent(ctx, &kept[0].Event, kept[0].MsgID); err != nil {
			return err
		}
		kept = kept[1:]
	}
	next.Outbox = kept
	return nil
}

// eventWarnEvery is how often at most a failed event publish is logged.
const eventWarnEvery = 10 * time.Second

// newEventsJetStream returns the JetStream context events are published with: acks
// are handled in callbacks, so nothing waits for them.
func (s *Service) newEventsJetStream() (jetstream.JetStream, error) {
	return jetstream.New(s.nc,
		jetstream.WithPublishAsyncTimeout(eventAckTimeout),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) {
			s.track.stored(m.Header.Get(jetstream.MsgIDHeader))
		}),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			// The sweep publishes it again; the message id keeps it single.
			s.eventWarn.Warn("subject", m.Subject, "msg_id", m.Header.Get(jetstream.MsgIDHeader), "err", err)
		}),
	)
}

// publishPending publishes an outbox event of rec (read or written at rec.Revision)
// without waiting for the acknowledgement.
func (s *Service) publishPending(rec *sessions.Record, p sessions.PendingEvent) {
	if p.Event.Revision == 0 {
		p.Event.Revision = rec.Revision
	}
	data, err := json.Marshal(&p.Event)
	if err != nil {
		s.log.Error("encoding a session event", "session_id", rec.ID, "err", err)
		return
	}
	msg := &nats.Msg{Subject: wire.SessionEventSubject(rec.ID, p.Event.Kind), Data: data, Header: nats.Header{}}
	if p.Trace != "" {
		msg.Header.Set(wire.HeaderTraceParent, p.Trace)
	}
	if _, err := s.ejs.PublishMsgAsync(msg, jetstream.WithMsgID(p.MsgID)); err != nil {
		s.eventWarn.Warn("session_id", rec.ID, "msg_id", p.MsgID, "err", err)
	}
}

// publishStaged publishes the event the write of rec staged: the last of its outbox.
func (s *Service) publishStaged(rec *sessions.Record) {
	if n := len(rec.Outbox); n > 0 {
		s.publishPending(rec, rec.Outbox[n-1])
	}
}

// waitEvents waits, up to ctx, for the acknowledgements of the events published.
func (s *Service) waitEvents(ctx context.Context) {
	select {
	case <-s.ejs.PublishAsyncComplete():
	case <-ctx.Done():
	}
}

// sweepLoop publishes again, every outboxSweepEvery, the outbox events this instance
// has not seen stored once they are older than outboxSettle.
func (t *tracker) sweepLoop(ctx context.Context) {
	tick := time.NewTicker(outboxSweepEvery)
	defer tick.Stop()
	for {
		t.sweep()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

type pendingPublish struct {
	rec *sessions.Record
	ev  sessions.PendingEvent
}

func (t *tracker) sweep() {
	now := t.s.cfg.Now()
	var due []pendingPublish
	t.mu.Lock()
	for id := range t.unpublished {
		e := t.sessions[id]
		if e == nil {
			delete(t.unpublished, id)
			continue
		}
		live := false
		for _, p := range e.rec.Outbox {
			age := now.Sub(p.Event.Time)
			if age > outboxHorizon || e.isStored(p.MsgID) {
				continue
			}
			live = true
			if age >= outboxSettle {
				due = append(due, pendingPublish{e.rec, p})
			}
		}
		if !live {
			delete(t.unpublished, id)
		}
	}
	t.mu.Unlock()
	for _, d := range due {
		t.s.publishPending(d.rec, d.ev)
	}
}

// tellMoved tells the client whose connection (key) rec's session was bound to that
// another client resumed it on its own: deliveries no longer go there, and the
// connection-scoped locks taken there are released. Best effort, as tellClosed.
func (s *Service) tellMoved(ctx context.Context, rec *sessions.Record, key string) {
	s.tell(ctx, key, &wire.SessionStateNotice{SessionID: rec.ID, State: rec.State, Moved: true, Revision: rec.Revision})
}

// tellClosed tells the connection rec's session is bound to that the session has
// closed (wire.SessionStateSubject), so that a client learns a close by another
// session or by the server at once rather than at its next keepalive. Best effort:
// a client that misses it learns it from its next request.
func (s *Service) tellClosed(ctx context.Context, rec *sessions.Record) {
	if rec.DeliverKey == "" {
		return
	}
	s.tell(ctx, rec.DeliverKey, &wire.SessionStateNotice{SessionID: rec.ID, State: rec.State, Reason: rec.CloseReason})
}

// tell publishes n to the connection with key, on the notice's session's
// wire.SessionStateSubject.
func (s *Service) tell(ctx context.Context, key string, n *wire.SessionStateNotice) {
	data, err := json.Marshal(n)
	if err != nil {
		return
	}
	msg := &nats.Msg{Subject: wire.SessionStateSubject(key, n.SessionID), Data: data, Header: nats.Header{wire.HeaderNotice: []string{"state"}}}
	wire.Inject(ctx, msg.Header)
	if err := s.nc.PublishMsg(msg); err != nil {
		s.log.Debug("telling a session's connection of its state", "session_id", n.SessionID, "moved", n.Moved, "err", err)
	}
}
