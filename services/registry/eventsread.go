package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// Reading session events (roster.v1.session.events). Clients have no JetStream
// access, so the registry reads the events stream for them: a page is one batched
// direct get from a stream sequence (or time) with a subject filter, and the reply
// carries the sequence to start the next page from. The reader keeps that sequence,
// so it misses nothing across its own restarts or the registry's, for as long as the
// stream keeps events (EventsMaxAge).
//
// A read that finds nothing may wait (wait_ms): its request is held, and answered
// when the events stream stores an event it matches. While an instance holds reads
// it follows the stream's new events with an ordered consumer that delivers headers
// only, and reads again for the held requests an event matches; it stops following
// eventsIdle after the last held read is answered, so that an instance nobody reads
// from costs no delivery per event. When the follower starts, every held read is read
// again (events stored before it began are not delivered). A held request is also
// read again every eventsRequery, in case the follower missed an event while it was
// being recreated, and answered with an empty page at its deadline. VIEW_SESSION,
// which a read of another session's events or every session's needs, is checked
// when the read arrives and again at every pass over the held reads and before one
// is answered with events: a reader whose roles lost it meanwhile (a policy change,
// change_principal) is answered forbidden, not given the events.
const (
	eventsPageDefault = 100
	eventsPageMax     = 1000
	eventsMaxWait     = time.Minute
	// eventsPageBytes bounds the event bodies in one reply, well inside NATS's
	// default 1 MiB payload limit.
	eventsPageBytes = 256 << 10
	// eventsScanFactor bounds the events one request scans for a kinds filter the
	// subject cannot express: limit × this factor.
	eventsScanFactor = 10
	// eventsTick is how often held requests are checked for their deadline, and
	// read again when an event they match was not readable yet (a replica behind).
	eventsTick = 100 * time.Millisecond
	// eventsRequery is how often a held request is read again whatever happened.
	eventsRequery = 2 * time.Second
	// maxEventWaiters bounds the held event requests of one instance.
	maxEventWaiters = 4096
	// maxEventWaitersApiece bounds those of one session: a follower holds one read
	// at a time, and without this bound one session could take all of the
	// instance's, leaving every other reader limit_exceeded.
	maxEventWaitersApiece = 16
	// maxEventWaitersPerPrincipal bounds those of the sessions of one principal
	// together: every session may read its own events, and a principal opening 256
	// sessions took all of the instance's again.
	maxEventWaitersPerPrincipal = maxEventWaiters / 2
	// eventsIdle is how long an instance keeps following the stream with no read
	// held (a follower reading in a loop holds one most of the time).
	eventsIdle = 30 * time.Second
)

// eventQuery is a validated events request.
type eventQuery struct {
	session string
	kinds   map[wire.SessionEventKind]bool // nil: every kind
	seq     uint64
	time    *time.Time
	limit   int
}

var eventKinds = map[wire.SessionEventKind]bool{
	wire.EventOpened: true, wire.EventUpdated: true, wire.EventDisconnected: true,
	wire.EventReconnected: true, wire.EventPrincipalChanged: true, wire.EventClosed: true,
}

func newEventQuery(req *wire.SessionEventsRequest) (*eventQuery, error) {
	q := &eventQuery{session: req.SessionID, seq: req.StartSeq, time: req.StartTime, limit: req.Limit}
	switch {
	case req.SessionID != "" && !sessions.ValidID(req.SessionID):
		return nil, wire.Errorf(wire.CodeBadRequest, "session_id %q is not a session id", req.SessionID)
	case req.StartSeq != 0 && req.StartTime != nil:
		return nil, wire.Errorf(wire.CodeBadRequest, "start_seq and start_time exclude each other")
	case req.Limit < 0 || req.Limit > eventsPageMax:
		return nil, wire.Errorf(wire.CodeBadRequest, "limit %d is outside [0, %d]", req.Limit, eventsPageMax)
	case req.WaitMS < 0 || req.WaitMS > eventsMaxWait.Milliseconds():
		return nil, wire.Errorf(wire.CodeBadRequest, "wait_ms %d is outside [0, %d]", req.WaitMS, eventsMaxWait.Milliseconds())
	}
	if q.limit == 0 {
		q.limit = eventsPageDefault
	}
	for _, k := range req.Kinds {
		if !eventKinds[k] {
			return nil, wire.Errorf(wire.CodeBadRequest, "unknown event kind %q", k)
		}
		if q.kinds == nil {
			q.kinds = map[wire.SessionEventKind]bool{}
		}
		q.kinds[k] = true
	}
	return q, nil
}

// subject is the stream subject filter of the query: it names the session and, for
// a single kind, the kind; other kind filters are applied to what it reads.
func (q *eventQuery) subject() string {
	id := q.session
	if id == "" {
		id = "*"
	}
	if len(q.kinds) == 1 {
		for k := range q.kinds {
			return wire.SessionEventSubject(id, k)
		}
	}
	return wire.SessionEventsPrefix + "." + id + ".*"
}

// wants reports whether an event of session id and kind belongs to the query.
func (q *eventQuery) wants(id string, kind wire.SessionEventKind) bool {
	return (q.session == "" || q.session == id) && (q.kinds == nil || q.kinds[kind])
}

// after reports whether an event stored at seq and t lies at or after the query's
// start.
func (q *eventQuery) after(seq uint64, t time.Time) bool {
	if q.time != nil {
		return !t.Before(*q.time)
	}
	return seq >= q.seq
}

// splitEventSubject returns the session id and kind of an event subject.
func splitEventSubject(subject string) (string, wire.SessionEventKind, bool) {
	rest, ok := strings.CutPrefix(subject, wire.SessionEventsPrefix+".")
	if !ok {
		return "", "", false
	}
	id, kind, ok := strings.Cut(rest, ".")
	return id, wire.SessionEventKind(kind), ok
}

// events answers roster.v1.session.events.
func (s *Service) events(ctx context.Context, c *endpoint.Call, req *wire.SessionEventsRequest) (*wire.SessionEventsResponse, error) {
	me, err := s.caller(ctx, c)
	if err != nil {
		return nil, err
	}
	q, err := newEventQuery(req)
	if err != nil {
		return nil, err
	}
	if q.session != me.ID && !s.pol.Allowed(me.Roles, policy.ViewSession, "") {
		if q.session == "" {
			return nil, wire.Errorf(wire.CodeForbidden, "reading every session's events needs %s", policy.ViewSession)
		}
		return nil, wire.Errorf(wire.CodeForbidden, "reading another session's events needs %s", policy.ViewSession)
	}
	// A read that is held is checked again each time it is looked at, and before
	// it is answered with events (heldReadDenied).
	wait := time.Duration(req.WaitMS) * time.Millisecond
	if wait > 0 && c.Reply == "" {
		return nil, wire.Errorf(wire.CodeBadRequest, "a read that waits must be a request (it has no reply subject)")
	}
	seen := s.waiters.seen()
	resp, err := s.readEvents(ctx, q)
	if err != nil || !noProgress(resp, q) || wait == 0 {
		return resp, err
	}
	if s.cfg.beforeHold != nil {
		s.cfg.beforeHold()
	}
	if err := s.waiters.hold(&eventWaiter{q: q, caller: me.ID, principal: me.Principal, reply: c.Reply, span: trace.SpanContextFromContext(ctx),
		deadline: time.Now().Add(endpoint.HoldWithin(ctx, wait)), lastRead: time.Now()}, seen); err != nil {
		return nil, err
	}
	return nil, endpoint.ErrReplyLater
}

// readEvents reads one page of q.
func (s *Service) readEvents(ctx context.Context, q *eventQuery) (*wire.SessionEventsResponse, error) {
	resp := &wire.SessionEventsResponse{Events: []wire.StoredSessionEvent{}, NextSeq: q.seq}
	seq, start, size := q.seq, q.time, 0
	for scanned := 0; scanned < eventsScanFactor*q.limit; {
		batch, end, err := s.st.readEvents(ctx, q.subject(), seq, start, q.limit)
		if err != nil {
			return nil, err
		}
		if len(batch) == 0 {
			return resp, nil
		}
		for _, m := range batch {
			scanned++
			id, kind, _ := splitEventSubject(m.subject)
			if q.wants(id, kind) {
				var ev wire.SessionEvent
				if err := json.Unmarshal(m.data, &ev); err != nil {
					return nil, fmt.Errorf("registry: event at sequence %d: %w", m.seq, err)
				}
				if len(resp.Events) > 0 && size+len(m.data) > eventsPageBytes {
					return resp, nil
				}
				resp.Events = append(resp.Events, wire.StoredSessionEvent{Seq: m.seq, Stored: m.stored, Event: &ev, TraceParent: m.trace})
				size += len(m.data)
			}
			resp.NextSeq = m.seq + 1
			if len(resp.Events) == q.limit {
				return resp, nil
			}
		}
		if end {
			return resp, nil
		}
		seq, start = resp.NextSeq, nil
	}
	return resp, nil
}

// storedMsg is a message read from the events stream.
type storedMsg struct {
	seq     uint64
	subject string
	stored  time.Time
	data    []byte
	trace   string // the event's traceparent header
}

// directGetRequest is the body of a batched direct get ($JS.API.DIRECT.GET.<stream>).
type directGetRequest struct {
	Seq       uint64     `json:"seq,omitempty"`
	NextFor   string     `json:"next_by_subj"`
	Batch     int        `json:"batch"`
	StartTime *time.Time `json:"start_time,omitempty"`
}

// readEvents reads up to batch events on subject from seq, or from the first stored
// at or after start when start is set. end reports that the read reached the end of
// the stream.
func (st *store) readEvents(ctx context.Context, subject string, seq uint64, start *time.Time, batch int) (msgs []storedMsg, end bool, err error) {
	req := directGetRequest{Seq: max(seq, 1), NextFor: subject, Batch: batch}
	if start != nil {
		req = directGetRequest{NextFor: subject, Batch: batch, StartTime: start}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, false, err
	}
	nc := st.js.Conn()
	sub, err := nc.SubscribeSync(nc.NewInbox())
	if err != nil {
		return nil, false, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	// Storage that fails or does not answer is unavailable (or timeout) to the
	// caller, as for the sessions bucket, not internal.
	if err := nc.PublishRequest("$JS.API.DIRECT.GET."+EventsStream, sub.Subject, body); err != nil {
		return nil, false, unavailable("read events", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil, false, unavailable("read events", err)
		}
		switch status := m.Header.Get("Status"); status {
		case "":
		case "404": // nothing at or after the start
			return msgs, true, nil
		case "204": // end of the batch; the header counts what follows it
			return msgs, len(msgs) < batch || m.Header.Get("Nats-Num-Pending") == "0", nil
		default:
			return nil, false, unavailable("read events", fmt.Errorf("status %s %s", status, m.Header.Get("Description")))
		}
		sm := storedMsg{subject: m.Header.Get(jetstream.SubjectHeader), data: m.Data, trace: m.Header.Get(wire.HeaderTraceParent)}
		if sm.seq, err = strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64); err != nil {
			return nil, false, fmt.Errorf("registry: reading events: sequence %q", m.Header.Get(jetstream.SequenceHeader))
		}
		sm.stored, _ = time.Parse(time.RFC3339Nano, m.Header.Get(jetstream.TimeStampHeaer))
		msgs = append(msgs, sm)
	}
}

// eventWaiter is a held events request.
type eventWaiter struct {
	q *eventQuery
	// caller is the reading session: when it closes, the read ends with
	// session_closed.
	caller string
	// principal is the reading session's, whose sessions' reads are bounded together.
	principal string
	reply     string
	// span is the read's server span, ended when the read was held: the answer is
	// a span of the reader's trace under it (replyEvents).
	span     trace.SpanContext
	deadline time.Time
	lastRead time.Time
	// due marks a waiter to read again at the next tick: an event it matches was
	// stored, but the read did not see it yet.
	due bool
}

// storedRef is an event the follower saw stored.
type storedRef struct {
	seq    uint64
	stored time.Time
	id     string
	kind   wire.SessionEventKind
}

// eventWaiters holds the waiting events requests of an instance.
type eventWaiters struct {
	mu      sync.Mutex
	held    map[*eventWaiter]struct{}
	callers map[string]int // held reads per reading session
	// principals counts the held reads per principal of the reading sessions.
	principals map[string]int
	fresh      []storedRef // stored since the last pass
	lastSeq    uint64      // of the last event the follower saw
	wake       chan struct{}
	requery    time.Duration // eventsRequery; tests may change it
	stopped    bool          // the loop that answers held reads has ended
}

func newEventWaiters() *eventWaiters {
	return &eventWaiters{held: map[*eventWaiter]struct{}{}, callers: map[string]int{}, principals: map[string]int{}, wake: make(chan struct{}, 1), requery: eventsRequery}
}

// stop makes hold refuse every later read: nothing would answer it.
func (w *eventWaiters) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
}

// seen returns the sequence of the last event the follower saw: a request that
// reads nothing and is held afterwards is read again if events came in between.
func (w *eventWaiters) seen() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastSeq
}

func (w *eventWaiters) hold(ew *eventWaiter, seen uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return wire.Errorf(wire.CodeUnavailable, "this registry instance is stopping; retry")
	}
	if len(w.held) >= maxEventWaiters {
		return wire.Errorf(wire.CodeLimitExceeded, "this registry instance already holds %d waiting event reads; retry without wait_ms or later", maxEventWaiters)
	}
	if w.callers[ew.caller] >= maxEventWaitersApiece {
		return wire.Errorf(wire.CodeLimitExceeded, "this registry instance already holds %d waiting event reads of the session, the limit; retry without wait_ms or later", maxEventWaitersApiece)
	}
	if w.principals[ew.principal] >= maxEventWaitersPerPrincipal {
		return wire.Errorf(wire.CodeLimitExceeded, "this registry instance already holds %d waiting event reads of the sessions of the principal, the limit; retry without wait_ms or later", maxEventWaitersPerPrincipal)
	}
	w.held[ew] = struct{}{}
	w.callers[ew.caller]++
	w.principals[ew.principal]++
	ew.due = w.lastSeq > seen
	w.signal() // the loop starts the follower if it is not running
	return nil
}

// drop forgets a held read; w.mu is held.
func (w *eventWaiters) drop(ew *eventWaiter) {
	delete(w.held, ew)
	if w.callers[ew.caller]--; w.callers[ew.caller] <= 0 {
		delete(w.callers, ew.caller)
	}
	if w.principals[ew.principal]--; w.principals[ew.principal] <= 0 {
		delete(w.principals, ew.principal)
	}
}

// following marks every held read to be read again: the follower has just started,
// and the events stored before it did were not delivered to it.
func (w *eventWaiters) following() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ew := range w.held {
		ew.due = true
	}
	w.signal()
}

// idle reports whether no read is held.
func (w *eventWaiters) idle() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.held) == 0
}

func (w *eventWaiters) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// stored records an event the follower saw.
func (w *eventWaiters) stored(r storedRef) {
	w.mu.Lock()
	w.lastSeq = max(w.lastSeq, r.seq)
	if len(w.held) > 0 {
		w.fresh = append(w.fresh, r)
		w.signal()
	}
	w.mu.Unlock()
}

// eventsLoop follows the events stream and answers held requests until ctx ends,
// then answers those still held with an empty page (the reader asks again, perhaps
// another instance).
func (s *Service) eventsLoop(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	follow := func() context.CancelFunc {
		fctx, cancel := context.WithCancel(ctx)
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.followEvents(fctx)
		}()
		return cancel
	}
	var stopFollowing context.CancelFunc // nil: not following
	var idleSince time.Time
	defer func() {
		if stopFollowing != nil {
			stopFollowing()
		}
	}()
	tick := time.NewTicker(eventsTick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			s.waiters.stop()
			s.answerWaiters(true)
			return
		case <-s.waiters.wake:
		case <-tick.C:
		}
		s.answerWaiters(false)
		switch idle := s.waiters.idle(); {
		case !idle && stopFollowing == nil:
			stopFollowing = follow()
			idleSince = time.Time{}
		case !idle:
			idleSince = time.Time{}
		case stopFollowing != nil && idleSince.IsZero():
			idleSince = time.Now()
		case stopFollowing != nil && time.Since(idleSince) >= eventsIdle:
			stopFollowing()
			stopFollowing = nil
		}
	}
}

// followEvents runs the ordered consumer that tells eventsLoop about new events
// until ctx ends, recreating it if it fails to start.
func (s *Service) followEvents(ctx context.Context) {
	for wait := 100 * time.Millisecond; ctx.Err() == nil; wait = min(2*wait, 5*time.Second) {
		cons, err := s.js.OrderedConsumer(ctx, EventsStream, jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverNewPolicy, HeadersOnly: true,
		})
		var cc jetstream.ConsumeContext
		if err == nil {
			cc, err = cons.Consume(func(m jetstream.Msg) {
				md, err := m.Metadata()
				if err != nil {
					return
				}
				id, kind, ok := splitEventSubject(m.Subject())
				if ok {
					s.waiters.stored(storedRef{seq: md.Sequence.Stream, stored: md.Timestamp, id: id, kind: kind})
				}
			})
		}
		if err == nil {
			s.waiters.following()
			<-ctx.Done()
			cc.Stop()
			return
		}
		if ctx.Err() == nil {
			s.log.Warn("following session events for waiting reads; retrying", "err", err)
		}
		_ = sleepCtx(ctx, wait)
	}
}

// answerWaiters reads again for the held requests that an event stored since the last
// pass may answer, or that are due, and answers those with events or past their
// deadline. With all, it answers every held request.
func (s *Service) answerWaiters(all bool) {
	now := time.Now()
	w := s.waiters
	var expired, read []*eventWaiter
	var closed []closedWaiter
	w.mu.Lock()
	fresh := w.fresh
	w.fresh = nil
	for ew := range w.held {
		rec := s.track.record(ew.caller)
		if rec != nil && rec.Closed() {
			closed = append(closed, closedWaiter{ew, rec.ClosedError()})
			w.drop(ew)
			continue
		}
		if err := s.heldReadDenied(ew, rec); err != nil {
			closed = append(closed, closedWaiter{ew, err})
			w.drop(ew)
			continue
		}
		switch {
		case all || !now.Before(ew.deadline):
			expired = append(expired, ew)
			w.drop(ew)
		case ew.due || now.Sub(ew.lastRead) >= w.requery || matchesAny(ew.q, fresh):
			ew.due = false
			read = append(read, ew)
		}
	}
	w.mu.Unlock()
	for _, c := range closed {
		s.replyEvents(c.ew, nil, c.err)
	}
	for _, ew := range expired {
		s.replyEvents(ew, &wire.SessionEventsResponse{Events: []wire.StoredSessionEvent{}, NextSeq: ew.q.seq}, nil)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, ew := range read {
		resp, err := s.readEvents(ctx, ew.q)
		if err == nil && noProgress(resp, ew.q) {
			w.mu.Lock()
			ew.lastRead = now
			// An event it matches is stored but was not read: a replica behind.
			ew.due = matchesAny(ew.q, fresh)
			w.mu.Unlock()
			continue
		}
		w.mu.Lock()
		w.drop(ew)
		w.mu.Unlock()
		if err == nil {
			// The read took a moment: the permission may have gone meanwhile.
			err = s.heldReadDenied(ew, s.track.record(ew.caller))
		}
		s.replyEvents(ew, resp, err)
	}
}

// heldReadDenied returns forbidden for a held read of another session's events, or
// every session's, whose reading session no longer has VIEW_SESSION: the policy
// changed, or its roles did (change_principal) since the read arrived. rec is the
// reading session's record as the instance has it now (nil: unknown, not judged).
// A read of the session's own events needs no permission.
func (s *Service) heldReadDenied(ew *eventWaiter, rec *sessions.Record) error {
	if ew.q.session == ew.caller || rec == nil || s.pol.Allowed(rec.Roles, policy.ViewSession, "") {
		return nil
	}
	return wire.Errorf(wire.CodeForbidden, "%s was withdrawn from the session's roles while the read was held (the policy or the session's principal changed): reading another session's events, or every session's, needs it", policy.ViewSession)
}

// closedWaiter is a held read answered with an error: its session closed, or lost
// the permission the read needs.
type closedWaiter struct {
	ew  *eventWaiter
	err error
}

func matchesAny(q *eventQuery, refs []storedRef) bool {
	for _, r := range refs {
		if q.wants(r.id, r.kind) && q.after(r.seq, r.stored) {
			return true
		}
	}
	return false
}

// replyEvents answers the held read ew with resp, or with err. The answer is a span
// of the reader's trace (session.events reply), a child of the read's server span
// as a held acquire's answer is of its own (services/lock): the events it carries,
// or the error's wire code, and links to the changes whose events they are.
func (s *Service) replyEvents(ew *eventWaiter, resp *wire.SessionEventsResponse, err error) {
	_, span := s.svc.Tracer().Start(trace.ContextWithSpanContext(context.Background(), ew.span), "session.events reply",
		trace.WithLinks(eventLinks(resp)...), trace.WithAttributes(attribute.String("roster.session_id", ew.caller)))
	defer span.End()
	if err == nil {
		span.SetAttributes(attribute.Int("roster.events", len(resp.Events)))
		err = endpoint.Reply(s.nc, ew.reply, resp)
	} else {
		var we *wire.Error
		if !errors.As(err, &we) {
			s.log.Error("reading session events", "err", err)
			err = wire.Errorf(wire.CodeUnavailable, "the session events could not be read; retry")
		}
		endpoint.SpanError(span, err)
		err = endpoint.ReplyError(s.nc, ew.reply, err)
	}
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		span.RecordError(err)
		s.log.Warn("answering a waiting event read", "err", err)
	}
}

// maxEventLinks bounds the changes the answer to a held read links: a page holds
// up to eventsPageMax events.
const maxEventLinks = 8

// eventLinks links the requests whose changes stored the events of resp, from the
// traceparent each event was stored with.
func eventLinks(resp *wire.SessionEventsResponse) []trace.Link {
	if resp == nil {
		return nil
	}
	var links []trace.Link
	for _, ev := range resp.Events {
		if ev.TraceParent == "" || len(links) == maxEventLinks {
			continue
		}
		ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{wire.HeaderTraceParent: ev.TraceParent})
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	return links
}

// noProgress reports whether a page read for q found nothing and did not move past
// anything either: a read that may wait then waits. (A kinds filter can scan past
// events without finding one; that page goes back at once, with its next_seq.)
func noProgress(resp *wire.SessionEventsResponse, q *eventQuery) bool {
	return len(resp.Events) == 0 && resp.NextSeq == q.seq
}
