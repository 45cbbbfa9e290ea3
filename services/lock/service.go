package lock

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/version"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// Name identifies the service in $SRV.INFO; its version is the build's (pkg/version).
const (
	Name = "roster-lock"
	// Prefix is the subject prefix of the service's endpoints.
	Prefix = wire.LockPrefix
)

// tracerName is the instrumentation scope of the service's spans, pkg/endpoint's
// for a service named Name.
const tracerName = "github.com/seed-3c836eab/roster/" + Name

// Authorizer answers permission questions from the current policy (policy.Holder).
type Authorizer interface {
	Allowed(roles []string, perm policy.Permission, name string) bool
}

// policyFollower is what the service uses of a policy.Holder besides Allowed, when
// its Authorizer has it: whether a policy is held at all, and a signal of its next
// change, on which the waiting requests are checked again (policyLoop). An
// Authorizer without it (a fixed answer, in tests) never changes.
type policyFollower interface {
	Load() *policy.Policy
	Changed() <-chan struct{}
}

var _ policyFollower = (*policy.Holder)(nil)

// Sessions is what the lock service needs of the session registry: a live view of
// the sessions bucket (*sessions.View).
type Sessions interface {
	// Authenticate returns the caller's session record, or session_not_found,
	// session_closed or invalid_token.
	Authenticate(id, token string) (*sessions.Record, error)
	// Get returns a session's current record.
	Get(id string) (*sessions.Record, bool)
	// Absent reports whether the sessions bucket holds no record of the session (read
	// from the bucket, not the view).
	Absent(ctx context.Context, id string) (bool, error)
	// Subscribe calls fn for every record and every later change, quickly, until
	// cancel is called.
	Subscribe(fn func(sessions.Change)) (cancel func())
	// Touch records activity of a session.
	Touch(id string)
}

// Config configures the service. Zero fields take the defaults named.
type Config struct {
	// MaxConcurrent bounds the requests handled at once (0: the endpoint default).
	// A waiting acquire does not count: its request is held without a slot.
	MaxConcurrent int
	// DrainTimeout bounds how long Run waits, when it stops, for the requests in
	// flight and then for the writes already begun (10 s).
	DrainTimeout time.Duration
	// MaxWait bounds how long one acquire request is held (60 s); an acquire that
	// wants longer is answered timeout at MaxWait, keeps its place for Reattach,
	// and is re-issued by the client with the same request id. It must stay below
	// the response threshold of the CLIENTS→SERVICES import (2 minutes), after
	// which NATS drops the reply.
	MaxWait time.Duration
	// ExpiryGrace is how long after a waiter's deadline another instance removes it
	// when the instance that took the request has not (2 s).
	ExpiryGrace time.Duration
	// Reattach is how long a waiter whose request was answered at MaxWait keeps its
	// place in the queue for the client to re-issue the request (10 s).
	Reattach time.Duration
	// MaxWaiters bounds the waiting requests of one lock (2000), which bounds the
	// size of its record (about 250 bytes a waiter) below NATS's max payload.
	MaxWaiters int
	// MaxHolders bounds the shared holders of one lock (1000), which bounds the
	// rest of its record (about 200 bytes a holder): a shared request beyond it
	// waits, first come first served, as it would behind an exclusive holder.
	MaxHolders int
	// MaxLocksPerSession bounds the locks one session holds or has a waiting
	// request for (1000): an acquire of another lock is refused limit_exceeded,
	// while acquiring a lock the session holds, or waiting for one it waits for
	// already, is not counted again. An instance counts from its cache of the
	// bucket, which every instance's writes reach within milliseconds: acquires
	// made at the same moment through several instances can overshoot the bound by
	// those in flight. Without it, a session allowed to lock an open-ended pattern
	// of names grew the bucket and every instance's memory without end.
	MaxLocksPerSession int
	// MaxRecordBytes bounds the encoded record of one lock (default: the NATS
	// server's max payload less 8 KiB for the write's headers). The counts above
	// bound it only for requests of typical size: a waiter with the longest request
	// id, a connection scope and trace context takes about 500 bytes, so that 2,000
	// of them beside 1,000 shared holders would not fit one write. A request that
	// would grow the record past it is refused limit_exceeded, and the others of its
	// write go through.
	MaxRecordBytes int
	// StoreTimeout bounds one storage operation (5 s).
	StoreTimeout time.Duration
	// ListLimit is the default page size of list (100); MaxListLimit its maximum
	// (1000).
	ListLimit    int
	MaxListLimit int
	// Instance names this instance in the waiters it owns (default: a random id).
	Instance string
	// Now returns the time; nil means time.Now.
	Now func() time.Time
	// Replicas is the number of copies of the locks bucket (1; 3 on a production
	// cluster).
	Replicas int
	// MeterProvider records the service's metrics (nil: none): those of every
	// request (pkg/endpoint), locks held, requests waiting and hand-offs.
	MeterProvider metric.MeterProvider

	// beforeWrite, when set (tests only), is called before every compare-and-set
	// write of a batch with the service's context, which ends when Run has drained
	// the endpoint, and the write's own: a test holds a write in flight with it.
	beforeWrite func(stopping, write context.Context, name string)
	// goneTTL, when set (tests only), replaces GoneTTL: how long the purge marker
	// of a deleted record lives, and a deleted key stays in the cache.
	goneTTL time.Duration
}

// WithDefaults returns c with its zero fields set to their defaults, as New sets
// them.
func (c Config) WithDefaults() Config {
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(n *int, v int) {
		if *n <= 0 {
			*n = v
		}
	}
	def(&c.DrainTimeout, 10*time.Second)
	def(&c.MaxWait, time.Minute)
	def(&c.ExpiryGrace, 2*time.Second)
	def(&c.Reattach, 10*time.Second)
	def(&c.StoreTimeout, 5*time.Second)
	defInt(&c.MaxWaiters, 2000)
	defInt(&c.MaxHolders, 1000)
	defInt(&c.MaxLocksPerSession, 1000)
	defInt(&c.ListLimit, 100)
	defInt(&c.MaxListLimit, 1000)
	if c.Instance == "" {
		c.Instance = nuid.Next()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Service is one instance of the lock service. Any number of instances may run
// against the same NATS; requests are spread over them by a queue group, and any
// instance can serve any request: the state is in KV.
type Service struct {
	cfg  Config
	nc   *nats.Conn
	st   *store
	sess Sessions
	pol  Authorizer
	svc  *endpoint.Service
	log  *slog.Logger
	// tracer is the endpoints' tracer (endpoint.Service.Tracer), for the answers
	// the service's own goroutines send: they start before svc exists.
	tracer trace.Tracer

	// ctx ends when Run stops the service, once the endpoint has drained: the
	// loops end and no operation is taken any more. wg tracks every goroutine the
	// service started.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// writes is the context of the batches' writes. It outlives ctx: a batch taken
	// before the stop (a release or an expiry from the service's own loops, which
	// the endpoint's drain does not wait for) finishes its write and answers the
	// waiters it granted or removed before Run returns. Run ends it at the stop's
	// deadline (Config.DrainTimeout), giving up on writes that have not finished.
	writes      context.Context
	abortWrites context.CancelFunc

	qmu    sync.Mutex
	queues map[string][]*task // pending operations per lock name

	tmu       sync.Mutex
	timers    deadlineHeap
	scheduled map[string]int64 // earliest deadline in timers per lock name
	wake      chan struct{}

	smu     sync.Mutex
	suspect map[string]sessionState // sessions whose locks need checking
	unknown map[string]struct{}     // sessions with locks the view does not know
	// reroled are sessions whose roles changed, and repolicied is set when the
	// policy did: their waiting requests are checked against it again
	// (withdrawForbidden).
	reroled    map[string]struct{}
	repolicied bool
	swake      chan struct{}

	grants    atomic.Uint64
	conflicts atomic.Uint64
	overtaken atomic.Uint64
	runOnce   sync.Once
}

// New opens the locks bucket, loads it, and registers the service's endpoints on
// nc; the service answers requests as soon as New returns. Run blocks until the end.
func New(nc *nats.Conn, cfg Config, sess Sessions, pol Authorizer, tp trace.TracerProvider, log *slog.Logger) (*Service, error) {
	if nc == nil || sess == nil || pol == nil || tp == nil || log == nil {
		return nil, errors.New("lock: connection, sessions, authorizer, tracer provider and logger are required")
	}
	cfg.setDefaults()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("lock: jetstream: %w", err)
	}
	octx, ocancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ocancel()
	st, err := openStore(octx, js, cfg.Replicas)
	if err != nil {
		return nil, err
	}
	if cfg.MaxRecordBytes <= 0 {
		cfg.MaxRecordBytes = int(nc.MaxPayload()) - recordHeadroom
	}
	st.maxBytes = cfg.MaxRecordBytes
	if cfg.goneTTL > 0 {
		st.goneTTL = cfg.goneTTL
	}
	ctx, cancel := context.WithCancel(context.Background())
	writes, abortWrites := context.WithCancel(context.Background())
	s := &Service{
		cfg: cfg, nc: nc, st: st, sess: sess, pol: pol,
		log:    log.With("service", Name),
		tracer: tp.Tracer(tracerName),
		ctx:    ctx, cancel: cancel,
		writes: writes, abortWrites: abortWrites,
		queues:    map[string][]*task{},
		scheduled: map[string]int64{},
		wake:      make(chan struct{}, 1),
		suspect:   map[string]sessionState{},
		unknown:   map[string]struct{}{},
		reroled:   map[string]struct{}{},
		swake:     make(chan struct{}, 1),
	}
	fail := func(err error) (*Service, error) {
		cancel()
		abortWrites()
		s.wg.Wait()
		return nil, err
	}
	st.changed = s.lockChanged
	if err := st.watch(ctx, &s.wg, s.log); err != nil {
		return fail(err)
	}
	s.wg.Add(2)
	go s.expireLoop()
	go s.sessionLoop()
	if f, ok := pol.(policyFollower); ok {
		s.wg.Add(1)
		go s.policyLoop(f)
	}
	unsubscribe := sess.Subscribe(s.sessionChanged)
	context.AfterFunc(ctx, unsubscribe)

	svc, err := endpoint.New(nc, endpoint.Config{
		Name:          Name,
		Version:       version.Version,
		Description:   "Named session locks, exclusive or shared, with fair waiting, scopes and fencing tokens",
		Prefix:        Prefix,
		MaxConcurrent: cfg.MaxConcurrent,
		MeterProvider: cfg.MeterProvider,
	}, tp, log)
	if err != nil {
		return fail(err)
	}
	s.svc = svc
	reg, err := s.registerMetrics(cfg.MeterProvider)
	if err != nil {
		_ = svc.Stop(context.Background())
		return fail(fmt.Errorf("lock: metrics: %w", err))
	}
	context.AfterFunc(ctx, func() { _ = reg.Unregister() })
	if err := s.register(); err != nil {
		_ = svc.Stop(context.Background())
		return fail(err)
	}
	if err := nc.Flush(); err != nil {
		_ = svc.Stop(context.Background())
		return fail(err)
	}
	return s, nil
}

// Run blocks until ctx ends, then stops taking requests, waits for those in
// flight and for the writes already begun (a release or an expiry of the
// service's own, and the answers to the waiters they grant or remove), and stops
// every goroutine the service started; Config.DrainTimeout bounds the whole stop
// (or the deadline ctx's cause gives, endpoint.StopBy, when that comes first),
// after which unfinished writes are given up. Waiting requests stay in KV: another
// instance grants or expires them. Run may be called once.
func (s *Service) Run(ctx context.Context) error {
	err := errors.New("lock: Run called twice")
	s.runOnce.Do(func() {
		<-ctx.Done()
		stopCtx, cancel := endpoint.StopContext(ctx, s.cfg.DrainTimeout)
		defer cancel()
		err = s.svc.Stop(stopCtx)
		s.cancel()
		stop := context.AfterFunc(stopCtx, s.abortWrites)
		s.wg.Wait()
		stop()
		s.abortWrites()
	})
	return err
}

func (s *Service) nowMS() int64 { return s.cfg.Now().UnixMilli() }

func (s *Service) expiry() expiry {
	return expiry{instance: s.cfg.Instance, grace: s.cfg.ExpiryGrace.Milliseconds(), reattach: s.cfg.Reattach.Milliseconds()}
}

// Stats are counters of one instance, for benchmarks and tests.
type Stats struct {
	// Grants counts waiters this instance granted and answered.
	Grants uint64
	// Conflicts counts compare-and-set writes that lost to a concurrent one.
	Conflicts uint64
	// Overtaken counts requests not applied because their session had acted on
	// the lock since they arrived, or re-issued them (late copies of a waiting
	// request: record.lateCopy), answered unavailable.
	Overtaken uint64
}

// Stats returns the instance's counters.
func (s *Service) Stats() Stats {
	return Stats{Grants: s.grants.Load(), Conflicts: s.conflicts.Load(), Overtaken: s.overtaken.Load()}
}

// lockChanged runs for every revision of a lock new to the cache (from the watch,
// a read or a write): it schedules the lock's next waiter deadline and checks that
// its holders' and waiters' sessions may still hold and wait.
func (s *Service) lockChanged(_ string, e entry) {
	if e.rec == nil {
		return
	}
	s.scheduleLock(e.rec)
	check := func(id string, scope wire.LockScope, conn string, rev uint64) {
		st, known := s.sessionState(id)
		switch {
		case !known:
			s.markUnknown(id)
		case lostIn(st, scope, conn, rev):
			s.markSuspect(id, st)
		}
	}
	for _, h := range e.rec.Holders {
		check(h.Session, h.Scope, h.Conn, h.SessionRev)
	}
	for _, w := range e.rec.Waiters {
		check(w.Session, w.Scope, w.Conn, w.SessionRev)
	}
}

// --- waiter deadlines -------------------------------------------------------

type deadline struct {
	at   int64 // Unix milliseconds
	name string
}

type deadlineHeap []deadline

func (h deadlineHeap) Len() int           { return len(h) }
func (h deadlineHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h deadlineHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *deadlineHeap) Push(x any)        { *h = append(*h, x.(deadline)) }
func (h *deadlineHeap) Pop() any {
	old := *h
	d := old[len(old)-1]
	*h = old[:len(old)-1]
	return d
}

// scheduleLock arranges for the expiry of rec's next waiter deadline, unless an
// earlier one is already due for the lock.
func (s *Service) scheduleLock(rec *record) {
	at := rec.nextDeadline(s.expiry())
	if at == 0 {
		return
	}
	s.tmu.Lock()
	if cur, ok := s.scheduled[rec.Name]; ok && cur <= at {
		s.tmu.Unlock()
		return
	}
	s.scheduled[rec.Name] = at
	first := s.timers.Len() == 0 || at < s.timers[0].at
	heap.Push(&s.timers, deadline{at: at, name: rec.Name})
	s.tmu.Unlock()
	if first {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// expireLoop removes waiters whose deadline passed and answers them timeout.
func (s *Service) expireLoop() {
	defer s.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		now := s.nowMS()
		var due []string
		wait := time.Hour
		s.tmu.Lock()
		for s.timers.Len() > 0 && s.timers[0].at <= now {
			d := heap.Pop(&s.timers).(deadline)
			if s.scheduled[d.name] == d.at {
				delete(s.scheduled, d.name)
				due = append(due, d.name)
			}
		}
		if s.timers.Len() > 0 {
			wait = time.Duration(s.timers[0].at-now) * time.Millisecond
		}
		s.tmu.Unlock()
		for _, name := range due {
			e, _ := s.st.cached(KeyFor(name))
			if e.rec == nil {
				continue
			}
			if next := e.rec.nextDeadline(s.expiry()); next > now {
				s.scheduleLock(e.rec) // the waiter due went away or moved its deadline
				continue
			}
			s.submit(name, newTask(false, func(r *record, now int64, o *outcome) {
				r.expire(s.expiry(), now, o)
			}), false)
		}
		t.Reset(wait)
		select {
		case <-t.C:
		case <-s.wake:
		case <-s.ctx.Done():
			return
		}
	}
}

// --- session loss -----------------------------------------------------------

// fine reports whether a session in state st keeps everything it holds.
func (st sessionState) fine() bool { return !st.closed && st.connected }

func stateOf(r *sessions.Record) sessionState {
	if r == nil {
		return sessionState{closed: true}
	}
	if r.Closed() {
		return sessionState{closed: true, cause: r.ChangeTrace()}
	}
	return sessionState{connected: r.State == wire.StateActive, conn: r.Connection, rev: r.Revision, cause: r.ChangeTrace()}
}

// sessionState returns what the view knows of a session; known is false when the
// view does not have it (yet).
func (s *Service) sessionState(id string) (st sessionState, known bool) {
	r, ok := s.sess.Get(id)
	if !ok {
		return sessionState{}, false
	}
	return stateOf(r), true
}

// sessionChanged runs on the view's goroutine: it must be quick.
func (s *Service) sessionChanged(ch sessions.Change) {
	if ch.Prev != nil && ch.Record != nil && !ch.Record.Closed() && !slices.Equal(ch.Prev.Roles, ch.Record.Roles) {
		// A change of principal: its waiting requests may have lost ACQUIRE_LOCK.
		s.markReroled(ch.ID)
	}
	st := stateOf(ch.Record)
	if ch.Record != nil && st.fine() && (ch.Prev == nil || ch.Prev.Connection == ch.Record.Connection) {
		return
	}
	s.markSuspect(ch.ID, st)
}

// markUnknown notes a session that holds or waits for a lock and that the view does
// not know: opened a moment ago, or gone from the bucket — its tombstone's retention
// ended, or its record's KV TTL fired, while no lock instance ran — in which case
// nothing else would ever release what it holds. sessionLoop reads the bucket.
func (s *Service) markUnknown(id string) {
	s.smu.Lock()
	s.unknown[id] = struct{}{}
	s.smu.Unlock()
	select {
	case s.swake <- struct{}{}:
	default:
	}
}

// goneSessions returns, as closed, the sessions of unknown the view still does not
// know and whose record the bucket no longer holds.
func (s *Service) goneSessions(unknown map[string]struct{}) map[string]sessionState {
	gone := map[string]sessionState{}
	for id := range unknown {
		if _, known := s.sessionState(id); known {
			continue
		}
		ctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
		g, err := s.sess.Absent(ctx, id)
		cancel()
		switch {
		case err != nil && s.ctx.Err() == nil:
			s.log.Debug("lock: reading an unknown session", "session_id", id, "err", err) // the recheck tries again
		case g:
			gone[id] = sessionState{closed: true}
		}
	}
	return gone
}

// markReroled notes a session whose roles changed, for sessionLoop to check its
// waiting requests against the policy again.
func (s *Service) markReroled(id string) {
	s.smu.Lock()
	s.reroled[id] = struct{}{}
	s.smu.Unlock()
	s.wakeSessionLoop()
}

// markRepolicied notes that every waiting request needs checking against the
// policy again (it changed, or the periodic recheck is due).
func (s *Service) markRepolicied() {
	s.smu.Lock()
	s.repolicied = true
	s.smu.Unlock()
	s.wakeSessionLoop()
}

func (s *Service) wakeSessionLoop() {
	select {
	case s.swake <- struct{}{}:
	default:
	}
}

func (s *Service) markSuspect(id string, st sessionState) {
	s.smu.Lock()
	s.suspect[id] = st
	s.smu.Unlock()
	select {
	case s.swake <- struct{}{}:
	default:
	}
}

// recheckEvery is how often an instance goes over every lock it knows again, as if
// each had just changed (lockChanged). The release of a lost session's locks and the
// expiry of a waiter are written once, when the event is seen; when that write fails
// (storage unavailable: a stream leader election, say) on every instance, nothing
// else would bring the lock up again, and it would stay held, or its waiter queued,
// until some other change of the record.
const recheckEvery = 5 * time.Second

// sessionLoop releases the locks and waiting requests of sessions that closed or
// lost their connection. Every instance does it; compare-and-set makes it happen
// once, and a session seen twice finds nothing left to release.
func (s *Service) sessionLoop() {
	defer s.wg.Done()
	recheck := time.NewTicker(recheckEvery)
	defer recheck.Stop()
	for {
		select {
		case <-s.swake:
		case <-recheck.C:
			for key, e := range s.st.snapshot() {
				s.lockChanged(key, e) // marks suspects: handled on the next turn
			}
			// A withdrawal written once, when the change was seen, may have failed
			// (storage unavailable), or a waiter may have been stored since by an
			// instance that had not seen the change yet.
			s.markRepolicied()
			continue
		case <-s.ctx.Done():
			return
		}
		s.smu.Lock()
		suspect, unknown, reroled, repolicied := s.suspect, s.unknown, s.reroled, s.repolicied
		s.suspect, s.unknown, s.reroled, s.repolicied = map[string]sessionState{}, map[string]struct{}{}, map[string]struct{}{}, false
		s.smu.Unlock()
		maps.Copy(suspect, s.goneSessions(unknown))
		recheck := func(id string) bool {
			_, ok := reroled[id]
			return ok || repolicied
		}
		for _, e := range s.st.snapshot() {
			for _, id := range e.rec.sessions() {
				if st, ok := suspect[id]; ok {
					s.dropSession(e.rec, id, st)
				}
			}
			if repolicied || len(reroled) > 0 {
				s.withdrawForbidden(e.rec, recheck)
			}
		}
	}
}

// policyLoop checks every waiting request against the policy again whenever it
// changes.
func (s *Service) policyLoop(f policyFollower) {
	defer s.wg.Done()
	changed := f.Changed()
	for {
		select {
		case <-changed:
			// The next change's channel is taken before the check is asked for: a
			// change made before the check reads the policy is seen by it, and one
			// after closes this channel.
			changed = f.Changed()
			s.markRepolicied()
		case <-s.ctx.Done():
			return
		}
	}
}

// mayAcquire returns the check, for record.allowed, of whether a session may acquire
// lock name now: the current policy grants ACQUIRE_LOCK on the name to the roles the
// instance's session view has for the session. A session the view does not know
// (opened a moment ago) or holds closed is not judged here: it was checked when its
// request arrived, and a closed one's waiters are answered session_closed
// (dropSession). It returns nil, withdrawing nothing, while the instance holds no
// policy at all (none stored yet, or, starting, one it cannot apply): such an
// instance refuses every new request, and withdrawing on that account would empty
// every queue of a running deployment because of one instance.
func (s *Service) mayAcquire(name string) func(session string) bool {
	if f, ok := s.pol.(policyFollower); ok && f.Load() == nil {
		return nil
	}
	return func(id string) bool {
		r, ok := s.sess.Get(id)
		if !ok || r.Closed() {
			return true
		}
		return s.pol.Allowed(r.Roles, policy.AcquireLock, name)
	}
}

// withdrawForbidden submits the withdrawal of rec's waiting requests whose sessions
// may no longer acquire it (record.withdrawForbidden), when one of those recheck
// selects is found. The write checks again, with the policy and roles of then, and
// answers them forbidden; every instance does this, and the compare-and-set makes
// it happen once.
func (s *Service) withdrawForbidden(rec *record, recheck func(session string) bool) {
	allowed := s.mayAcquire(rec.Name)
	if allowed == nil || !slices.ContainsFunc(rec.Waiters, func(w waiter) bool { return recheck(w.Session) && !allowed(w.Session) }) {
		return
	}
	s.submit(rec.Name, newTask(false, func(r *record, now int64, o *outcome) {
		r.withdrawForbidden(now, o)
	}), false)
}

// dropSession submits the release of what session id may no longer hold on the
// lock rec, unless nothing would change. The state is looked up again when the
// change is applied; st is used when the view no longer has the session.
func (s *Service) dropSession(rec *record, id string, st sessionState) {
	probe := rec.clone()
	o := &outcome{}
	probe.dropSession(id, st, s.nowMS(), o)
	if !o.changed {
		return
	}
	rx := &reaction{session: id, closed: st.closed, cause: st.cause, start: time.Now()}
	t := newTask(false, func(r *record, now int64, o *outcome) {
		cur := st
		if known, ok := s.sessionState(id); ok {
			cur = known
		}
		holds, waits := r.of(id)
		granted := len(o.granted)
		r.dropSession(id, cur, now, o)
		// What this run did (the last run is the one written).
		h, w := r.of(id)
		rx.released, rx.withdrawn, rx.granted = holds-h, waits-w, len(o.granted)-granted
	})
	t.react = rx
	s.submit(rec.Name, t, false)
}
