package registry

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// SubjectDisconnect is where the server announces closed client connections of the
// CLIENTS account. The services account sees it through a stream import from the
// system account (see pkg/embedded); without the import sessions still close by
// their timeout, they just never become RECOVERING.
const SubjectDisconnect = "$SYS.ACCOUNT.CLIENTS.DISCONNECT" // = embedded.DisconnectAdvisories

// expiryWorkers bounds the expiries written at once.
const expiryWorkers = 16

// entry is what the tracker knows of one session.
type entry struct {
	rec *sessions.Record
	// due is the deadline the scheduler heap holds for it (zero: none).
	due time.Time
	// stored lists the message ids of rec's outbox events this instance knows are
	// in the events stream.
	stored []string
}

func (e *entry) isStored(msgID string) bool {
	for _, id := range e.stored {
		if id == msgID {
			return true
		}
	}
	return false
}

// tracker follows every session in memory: the latest record (from the KV watch and
// this instance's own writes), the latest activity seen by any instance, and the
// deadline at which it expires or its reconnect window ends.
type tracker struct {
	s *Service

	mu          sync.Mutex
	sessions    map[string]*entry
	last        map[string]time.Time // latest activity per session id
	byConn      map[string]map[string]struct{}
	byPrincipal map[string]int // open sessions per principal
	reserved    map[string]int // opens in progress per principal
	// opening holds, by session id, the reservations whose session is not counted in
	// byPrincipal yet: the first record of it with the reserved principal ends the
	// reservation, so that the session is never counted twice.
	opening map[string]*reservation
	// closedConns remembers the connections this instance learned closed (advisory
	// or connection check), for closedConnMemory after the last attempt to move their
	// sessions to RECOVERING: a session bound to one of them afterwards — an open or
	// resume whose connection closed while it was in progress — missed its advisory,
	// and a session still ACTIVE on one is retried (unsettled).
	closedConns map[string]time.Time
	heap        deadlines
	broadcast   map[string]struct{} // own activity not yet published
	loaded      bool
	loadedCh    chan struct{} // closed once loaded
	goneChecked chan struct{} // closed once the keys removed at load are checked
	// While this instance is cut off from NATS it misses the activity other
	// instances broadcast, so it must not expire anything on what it knows: blind
	// is set at a disconnect and cleared at the reconnect. From then on, until the
	// instance has read what it missed from the activity stream (catchUp), every
	// session counts as active at the reconnect (resumedAt).
	blind     bool
	resumedAt time.Time
	cutAt     time.Time // when blind was set
	cuts      int       // disconnects so far
	// catchUp is the reading of the activity missed while cut off, pending until it
	// succeeds: from where, and the resumedAt to restore once it has.
	catchUp  *catchUp
	runCtx   context.Context
	catchUps sync.WaitGroup // catch-ups reconnected started
	// unpublished holds the sessions whose outbox has events this instance has not
	// seen stored.
	unpublished map[string]struct{}

	wake chan struct{}
	// expired holds the live records the KV TTL removed, whose tombstones
	// tombstoneLoop writes; expiredWake tells it of new ones.
	expired     []*sessions.Record
	expiredWake chan struct{}
	conns       *connChecker
}

// closedConnMemory is how long an instance remembers a closed connection, longer
// than an open or resume takes.
const closedConnMemory = time.Minute

// jsRequestWait bounds one JetStream API request of the tracker: long enough for a
// loaded server, short against a request no server will ever answer.
const jsRequestWait = 2 * time.Second

// catchUpMargin is how far before a disconnect a reconnected instance starts reading
// the activity it missed: batches published just before the cut may not have reached
// it.
const catchUpMargin = time.Second

func newTracker(s *Service) *tracker {
	t := &tracker{
		s:           s,
		sessions:    map[string]*entry{},
		last:        map[string]time.Time{},
		byConn:      map[string]map[string]struct{}{},
		byPrincipal: map[string]int{},
		reserved:    map[string]int{},
		opening:     map[string]*reservation{},
		closedConns: map[string]time.Time{},
		broadcast:   map[string]struct{}{},
		unpublished: map[string]struct{}{},
		wake:        make(chan struct{}, 1),
		expiredWake: make(chan struct{}, 1),
		loadedCh:    make(chan struct{}),
		goneChecked: make(chan struct{}),
	}
	t.conns = newConnChecker(t)
	return t
}

// waitLoaded waits until the tracker has loaded the sessions and their recent
// activity. Until then an instance can tell neither whether a session's time is up
// (a request would revive a session that expired while no registry ran) nor how many
// sessions a principal holds, so session requests and opens wait for it.
func (t *tracker) waitLoaded(ctx context.Context) error {
	select {
	case <-t.loadedCh:
		return nil
	case <-ctx.Done():
		return wire.Errorf(wire.CodeUnavailable, "the registry instance is still loading the sessions; retry")
	}
}

// touch counts a request as activity of rec's session, unless the session's time is
// already up as far as this instance knows (its inactivity timeout or reconnect window
// has passed): then it reports overdue and records nothing. It never reports overdue
// while the instance is cut off from the other instances' activity.
func (t *tracker) touch(rec *sessions.Record) (overdue bool) {
	now := t.s.cfg.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.blind {
		if at, _ := t.deadlineLocked(rec); !at.IsZero() && !at.After(now) {
			return true
		}
	}
	t.activityLocked(rec.ID, now)
	return false
}

func (t *tracker) ready(context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.loaded {
		return wire.Errorf(wire.CodeUnavailable, "loading sessions") // said over the wire too
	}
	return nil
}

// activity records activity of a session seen by this instance; it is broadcast to
// the other instances with the next batch.
func (t *tracker) activity(id string) {
	now := t.s.cfg.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.activityLocked(id, now)
}

func (t *tracker) activityLocked(id string, now time.Time) {
	if now.After(t.last[id]) {
		t.last[id] = now
	}
	t.broadcast[id] = struct{}{}
}

// lastActivity returns the latest activity known for a session.
func (t *tracker) lastActivity(id string) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.last[id]
	if e := t.sessions[id]; e != nil && e.rec.LastActivity.After(l) {
		l = e.rec.LastActivity
	}
	return l
}

// reservation is a session counted against a principal's limit before its record
// is.
type reservation struct {
	principal string
	ended     bool
}

// reserve counts session id, about to be written with principal (an open, or a
// change of principal), against the principal's limit until the tracker counts the
// session itself — its record with that principal reaches the tracker, by the
// instance's own write or the watch — or release, whichever comes first.
// Anonymous sessions have no principal (seed 002): they share no limit, since the
// empty principal names nobody.
func (t *tracker) reserve(principal, id string, limit int) (release func(), err error) {
	if principal == "" {
		return func() {}, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := t.byPrincipal[principal] + t.reserved[principal]; n >= limit {
		return nil, wire.Errorf(wire.CodeLimitExceeded, "principal has %d open sessions; the limit of sessions per principal is %d", n, limit)
	}
	t.reserved[principal]++
	r := &reservation{principal: principal}
	if t.opening[id] == nil {
		t.opening[id] = r
	}
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		t.endReservationLocked(id, r)
	}, nil
}

func (t *tracker) endReservationLocked(id string, r *reservation) {
	if r.ended {
		return
	}
	r.ended = true
	if t.reserved[r.principal]--; t.reserved[r.principal] <= 0 {
		delete(t.reserved, r.principal)
	}
	if t.opening[id] == r {
		delete(t.opening, id)
	}
}

// opened and written take this instance's own writes into account at once, before
// the watch delivers them.
func (t *tracker) opened(rec *sessions.Record) {
	t.activity(rec.ID)
	t.written(rec)
}

func (t *tracker) written(rec *sessions.Record) {
	// A tombstone is kept compact, and the tracker and the view keep one copy.
	rec = rec.Compact()
	t.mu.Lock()
	t.upsertLocked(rec)
	t.mu.Unlock()
	// The process's other services follow the shared view: they see the write as
	// soon as the reply goes, not when the watch brings it back.
	if v := t.s.cfg.Sessions; v != nil {
		v.Apply(rec)
	}
}

// onChange applies a change seen by the KV watch. It runs on the view's goroutine.
func (t *tracker) onChange(ch sessions.Change) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ch.Record != nil {
		t.upsertLocked(ch.Record)
		return
	}
	e := t.sessions[ch.ID]
	if e == nil {
		return
	}
	t.unindexLocked(e.rec)
	delete(t.sessions, ch.ID)
	delete(t.last, ch.ID)
	delete(t.unpublished, ch.ID)
	if !e.rec.Closed() {
		// The KV TTL removed a live record: no registry closed it in time. Write
		// the tombstone from the last record seen (tombstoneLoop).
		t.expired = append(t.expired, e.rec)
		select {
		case t.expiredWake <- struct{}{}:
		default:
		}
	}
}

func (t *tracker) upsertLocked(rec *sessions.Record) {
	e := t.sessions[rec.ID]
	if e != nil && e.rec.Revision >= rec.Revision {
		return
	}
	if e == nil {
		e = &entry{}
		t.sessions[rec.ID] = e
	} else {
		t.unindexLocked(e.rec)
	}
	e.rec = rec.Compact()
	t.outboxLocked(e)
	if rec.Closed() {
		delete(t.last, rec.ID)
		return
	}
	if rec.LastActivity.After(t.last[rec.ID]) {
		t.last[rec.ID] = rec.LastActivity
	}
	t.byPrincipal[rec.Principal]++
	if r := t.opening[rec.ID]; r != nil && r.principal == rec.Principal {
		t.endReservationLocked(rec.ID, r) // counted now: no longer in flight
	}
	if rec.Connection != "" {
		ids := t.byConn[rec.Connection]
		if ids == nil {
			ids = map[string]struct{}{}
			t.byConn[rec.Connection] = ids
		}
		ids[rec.ID] = struct{}{}
	}
	t.scheduleLocked(rec.ID, e)
}

// outboxLocked forgets what it knew of events no longer in the record's outbox and
// notes whether the outbox holds events not known stored.
func (t *tracker) outboxLocked(e *entry) {
	kept := e.stored[:0]
	for _, id := range e.stored {
		if slices.ContainsFunc(e.rec.Outbox, func(p sessions.PendingEvent) bool { return p.MsgID == id }) {
			kept = append(kept, id)
		}
	}
	e.stored = kept
	if len(e.rec.Outbox) > len(e.stored) {
		t.unpublished[e.rec.ID] = struct{}{}
	} else {
		delete(t.unpublished, e.rec.ID)
	}
}

// stored notes that the event with message id msgID is in the events stream.
func (t *tracker) stored(msgID string) {
	if len(msgID) <= sessions.IDLength {
		return
	}
	id := msgID[:sessions.IDLength]
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.sessions[id]
	if e == nil || e.isStored(msgID) {
		return
	}
	e.stored = append(e.stored, msgID)
	t.outboxLocked(e)
}

// recordAt returns the record of a session if the tracker holds it at revision rev.
// record returns the latest record the instance holds for id, or nil.
func (t *tracker) record(id string) *sessions.Record {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.sessions[id]; e != nil {
		return e.rec
	}
	return nil
}

func (t *tracker) recordAt(id string, rev uint64) *sessions.Record {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.sessions[id]; e != nil && e.rec.Revision == rev {
		return e.rec
	}
	return nil
}

// eventStored reports whether this instance knows that an event is stored.
func (t *tracker) eventStored(id, msgID string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.sessions[id]
	return e != nil && e.isStored(msgID)
}

func (t *tracker) unindexLocked(rec *sessions.Record) {
	if rec.Closed() {
		return
	}
	if t.byPrincipal[rec.Principal]--; t.byPrincipal[rec.Principal] <= 0 {
		delete(t.byPrincipal, rec.Principal)
	}
	if ids := t.byConn[rec.Connection]; ids != nil {
		delete(ids, rec.ID)
		if len(ids) == 0 {
			delete(t.byConn, rec.Connection)
		}
	}
}

// deadlineLocked returns when a session ends and why: its inactivity timeout (plus
// the grace that covers activity batches in flight) or, while RECOVERING, the end of
// its reconnect window. Zero means never (a permanent ACTIVE session).
func (t *tracker) deadlineLocked(rec *sessions.Record) (time.Time, wire.CloseReason) {
	var at time.Time
	reason := wire.ClosedExpired
	if !rec.Permanent {
		last := t.last[rec.ID]
		if rec.LastActivity.After(last) {
			last = rec.LastActivity
		}
		if t.resumedAt.After(last) {
			last = t.resumedAt
		}
		at = last.Add(rec.Timeout() + t.s.cfg.ExpiryGrace)
	}
	if rec.State == wire.StateRecovering && rec.RecoveringSince != nil {
		w := rec.RecoveringSince.Add(t.s.cfg.ReconnectWindow)
		if at.IsZero() || w.Before(at) {
			at, reason = w, wire.ClosedFailed
		}
	}
	return at, reason
}

// scheduleLocked makes sure the heap holds the session's deadline. Activity only
// moves deadlines later, so the heap may hold an earlier one: when it comes due the
// scheduler computes the real deadline and reschedules.
func (t *tracker) scheduleLocked(id string, e *entry) {
	at, _ := t.deadlineLocked(e.rec)
	if at.IsZero() {
		return
	}
	if e.due.IsZero() || at.Before(e.due) {
		e.due = at
		heap.Push(&t.heap, deadline{at: at, id: id})
		t.wakeLocked()
	}
}

// retryLocked schedules another look at a session after a failed expiry, and wakes
// the scheduler: it sleeps until the earliest deadline it last saw, which may be far
// later (an hour when it held none), and a retry it did not see waited for that.
func (t *tracker) retryLocked(id string, at time.Time) {
	if e := t.sessions[id]; e != nil && !e.rec.Closed() {
		e.due = at
		heap.Push(&t.heap, deadline{at: at, id: id})
		t.wakeLocked()
	}
}

// wakeLocked makes the scheduler look at the heap again.
func (t *tracker) wakeLocked() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// run loads the state and follows it until ctx ends.
func (t *tracker) run(ctx context.Context) error {
	s := t.s
	activity := make(chan *nats.Msg, 8192)
	asub, err := s.nc.ChanSubscribe(wire.SubjectSessionActivity, activity)
	if err != nil {
		return err
	}
	defer func() { _ = asub.Unsubscribe() }()
	t.mu.Lock()
	t.runCtx = ctx
	t.mu.Unlock()
	// The connection is the caller's: its own handlers (a process logs the loss)
	// still run, after the tracker's.
	prevDisconnect, prevReconnect := s.nc.DisconnectErrHandler(), s.nc.ReconnectHandler()
	s.nc.SetDisconnectErrHandler(func(nc *nats.Conn, err error) {
		t.cutOff()
		if prevDisconnect != nil {
			prevDisconnect(nc, err)
		}
	})
	s.nc.SetReconnectHandler(func(nc *nats.Conn) {
		t.reconnected()
		if prevReconnect != nil {
			prevReconnect(nc)
		}
	})
	// When run returns, the connection stops calling into the tracker, and a
	// catch-up that a reconnect started has ended.
	defer func() {
		s.nc.SetDisconnectErrHandler(prevDisconnect)
		s.nc.SetReconnectHandler(prevReconnect)
		t.mu.Lock()
		t.runCtx = nil
		t.mu.Unlock()
		t.catchUps.Wait()
	}()
	// A NATS server restart drops every connection at once: the buffer holds the
	// advisories of that many (a full channel would drop them as a slow consumer).
	disconnects := make(chan *nats.Msg, 65536)
	dsub, err := s.nc.ChanSubscribe(SubjectDisconnect, disconnects)
	if err != nil {
		return err
	}
	defer func() { _ = dsub.Unsubscribe() }()
	if err := s.nc.Flush(); err != nil {
		return err
	}
	// JetStream may not answer yet (a cluster electing its leaders): retry the
	// start-up reads until it does or the service stops, rather than failing.
	view := s.cfg.Sessions
	for {
		err := t.replay(ctx, time.Time{})
		if err == nil && s.cfg.Sessions == nil {
			view, err = sessions.Watch(ctx, s.js, sessions.WithKnown(t.recordAt), sessions.KeepGone(), sessions.WithLogger(s.log))
			if err == nil {
				defer view.Close()
			}
		}
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.log.Warn("registry tracker not started yet; retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	if s.cfg.Sessions != nil {
		// The shared view need not decode this instance's own writes either.
		view.SetKnown(t.recordAt)
		defer view.SetKnown(nil)
	}
	cancelSub := view.Subscribe(t.onChange)
	defer cancelSub()
	// Taken at once: the view keeps the live sessions removed after its load until
	// then — a shared view loads before the registry runs — and those removed from now
	// on reach onChange. Their tombstones are written from the last record, as
	// onChange's are (a session removed between the two calls comes both ways; the
	// second write finds the first's tombstone).
	gone := view.TakeGoneAtLoad()
	t.mu.Lock()
	atLoad := gone[:0]
	for _, g := range gone {
		if g.Record != nil {
			t.expired = append(t.expired, g.Record)
		} else {
			atLoad = append(atLoad, g)
		}
	}
	gone = atLoad
	if len(t.expired) > 0 {
		select {
		case t.expiredWake <- struct{}{}:
		default:
		}
	}
	t.mu.Unlock()
	t.mu.Lock()
	t.loaded = true
	t.mu.Unlock()
	close(t.loadedCh)

	var wg sync.WaitGroup
	defer wg.Wait()
	work := func(fn func()) {
		wg.Add(1)
		go func() { defer wg.Done(); fn() }()
	}
	work(func() { t.consumeActivity(ctx, activity) })
	work(func() { t.consumeDisconnects(ctx, disconnects) })
	work(func() { t.flushLoop(ctx) })
	work(func() { t.persistLoop(ctx) })
	work(func() { t.expiryLoop(ctx) })
	work(func() { t.sweepLoop(ctx) })
	work(func() { t.conns.run(ctx) })
	work(func() {
		defer close(t.goneChecked)
		s.closeGone(ctx, gone)
	})
	work(func() { t.tombstoneLoop(ctx) })
	<-ctx.Done()
	return nil
}

// tombstoneRetry is how often tombstoneLoop writes again the tombstones whose write
// failed.
const tombstoneRetry = time.Second

// tombstoneLoop writes the tombstones of the live records the KV TTL removed
// (onChange), and writes again every tombstoneRetry those whose write failed, until
// each is written or another instance's is there. A failed write used to be given
// up, and a channel of 4096 dropped what did not fit: such a session got neither
// its tombstone nor its closed event.
func (t *tracker) tombstoneLoop(ctx context.Context) {
	tick := time.NewTicker(tombstoneRetry)
	defer tick.Stop()
	var failed []*sessions.Record
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.expiredWake:
		case <-tick.C:
			if len(failed) == 0 {
				continue
			}
		}
		t.mu.Lock()
		recs := append(failed, t.expired...)
		t.expired = nil
		t.mu.Unlock()
		var err error
		failed = nil
		for _, rec := range recs {
			if ctx.Err() != nil {
				return
			}
			if e := t.s.tombstoneExpired(ctx, rec); e != nil {
				failed = append(failed, rec)
				if err == nil {
					err = e
				}
			}
		}
		if err != nil && ctx.Err() == nil {
			t.s.log.Warn("writing the tombstones of sessions the KV TTL removed; retrying", "sessions", len(failed), "err", err, "retry_in", tombstoneRetry)
		}
	}
}

// replay reads the activity stream, so that activity not yet persisted in the
// records counts for the deadlines. Each batch counts at the time the stream stored
// it, which is after the activity it reports.
//
// It reads with a plain ephemeral consumer, ending with ctx: an ordered consumer's
// Fetch takes no context and, when it has to recreate its consumer, tries again for
// as long as the server is away — a replay begun on a reconnect held the
// instance's stop until NATS came back, forever if it did not. It has caught up
// when a message says none is pending after it, or the consumer says so: an empty
// fetch alone is also what a server that does not answer gives.
func (t *tracker) replay(ctx context.Context, from time.Time) error {
	cfg := jetstream.ConsumerConfig{
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute,
		Replicas:          1,
		MemoryStorage:     true,
	}
	if !from.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &from
	}
	// Every request to JetStream has a short bound of its own: one that no server
	// answers (the consumer placed on a node that has just died and is not yet
	// known to be gone, or no meta leader) is lost, and would otherwise hold the
	// replay for all of ctx.
	cctx, cancel := context.WithTimeout(ctx, jsRequestWait)
	cons, err := t.s.js.CreateConsumer(cctx, ActivityStream, cfg)
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		// Not on ctx, which may have ended; without a server to ask, or if this
		// fails, the inactive threshold removes it.
		if !t.s.nc.IsConnected() {
			return
		}
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = t.s.js.DeleteConsumer(dctx, ActivityStream, cons.CachedInfo().Name)
		cancel()
	}()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			return err
		}
		n := 0
		done := false
		for msg := range batch.Messages() {
			n++
			md, err := msg.Metadata()
			if err != nil {
				continue
			}
			t.noteActivity(msg.Data(), md.Timestamp)
			done = md.NumPending == 0
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return err
		}
		if done {
			return nil
		}
		if n == 0 {
			// An empty fetch is no proof of the end: one that no server answered (the
			// consumer's node gone, a stream between leaders) ends the same way, with
			// no message and no error. Ask what is left.
			ictx, cancel := context.WithTimeout(ctx, jsRequestWait)
			info, err := cons.Info(ictx)
			cancel()
			if err != nil {
				return err
			}
			if info.NumPending == 0 {
				return nil
			}
		}
	}
}

func (t *tracker) noteActivity(data []byte, at time.Time) {
	var a wire.SessionActivity
	if json.Unmarshal(data, &a) != nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, id := range a.Sessions {
		if sessions.ValidID(id) && at.After(t.last[id]) {
			t.last[id] = at
		}
	}
}

func (t *tracker) consumeActivity(ctx context.Context, ch <-chan *nats.Msg) {
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-ch:
			t.noteActivity(msg.Data, t.s.cfg.Now())
		}
	}
}

// flushLoop publishes this instance's activity once per interval.
func (t *tracker) flushLoop(ctx context.Context) {
	tick := time.NewTicker(t.s.cfg.ActivityInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			t.flush()
			return
		case <-tick.C:
			t.flush()
		}
	}
}

func (t *tracker) flush() {
	if !t.s.nc.IsConnected() {
		return // kept for the first batch after the reconnect (PublishActivity)
	}
	t.mu.Lock()
	if len(t.broadcast) == 0 {
		t.mu.Unlock()
		return
	}
	ids := make([]string, 0, len(t.broadcast))
	for id := range t.broadcast {
		ids = append(ids, id)
	}
	clear(t.broadcast)
	t.mu.Unlock()
	n, err := sessions.PublishActivity(t.s.nc, ids)
	if err == nil {
		return
	}
	// What the server has not received goes with the next batch: lost, it would let
	// another instance close those sessions a timeout after an earlier request.
	t.mu.Lock()
	for _, id := range ids[n:] {
		t.broadcast[id] = struct{}{}
	}
	t.mu.Unlock()
	t.s.log.Warn("publishing activity; retrying with the next batch", "sessions", len(ids)-n, "err", err)
}

// persistLoop writes the last activity into records whose stored one is older than
// the persist interval, so that it survives the activity stream's retention, and
// refreshes their KV TTL. Writes are spread (persistBatch): sessions opened together
// — all of a server's clients reconnecting, say — would otherwise all come due
// together, every interval.
func (t *tracker) persistLoop(ctx context.Context) {
	every := max(t.s.cfg.PersistInterval/10, 100*time.Millisecond)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var stale []*sessions.Record
		live := 0
		t.mu.Lock()
		for id, e := range t.sessions {
			if e.rec.Closed() {
				continue
			}
			live++
			if t.last[id].Sub(e.rec.LastActivity) >= t.s.cfg.PersistInterval {
				stale = append(stale, e.rec)
			}
		}
		// Activity can name a session before the watch delivers it (a request right
		// after open); activity for ids that never turn up is forgotten.
		for id, at := range t.last {
			if _, held := t.sessions[id]; !held && t.s.cfg.Now().Sub(at) > t.s.cfg.PersistInterval {
				delete(t.last, id)
			}
		}
		for conn, at := range t.closedConns {
			if time.Since(at) > closedConnMemory {
				delete(t.closedConns, conn)
			}
		}
		t.mu.Unlock()
		batch := persistBatch(stale, live, every, t.s.cfg.PersistInterval)
		start := time.Now()
		writers := newBounded(persistWriters)
		for i, rec := range batch {
			// Paced over the round, so that no second sees more than the round's
			// share of it: a round's writes at disk speed would be a burst of their own.
			// A few at once, so that slow (replicated) writes still keep up.
			if !sleepCtx(ctx, time.Until(start.Add(time.Duration(i)*every/time.Duration(len(batch))))) ||
				!writers.run(ctx, func() { t.persist(ctx, rec) }) {
				break
			}
		}
		writers.wait()
	}
}

// persistWriters bounds the persist writes in flight at once: one at a time, a
// write that takes 3 ms (a replicated bucket) would cap an instance at ~330 a second,
// the steady state of 100,000 idle sessions, with no room to catch up.
const persistWriters = 8

// persist writes the activity of rec's session if it is still a persist interval
// newer than the stored one.
func (t *tracker) persist(ctx context.Context, rec *sessions.Record) {
	_, _, err := t.s.modify(ctx, rec.ID, rec, nil, "", func(r *sessions.Record) (bool, error) {
		return t.lastActivity(r.ID).Sub(r.LastActivity) >= t.s.cfg.PersistInterval, nil
	})
	if err != nil && ctx.Err() == nil && !errors.Is(err, wire.ErrSessionClosed) && !errors.Is(err, wire.ErrSessionNotFound) {
		t.s.log.Warn("persisting activity", "session_id", rec.ID, "err", err)
	}
}

// persistBatch returns the records of stale to write in one round of the persist
// loop, which runs every every: the longest unwritten first, and no more than spread
// evenly over half the persist interval would take for all live sessions. The loop
// paces a round's writes over the round. Idle sessions then cost live/interval
// writes per second on average and never much more than twice that in any second;
// a record's stored activity is at most 1.5 intervals old (plus a round), well
// within the activity stream's two intervals, which a starting registry replays.
func persistBatch(stale []*sessions.Record, live int, every, interval time.Duration) []*sessions.Record {
	half := max(interval/2, every)
	budget := max(int(math.Ceil(float64(live)*float64(every)/float64(half))), 1)
	if len(stale) <= budget {
		return stale
	}
	slices.SortFunc(stale, func(a, b *sessions.Record) int { return a.LastActivity.Compare(b.LastActivity) })
	return stale[:budget]
}

// expiryLoop closes sessions when their deadline passes.
func (t *tracker) expiryLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	workers := newBounded(expiryWorkers)
	defer workers.wait()
	for {
		t.mu.Lock()
		wait := time.Hour
		if len(t.heap) > 0 {
			wait = time.Until(t.heap[0].at)
		}
		t.mu.Unlock()
		timer.Reset(max(wait, 0))
		select {
		case <-ctx.Done():
			return
		case <-t.wake:
			if !timer.Stop() {
				<-timer.C
			}
			continue
		case <-timer.C:
		}
		now := t.s.cfg.Now()
		var due []string
		t.mu.Lock()
		for len(t.heap) > 0 && !t.heap[0].at.After(now) {
			d := heap.Pop(&t.heap).(deadline)
			e := t.sessions[d.id]
			if e == nil || e.rec.Closed() || !e.due.Equal(d.at) {
				continue // stale: closed, or a later push superseded it
			}
			e.due = time.Time{}
			at, _ := t.deadlineLocked(e.rec)
			if at.IsZero() {
				continue
			}
			if at.After(now) {
				e.due = at
				heap.Push(&t.heap, deadline{at: at, id: d.id})
				continue
			}
			due = append(due, d.id)
		}
		t.mu.Unlock()
		for _, id := range due {
			if !workers.run(ctx, func() { _ = t.expire(ctx, id) }) {
				return
			}
		}
	}
}

// cutOff and reconnected follow this instance's own connection (see blind).
func (t *tracker) cutOff() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.blind {
		t.blind, t.cutAt = true, t.s.cfg.Now()
	}
	t.cuts++
}

// catchUp is a pending read of the activity an instance missed while cut off.
type catchUp struct {
	from  time.Time // where the reading starts: a little before the first cut not caught up
	floor time.Time // resumedAt before that cut
}

// reconnected makes up for the activity the other instances broadcast while this one
// was cut off, which the activity stream keeps. Until the instance has read it, every
// session counts as active at the reconnect: nothing it missed is later, and what
// comes after arrives live, so no session closes early — and the instance expires
// again at once, rather than only once the stream answers. It used to expire nothing
// until then, and when the node leading the stream had died, its request went
// unanswered until the catch-up gave up after 10 s, and every session then counted
// as active at that moment: silent sessions closed 10 s + their timeout after the
// kill. Once the stream is read — retried in short attempts until it is — each
// session's own activity counts again, and those whose deadline has passed are closed
// at once.
func (t *tracker) reconnected() {
	t.mu.Lock()
	ctx := t.runCtx
	if ctx == nil {
		t.mu.Unlock()
		return
	}
	cuts := t.cuts
	t.catchUps.Add(1) // under t.mu while runCtx is set: never after run's Wait began
	t.mu.Unlock()
	go func() {
		defer t.catchUps.Done()
		// The subscriptions nats.go sent again on the reconnect are in place once a
		// flush returns: the activity published from then on arrives live.
		fctx, cancel := context.WithTimeout(ctx, jsRequestWait)
		_ = t.s.nc.FlushWithContext(fctx)
		cancel()
		t.mu.Lock()
		if t.cuts != cuts {
			t.mu.Unlock()
			return // cut off again meanwhile: the next reconnect catches up
		}
		if t.catchUp == nil {
			t.catchUp = &catchUp{from: t.cutAt.Add(-catchUpMargin), floor: t.resumedAt}
		}
		cu := t.catchUp
		if now := t.s.cfg.Now(); now.After(t.resumedAt) {
			t.resumedAt = now
		}
		t.blind = false
		// Advisories published while it was cut off never reached it.
		t.conns.relist()
		t.mu.Unlock()
		t.catchUpOn(ctx, cuts, cu)
	}()
}

// catchUpOn reads the activity missed since cu.from, in attempts retried until one
// succeeds, the instance is cut off again (the next reconnect goes on with cu) or ctx
// ends; then it restores cu.floor and reschedules every session.
func (t *tracker) catchUpOn(ctx context.Context, cuts int, cu *catchUp) {
	wait := 250 * time.Millisecond
	for attempt := 0; ; attempt++ {
		err := t.replay(ctx, cu.from)
		t.mu.Lock()
		if t.cuts != cuts || t.catchUp != cu {
			t.mu.Unlock()
			return
		}
		if err == nil {
			t.catchUp = nil
			t.resumedAt = cu.floor
			for id, e := range t.sessions {
				if !e.rec.Closed() {
					t.scheduleLocked(id, e)
				}
			}
			t.mu.Unlock()
			return
		}
		t.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		level := slog.LevelWarn
		if attempt > 0 {
			level = slog.LevelDebug // said once
		}
		t.s.log.Log(ctx, level, "catching up on activity after a reconnect; every session counts as active at the reconnect until it succeeds", "err", err, "retry_in", wait)
		if !sleepCtx(ctx, wait) {
			return
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// expire closes a session whose deadline passed, unless activity arrived meanwhile.
// Every instance may try at once: the compare-and-set lets one win, and only the
// winner publishes the CLOSED event. It returns the error of a close that was due
// and could not be written (it is retried 250 ms later); nil when the session is
// closed, gone, or not due.
func (t *tracker) expire(ctx context.Context, id string) error {
	t.mu.Lock()
	blind := t.blind
	t.mu.Unlock()
	if blind {
		t.mu.Lock()
		t.retryLocked(id, t.s.cfg.Now().Add(250*time.Millisecond))
		t.mu.Unlock()
		return nil
	}
	// Short attempts, retried soon: while the bucket has no leader (an election
	// after a node died) a write cannot succeed, and the close must land as soon as
	// a new leader is there rather than after a long request timeout.
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := t.s.closeIf(sctx, id, nil, nil, func(r *sessions.Record) (wire.CloseReason, bool) {
		t.mu.Lock()
		defer t.mu.Unlock()
		at, reason := t.deadlineLocked(r)
		if at.IsZero() || at.After(t.s.cfg.Now()) {
			if e := t.sessions[id]; e != nil {
				t.scheduleLocked(id, e)
			}
			return "", false
		}
		return reason, true
	})
	if err == nil || errors.Is(err, wire.ErrSessionClosed) || errors.Is(err, wire.ErrSessionNotFound) {
		return nil
	}
	if ctx.Err() != nil {
		return err
	}
	if sessions.IsNewerFormat(err) {
		// A newer version's record, while a rolling upgrade overlaps the versions:
		// its instances expire it, and this one learns of it from the bucket.
		t.s.log.Debug("leaving the expiry of a session to a newer version", "session_id", id)
		return nil
	}
	t.s.log.Warn("expiring session", "session_id", id, "err", err)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.retryLocked(id, t.s.cfg.Now().Add(250*time.Millisecond))
	return err
}

// disconnectAdvisory is the part of the server's client disconnect advisory the
// registry reads.
type disconnectAdvisory struct {
	Server struct {
		Name string `json:"name"`
	} `json:"server"`
	Client wire.RequestInfo `json:"client"`
}

func (t *tracker) consumeDisconnects(ctx context.Context, ch <-chan *nats.Msg) {
	workers := newBounded(disconnectWorkers)
	defer workers.wait()
	retry := time.NewTicker(disconnectRetryEvery)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-retry.C:
			for _, conn := range t.unsettled() {
				if !workers.run(ctx, func() { t.disconnected(ctx, conn, true) }) {
					return
				}
			}
		case msg := <-ch:
			var adv disconnectAdvisory
			if json.Unmarshal(msg.Data, &adv) != nil {
				continue
			}
			adv.Client.Server = adv.Server.Name
			conn := adv.Client.ConnectionKey()
			if !workers.run(ctx, func() { t.disconnected(ctx, conn, true) }) {
				return
			}
		}
	}
}

// disconnectRetryEvery is how often an instance goes over the connections it learned
// closed that ACTIVE sessions are still bound to.
const disconnectRetryEvery = 2 * time.Second

// unsettled returns the connections learned closed at least disconnectRetryEvery ago
// that ACTIVE sessions are still bound to: their move to RECOVERING failed (a write
// while the bucket had no leader, say), or the instance that bound them died first.
func (t *tracker) unsettled() []string {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for conn, at := range t.closedConns {
		if now.Sub(at) < disconnectRetryEvery {
			continue
		}
		for id := range t.byConn[conn] {
			if e := t.sessions[id]; e != nil && e.rec.State == wire.StateActive {
				out = append(out, conn)
				break
			}
		}
	}
	return out
}

// disconnectWorkers bounds the connections whose sessions are moved to RECOVERING at
// once: one at a time, the last of a few thousand connections dropped together (a
// server restart) would wait seconds for the writes of all the others.
const disconnectWorkers = 32

// disconnected moves the ACTIVE sessions bound to a closed connection to RECOVERING
// and publishes their DISCONNECTED events. closed says the connection is known
// closed (an advisory, a listing), not only taken for lost with its server: only
// those are remembered (closedConns), since a live connection of a server taken for
// gone may resume its sessions.
func (t *tracker) disconnected(ctx context.Context, conn string, closed bool) {
	if conn == "" {
		return
	}
	t.mu.Lock()
	// Noted in the same step as the sessions bound to it are taken: a session bound
	// later is found by bound, one whose write fails by unsettled. Only keys with the
	// connection's start time: a restarted server gives the same ids again.
	if bc, ok := parseConnKey(conn); closed && ok && bc.start != 0 {
		t.closedConns[conn] = time.Now()
	}
	var ids []string
	for id := range t.byConn[conn] {
		ids = append(ids, id)
	}
	t.mu.Unlock()
	for _, id := range ids {
		_, _, err := t.s.modify(ctx, id, nil, nil, wire.EventDisconnected, func(r *sessions.Record) (bool, error) {
			if r.State != wire.StateActive || r.Connection != conn {
				return false, nil
			}
			now := t.s.cfg.Now()
			r.State = wire.StateRecovering
			r.RecoveringSince = &now
			return true, nil
		})
		if err != nil {
			if !errors.Is(err, wire.ErrSessionClosed) && !errors.Is(err, wire.ErrSessionNotFound) {
				t.s.log.Warn("marking a session recovering", "session_id", id, "err", err)
			}
		}
	}
}

// bound is called after this instance wrote a session bound to conn (open, resume)
// and took the write into account: if it learned that conn closed before that, the
// session missed its advisory, and goes the way of one now.
func (t *tracker) bound(ctx context.Context, conn string) {
	t.mu.Lock()
	_, closed := t.closedConns[conn]
	t.mu.Unlock()
	if closed {
		t.disconnected(ctx, conn, true)
	}
}

// rangeRecords calls fn with every record the tracker holds, tombstones included.
func (t *tracker) rangeRecords(fn func(*sessions.Record)) {
	for _, r := range t.records() {
		fn(r)
	}
}

// records returns every record the tracker holds, tombstones included.
func (t *tracker) records() []*sessions.Record {
	t.mu.Lock()
	defer t.mu.Unlock()
	recs := make([]*sessions.Record, 0, len(t.sessions))
	for _, e := range t.sessions {
		recs = append(recs, e.rec)
	}
	return recs
}

// deadline is a heap entry.
type deadline struct {
	at time.Time
	id string
}

type deadlines []deadline

func (h deadlines) Len() int           { return len(h) }
func (h deadlines) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h deadlines) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *deadlines) Push(x any)        { *h = append(*h, x.(deadline)) }
func (h *deadlines) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// bounded runs functions on goroutines, at most n at once.
type bounded struct {
	sem chan struct{}
	wg  sync.WaitGroup
}

func newBounded(n int) *bounded { return &bounded{sem: make(chan struct{}, n)} }

// run waits for a free slot and runs fn on a goroutine of its own; it returns false,
// running nothing, when ctx ends first.
func (b *bounded) run(ctx context.Context, fn func()) bool {
	select {
	case b.sem <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	b.wg.Add(1)
	go func() {
		defer func() { <-b.sem; b.wg.Done() }()
		fn()
	}()
	return true
}

// wait waits for every function run to return.
func (b *bounded) wait() { b.wg.Wait() }

// sleepCtx sleeps for d (nothing when d is not positive); false when ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
