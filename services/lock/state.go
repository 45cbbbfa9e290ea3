package lock

import (
	"errors"
	"slices"
	"time"

	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// The lock state machine: pure functions over one lock's record. The store applies
// them to the record it read and writes the result with a compare-and-set; nothing
// here does I/O or reads the clock.

// Domain errors of the state machine; handlers map them to wire codes.
var (
	// ErrNotHeld: the session does not hold the lock (or not with that token).
	ErrNotHeld = errors.New("lock: not held")
	// ErrWouldBlock: a try-once acquire found the lock taken or others waiting.
	ErrWouldBlock = errors.New("lock: would block")
	// ErrUpgrade: a session holding a shared lock asked for it exclusively.
	ErrUpgrade = errors.New("lock: held shared; release before acquiring exclusive")
	// ErrNoWaiter: no waiting request has that id for that session.
	ErrNoWaiter = errors.New("lock: no such waiting request")
	// ErrTooManyWaiters: the lock's queue is full.
	ErrTooManyWaiters = errors.New("lock: too many waiters")
	// ErrTooManyOwnWaiters: the session already has waitersApiece requests waiting
	// for the lock.
	ErrTooManyOwnWaiters = errors.New("lock: too many waiting requests of the session")
	// ErrCompleted: the request id was answered for good before (granted and
	// released, or refused): this is a late duplicate and changes nothing.
	ErrCompleted = errors.New("lock: request already completed")
	// ErrOvertaken: the session acted on the lock after the request arrived, before
	// the request could be applied (see record.actedSince), or re-issued it (a copy
	// waits with a reply subject set since: record.lateCopy); it is not applied.
	ErrOvertaken = errors.New("lock: the session acted on the lock after the request arrived")
)

// Late duplicates. A client that does not learn the outcome of an acquire (its
// instance died, a node was paused) re-issues it with the same request id; the
// first copy may still be on its way and arrive after the client has moved on —
// after the lock was granted and released, say. Applied then, it would grant the
// session a lock it does not know it holds. So a record remembers, for
// doneRetention, the request ids it has answered for good, and refuses late copies.
//
// Those are a session's last few ids only, and a copy can come later than that
// from the service itself. An instance applies a request to the record it has
// and writes the result with a compare-and-set; a write that conflicts is applied
// again to the record read anew, until it lands or the write's time is up (5 s),
// well past the caller's deadline when storage stalls. By then the caller may
// have re-issued the request through another instance, had it settled, and gone
// on to more requests on the lock, which pushed its id out: applied again then,
// a stalled acquire granted the lock to a session that had been told otherwise,
// and a stalled release (token 0) released a hold taken since. So a request is
// not applied to a record showing that its session acted on the lock after the
// request arrived (record.actedSince); it is answered unavailable instead, and
// its caller, if still there, re-issues it. A copy that reaches the service
// itself that late (a message held up in transit past the caller's deadline, and
// by the session's next few requests) is beyond both guards.
const (
	doneRetention = 2 * 60 * 1000 // milliseconds: longer than any client's retries
	// A late copy comes from a session that has moved on by a few requests at
	// most: each session's last doneApiece ids are kept, and maxDone in all.
	doneApiece = 4
	maxDone    = 256
)

// waitersApiece bounds the requests of one session waiting for one lock. Whichever
// is granted first makes the session a holder, and the others are then granted the
// equal lock at once, so a session gains nothing from more than a few; without a
// bound, one session could fill the queue (MaxWaiters) and every other session
// asking to wait got limit_exceeded.
const waitersApiece = 16

// done is a request answered for good.
type done struct {
	ID      string `json:"id"`
	Session string `json:"session"`
	At      int64  `json:"at"` // Unix milliseconds
}

// holder is one holder as stored.
type holder struct {
	Session string         `json:"session"`
	Mode    wire.LockMode  `json:"mode"`
	Scope   wire.LockScope `json:"scope"`
	// Conn is the connection the session was bound to when the lock was granted;
	// a connection-scoped lock is released when the session leaves it.
	Conn string `json:"conn,omitempty"`
	// SessionRev is the revision of the session's record (sessions bucket) Conn was
	// read from, as the granting instance's view held it: an instance whose view
	// holds an older record of the session lags, and does not take the connection
	// it holds for a loss (lostIn). 0 in records written before it was kept.
	SessionRev uint64 `json:"session_rev,omitempty"`
	// Token is the fencing token. Zero means "granted by the write that stored this
	// version": its revision is the token, filled in when the record is read.
	Token     uint64 `json:"token,omitempty"`
	GrantedAt int64  `json:"granted_at"` // Unix milliseconds
	// Request is the id of the acquire that granted the hold, and Also those of
	// the session's later acquires answered with it (an equal lock): cancelling one
	// of these ids withdraws that answer, and the last one withdrawn releases the
	// hold — a caller that gave up never takes the hold from another that did not.
	Request string   `json:"request,omitempty"`
	Also    []string `json:"also,omitempty"`
}

// maxAlso bounds the ids a hold remembers besides the one that granted it.
const maxAlso = 8

// answers reports whether request id was answered with this hold.
func (h *holder) answers(id string) bool {
	return id != "" && (h.Request == id || slices.Contains(h.Also, id))
}

// withdraw forgets that request id was answered with this hold, and reports whether
// no request is left that was.
func (h *holder) withdraw(id string) (none bool) {
	if h.Request == id {
		h.Request = ""
	}
	h.Also = slices.DeleteFunc(h.Also, func(a string) bool { return a == id })
	if len(h.Also) == 0 {
		h.Also = nil
	}
	return h.Request == "" && len(h.Also) == 0
}

// waiter is one waiting acquire as stored, in FIFO order.
type waiter struct {
	ID      string         `json:"id"`
	Session string         `json:"session"`
	Mode    wire.LockMode  `json:"mode"`
	Scope   wire.LockScope `json:"scope"`
	// Conn is the connection the session was bound to when the request was
	// taken, and SessionRev the revision of the session's record it was read from
	// (holder.SessionRev).
	Conn       string `json:"conn,omitempty"`
	SessionRev uint64 `json:"session_rev,omitempty"`
	// Reply is the subject the held request is answered on. Any instance may
	// answer it, so a waiter outlives the instance that took the request. It is
	// empty while the waiter is detached: its request was answered at the server's
	// bound on one request and the client has yet to re-issue it.
	Reply string `json:"reply,omitempty"`
	// Owner is the instance that took the request; it expires the waiter at its
	// deadline, and other instances do so a grace period later.
	Owner      string `json:"owner"`
	EnqueuedAt int64  `json:"enqueued_at"` // Unix milliseconds
	// ReissuedAt is when the request that last took the waiter over arrived (Unix
	// milliseconds, by the clock of the instance that took it), which set Reply: 0
	// until one did, and when an older version wrote the record, which does not
	// keep it. EnqueuedAt stands for it then (see replySetAt, lateCopy).
	ReissuedAt int64 `json:"reissued_at,omitempty"`
	// Deadline is when the held request is answered (the caller's wait or the
	// server's bound on one request, whichever is first) or, for a detached
	// waiter, when it is dropped unless re-issued.
	Deadline int64 `json:"deadline"`
	// Until is the end of the caller's wait; 0 waits until cancelled.
	Until int64 `json:"until,omitempty"`
	// Trace is the W3C traceparent of the acquire's server span: the answer, sent
	// later and by any instance, is a span of the caller's trace. Only traceparent:
	// tracestate and baggage would grow every record a waiter is in.
	Trace string `json:"trace,omitempty"`
}

// record is one lock as stored under its key: holders, then waiters in FIFO order,
// and the request ids lately answered (done). A lock with neither holders nor
// waiters is deleted once its remembered ids have expired (doneRetention).
type record struct {
	// Format is the format the record was written in (0 before it was kept: 1);
	// see recordFormat.
	Format  int      `json:"format,omitempty"`
	Name    string   `json:"name"`
	Holders []holder `json:"holders,omitempty"`
	Waiters []waiter `json:"waiters,omitempty"`
	// Done are the request ids answered for good in the last doneRetention.
	Done []done `json:"done,omitempty"`

	// maxHolders, when positive, bounds the shared holders (Config.MaxHolders): a
	// shared request beyond it waits, as it would behind an exclusive holder.
	maxHolders int
	// allowed, when set, reports whether a session may acquire the lock now (the
	// policy grants ACQUIRE_LOCK on its name to the session's roles, as the
	// instance has them: Service.mayAcquire); nil allows every session. A waiter
	// whose session may not is withdrawn, answered forbidden, and never granted
	// (promote, withdrawForbidden). Not stored: the writing instance sets it.
	allowed func(session string) bool
	// prior is the record as read, before the operations of the write being
	// built (nil when none was read): what actedSince examines.
	prior *record
}

func (r *record) clone() *record {
	c := &record{Format: r.Format, Name: r.Name, Holders: slices.Clone(r.Holders), Waiters: slices.Clone(r.Waiters), Done: slices.Clone(r.Done), maxHolders: r.maxHolders, allowed: r.allowed, prior: r.prior}
	// A hold's Also is changed in place (withdraw, grant): the clone needs its own.
	for i := range c.Holders {
		c.Holders[i].Also = slices.Clone(c.Holders[i].Also)
	}
	return c
}

// empty reports whether the record can be deleted: nobody holds or waits, and no
// answered request id is still remembered.
func (r *record) empty() bool { return len(r.Holders) == 0 && len(r.Waiters) == 0 && len(r.Done) == 0 }

// free reports whether nobody holds or waits for the lock.
func (r *record) free() bool { return len(r.Holders) == 0 && len(r.Waiters) == 0 }

// remember records that request id of session was answered for good, and forgets
// the ids older than doneRetention.
func (r *record) remember(id, session string, now int64, o *outcome) {
	r.forget(now, o)
	if id == "" {
		return
	}
	mine := 0
	for _, d := range r.Done {
		if d.Session == session {
			mine++
		}
	}
	if mine >= doneApiece {
		i := slices.IndexFunc(r.Done, func(d done) bool { return d.Session == session })
		r.Done = slices.Delete(r.Done, i, i+1)
	}
	r.Done = append(r.Done, done{ID: id, Session: session, At: now})
	if len(r.Done) > maxDone {
		r.Done = slices.Delete(r.Done, 0, len(r.Done)-maxDone)
	}
	o.changed = true
}

// forget drops the remembered ids older than doneRetention.
func (r *record) forget(now int64, o *outcome) {
	n := len(r.Done)
	r.Done = slices.DeleteFunc(r.Done, func(d done) bool { return now-d.At > doneRetention })
	if len(r.Done) != n {
		o.changed = true
	}
	if len(r.Done) == 0 {
		r.Done = nil
	}
}

// rememberHold records that every request answered with h was answered for good:
// the one that granted it and those answered with it as an equal lock.
func (r *record) rememberHold(h holder, now int64, o *outcome) {
	r.remember(h.Request, h.Session, now, o)
	for _, id := range h.Also {
		r.remember(id, h.Session, now, o)
	}
}

// arrival is when a request arrived, by the clock of the instance that took it,
// and the record of its lock that instance had then (nil when it had none).
type arrival struct {
	at   int64
	seen *record
}

// actedSince reports whether the record as read (prior) shows that session acted
// on the lock after the request id arrived (a): a request of the session answered,
// a hold granted or a request queued, other than id's own, that the record the
// instance had at the arrival does not show, at a time after the arrival.
//
// Times come from the clocks of the instances that wrote them. Judged by time
// alone, an act the session made through an instance whose clock runs ahead looked
// later than its next request, sent on the act's answer: refused, a TryLock after an
// Unlock failed whenever that lead exceeded the client's round trip. An act the
// instance knew of when the request arrived came before it, whatever its time; one
// it did not know of yet (its view of the bucket lags by milliseconds) is judged by
// time. A lagging clock can make an act look older than it is, by its lag.
//
// The end of a hold or wait that the record at the arrival showed and the
// session's state then (st) shows lost is no act of the session either: another
// instance, reacting to the session's resume on another connection, released it
// and remembered its request at its own time, after the arrival, while the
// request, applied, releases it itself first (dropSession). Counted, it refused a
// TryLock made just after a resume.
func (r *record) actedSince(session, id string, st sessionState, a arrival) bool {
	p := r.prior
	if p == nil {
		return false
	}
	for _, d := range p.Done {
		if d.Session == session && d.ID != id && d.At > a.at && !a.seen.completed(d.ID, session) && !a.seen.lostBy(d.ID, session, st) {
			return true
		}
	}
	for _, h := range p.Holders {
		if h.Session == session && !h.answers(id) && h.GrantedAt > a.at && !a.seen.holds(session, h.Token) {
			return true
		}
	}
	for _, w := range p.Waiters {
		if w.Session == session && w.ID != id && w.EnqueuedAt > a.at && a.seen.waiterIndex(w.ID, session) < 0 {
			return true
		}
	}
	return false
}

// lostBy reports whether request id of session holds or waits for the lock in r
// (which may be nil) in a way st shows lost (lostIn): what dropSession ends.
func (r *record) lostBy(id, session string, st sessionState) bool {
	if r == nil {
		return false
	}
	for _, h := range r.Holders {
		if h.Session == session && h.answers(id) {
			return lostIn(st, h.Scope, h.Conn, h.SessionRev)
		}
	}
	if i := r.waiterIndex(id, session); i >= 0 {
		w := r.Waiters[i]
		return lostIn(st, w.Scope, w.Conn, w.SessionRev)
	}
	return false
}

// holds reports whether session holds the lock with token (r may be nil).
func (r *record) holds(session string, token uint64) bool {
	if r == nil {
		return false
	}
	i, ok := r.holder(session)
	return ok && r.Holders[i].Token == token
}

// completed reports whether request id of session was answered for good.
func (r *record) completed(id, session string) bool {
	if r == nil {
		return false
	}
	return slices.ContainsFunc(r.Done, func(d done) bool { return d.ID == id && d.Session == session })
}

// materialize fills the tokens of the holders granted by the write at rev.
func (r *record) materialize(rev uint64) {
	for i := range r.Holders {
		if r.Holders[i].Token == 0 {
			r.Holders[i].Token = rev
		}
	}
}

func (r *record) holder(session string) (int, bool) {
	for i := range r.Holders {
		if r.Holders[i].Session == session {
			return i, true
		}
	}
	return -1, false
}

func (r *record) waiterIndex(id, session string) int {
	if r == nil {
		return -1
	}
	for i := range r.Waiters {
		if r.Waiters[i].ID == id && r.Waiters[i].Session == session {
			return i
		}
	}
	return -1
}

// waiting counts the requests of session in the queue.
func (r *record) waiting(session string) int {
	n := 0
	for i := range r.Waiters {
		if r.Waiters[i].Session == session {
			n++
		}
	}
	return n
}

// compatible reports whether a request in mode m can be granted beside the holders.
func (r *record) compatible(m wire.LockMode) bool {
	if len(r.Holders) == 0 {
		return true
	}
	return m == wire.LockShared && r.Holders[0].Mode == wire.LockShared &&
		(r.maxHolders <= 0 || len(r.Holders) < r.maxHolders)
}

// outcome is what applying operations to a record did: which waiters left the
// queue and how they must be answered once the write has succeeded.
type outcome struct {
	changed bool
	// granted are waiters that now hold the lock (or found their session already
	// holding it); their replies carry the lock.
	granted []grantee
	// removed are waiters that left the queue without the lock, with the error
	// their replies carry.
	removed []removal
	// overtaken counts the requests not applied as overtaken (ErrOvertaken).
	overtaken int
}

// grantee is a waiter granted by the operations applied so far.
type grantee struct {
	waiter
	// released is the hold the waiter was granted when its session released it
	// later in the same write: the reply carries that hold, granted and gone.
	released *holder
	// direct marks a request granted at once: its own handler answers it, from the
	// outcome (outcome.direct), not the write's finish.
	direct bool
}

type removal struct {
	w      waiter
	err    error
	direct bool // see grantee.direct
}

// direct returns what became of request id of session, granted at once in this
// write: the hold its session released later in the write (nil if none), or the
// error an operation that took its hold away answers it; ok is false when the
// request is not among the write's direct grants. Request ids are the session's
// own: another session's request of the same id in the write is another request.
func (o *outcome) direct(id, session string) (released *holder, err error, ok bool) {
	for _, g := range o.granted {
		if g.direct && g.ID == id && g.Session == session {
			return g.released, nil, true
		}
	}
	for _, rm := range o.removed {
		if rm.direct && rm.w.ID == id && rm.w.Session == session {
			return nil, rm.err, true
		}
	}
	return nil, nil, false
}

// ungrant answers err, instead of the lock, to the waiters granted so far that
// match: an operation later in the same write took their hold away (a cancel, the
// session's loss). Left among the granted, they were answered only if their session
// held the lock after the write — or, holding it again through a later grant, with
// a hold they were not given.
func (o *outcome) ungrant(match func(w waiter) bool, err error) {
	o.granted = slices.DeleteFunc(o.granted, func(g grantee) bool {
		if g.released != nil || !match(g.waiter) {
			return false
		}
		o.removed = append(o.removed, removal{w: g.waiter, err: err, direct: g.direct})
		return true
	})
}

// holdGone answers err to the waiters granted so far with session's hold, which a
// later operation of the same write took away (cancel, session loss).
func (o *outcome) holdGone(session string, err error) {
	o.ungrant(func(w waiter) bool { return w.Session == session }, err)
}

// holdReleased notes that h, which waiters granted so far may have been given, was
// released by its session in the same write: they are answered with it.
func (o *outcome) holdReleased(h holder) {
	for i := range o.granted {
		if g := &o.granted[i]; g.Session == h.Session && g.released == nil {
			g.released = &h
		}
	}
}

// Errors carried by removed waiters' replies.
var (
	errWaitTimeout   = wire.Errorf(wire.CodeTimeout, "the lock was not granted within the wait")
	errWaitBound     = wire.Errorf(wire.CodeTimeout, "still queued at the server's bound on one request; re-issue it with the same request_id to keep its place")
	errWaitCancelled = wire.Errorf(wire.CodeTimeout, "the waiting request was cancelled")
	errWaitSession   = wire.Errorf(wire.CodeSessionClosed, "the session closed while waiting")
	errWaitConn      = wire.Errorf(wire.CodeUnavailable, "the session lost its connection while waiting")
)

// errWaitForbidden answers a waiting request on lock name whose session lost
// ACQUIRE_LOCK on it while it waited.
func errWaitForbidden(name string) error {
	return wire.Errorf(wire.CodeForbidden, "%s on lock %q was withdrawn from the session's roles while the request waited (the policy or the session's principal changed): the request left the queue and is not granted", policy.AcquireLock, name)
}

// grant makes w a holder, or, when its session already holds the lock, weakens
// the held scope to the weaker of both (seed 002). A session holding the lock
// shared that asks for it exclusively gets ErrUpgrade: two such upgraders would
// wait for each other forever.
//
// A connection-scoped hold stays on the connection it was taken on: a request of
// the session from another connection either knows an older record of the
// session (its instance's view lags, and the session has left the connection it
// holds) or a newer one, in which case the hold's connection is gone and the
// request has released it first (record.acquireBy); moved, a lost hold would be
// revived on the new connection. A session-scoped hold weakened to connection
// scope takes the connection of the newer of the two records.
func (r *record) grant(w waiter, now int64, o *outcome) error {
	if i, ok := r.holder(w.Session); ok {
		h := &r.Holders[i]
		if w.Mode == wire.LockExclusive && h.Mode == wire.LockShared {
			return ErrUpgrade
		}
		if s := h.Scope.Weaker(w.Scope); s != h.Scope {
			if !olderSessionRev(w.SessionRev, h.SessionRev) {
				h.Conn, h.SessionRev = w.Conn, w.SessionRev
			}
			h.Scope = s
			o.changed = true
		} else if s == wire.ScopeConnection && h.Conn != w.Conn && (h.SessionRev == 0 || w.SessionRev == 0) {
			// A record written before the revisions were kept: as before them.
			h.Conn, h.SessionRev = w.Conn, w.SessionRev
			o.changed = true
		}
		if w.ID != "" && !h.answers(w.ID) {
			h.Also = append(h.Also, w.ID)
			if len(h.Also) > maxAlso {
				h.Also = slices.Delete(h.Also, 0, len(h.Also)-maxAlso)
			}
			o.changed = true
		}
		return nil
	}
	r.Holders = append(r.Holders, holder{Session: w.Session, Mode: w.Mode, Scope: w.Scope, Conn: w.Conn, SessionRev: w.SessionRev, GrantedAt: now, Request: w.ID})
	o.changed = true
	return nil
}

// promote grants waiters from the head of the queue while they are compatible with
// the holders: FIFO, so a waiting exclusive request holds back the shared ones
// behind it, and consecutive shared waiters at the head are granted together. A
// waiter whose wait is over (waiter.over) is answered timeout instead of granted,
// and one whose session may no longer acquire the lock (mayAcquire) is withdrawn,
// answered forbidden, whether or not the holders admit it: left at the head, it
// would hold back the waiters behind it.
func (r *record) promote(now int64, o *outcome) {
	for len(r.Waiters) > 0 {
		w := r.Waiters[0]
		if !r.mayAcquire(w.Session) {
			r.Waiters = r.Waiters[1:]
			r.forbid(w, now, o)
			continue
		}
		_, holds := r.holder(w.Session)
		if !holds && !r.compatible(w.Mode) {
			return
		}
		r.Waiters = r.Waiters[1:]
		o.changed = true
		if w.over(now) {
			// Its caller has given up, whether or not its expiry is written yet
			// (other instances wait ExpiryGrace for the owner to write it, and the
			// owner may be gone): granted, the lock would be held by nobody who
			// knows, until the session ends.
			o.removed = append(o.removed, removal{w: w, err: errWaitTimeout})
			r.remember(w.ID, w.Session, now, o)
			continue
		}
		if err := r.grant(w, now, o); err != nil {
			o.removed = append(o.removed, removal{w: w, err: wire.Errorf(wire.CodeConflict, "%v", err)})
			r.remember(w.ID, w.Session, now, o)
			continue
		}
		o.granted = append(o.granted, grantee{waiter: w})
	}
}

// mayAcquire reports whether session may acquire the lock now (record.allowed).
func (r *record) mayAcquire(session string) bool {
	return r.allowed == nil || r.allowed(session)
}

// withdrawForbidden withdraws every waiting request whose session may no longer
// acquire the lock (mayAcquire): the policy or the session's roles changed while
// it waited. Each is answered forbidden and its id remembered, as a cancelled one's
// is: a copy of it arriving later is refused forbidden on arrival, or, should the
// permission have come back, stale_request, rather than queued again. The waiters
// the removals let through are granted. Holds stay: the permission is checked on acquire, as
// Diffusion checks it, and a hold granted is not taken away.
func (r *record) withdrawForbidden(now int64, o *outcome) {
	var gone []waiter
	r.Waiters = slices.DeleteFunc(r.Waiters, func(w waiter) bool {
		if r.mayAcquire(w.Session) {
			return false
		}
		gone = append(gone, w)
		return true
	})
	for _, w := range gone {
		r.forbid(w, now, o)
	}
	r.promote(now, o)
}

// forbid answers w, taken out of the queue, forbidden and remembers its id.
func (r *record) forbid(w waiter, now int64, o *outcome) {
	o.removed = append(o.removed, removal{w: w, err: errWaitForbidden(r.Name)})
	o.changed = true
	r.remember(w.ID, w.Session, now, o)
}

// acquireBy applies an acquire of a session in state st: that of the record of the
// session that authenticated the request. That record may be newer than any an
// instance checked the session's locks against — the session resumed on another
// connection, and the release of what it lost with the old one failed, or has not
// been seen by a lagging view — and a request applied to a lock the session seems to
// hold merges with the hold: answered with a lock lost already, or, before,
// reviving it on the new connection, where it survived the loss and the waiters
// next in line were passed over. So what st shows lost (lostIn) is released first,
// granting the next waiters, and the request is then applied as a new one.
//
// A request applied after its session acted on the lock — its caller gave it up,
// had a copy settled and went on — must not take the lock, a place in the queue,
// or a part in a hold taken since (see doneRetention and actedSince): joined to
// that hold, it weakened its scope to its own, and withdrawing the request that
// took the hold no longer released it. What a copy of it did stands: a hold
// answering it already, or its own waiter, which it takes over — unless the
// waiter's reply subject was set by a copy that came after it (lateCopy), which
// its caller reads instead. A late copy of a request answered for good is refused
// as such (ErrCompleted).
func (r *record) acquireBy(st sessionState, a arrival, w waiter, wait, remember bool, maxWaiters int, now int64, o *outcome) (granted bool, err error) {
	r.dropSession(w.Session, st, now, o)
	r.forget(now, o)
	if !r.completed(w.ID, w.Session) && r.overtaken(w, st, a) {
		o.overtaken++
		return false, ErrOvertaken
	}
	return r.acquire(w, wait, remember, maxWaiters, now, o)
}

// overtaken reports whether w, which arrived at a, may no longer be applied: its
// session acted on the lock since, and nothing a copy of it did is there to join;
// or a copy of it waits with a reply subject set after w arrived (lateCopy).
func (r *record) overtaken(w waiter, st sessionState, a arrival) bool {
	i, holds := r.holder(w.Session)
	if holds && r.Holders[i].answers(w.ID) {
		return false
	}
	if j := r.waiterIndex(w.ID, w.Session); j >= 0 {
		// A session holding the lock answers its waiting copy with the hold
		// (acquire): w takes nothing from it.
		return !holds && r.lateCopy(j, a)
	}
	return r.actedSince(w.Session, w.ID, st, a)
}

// lateCopy reports whether a copy of the request of waiter i, which arrived at a,
// came before the request that set the waiter's reply subject (replySetAt): taking
// the waiter over, as a re-issue does, it would answer the waiter on a subject its
// caller has stopped reading — the caller re-issued the request, and reads the
// re-issue's. A re-issue comes after the request it re-issues, and takes over.
//
// Judged as actedSince judges acts: the version of the waiter the instance had when
// the copy arrived (a.seen) came before the copy, whatever its time; one it did not
// know of is judged by time, the clocks of two instances. A clock behind the copy's
// by more than the time between the two lets the late copy through (it takes the
// waiter over, as before); one ahead by more than that could refuse a re-issue made
// through an instance whose view has yet to see the waiter, which the client then
// re-issues again (unavailable). A version is known when a.seen shows the waiter
// with the same EnqueuedAt (not an earlier wait of the same id) and ReissuedAt; one
// without ReissuedAt (never taken over, or written by an older version) when a.seen
// shows that wait in any version.
func (r *record) lateCopy(i int, a arrival) bool {
	w := r.Waiters[i]
	if j := a.seen.waiterIndex(w.ID, w.Session); j >= 0 {
		if s := a.seen.Waiters[j]; s.EnqueuedAt == w.EnqueuedAt && (w.ReissuedAt == 0 || s.ReissuedAt == w.ReissuedAt) {
			return false
		}
	}
	return w.replySetAt() > a.at
}

// replySetAt is when the request whose reply subject w holds arrived (by its
// instance's clock): the last re-issue's arrival, or for a waiter never taken over,
// or whose record an older version wrote, its enqueueing — before any re-issue, so
// a copy that arrived before it is late all the same.
func (w waiter) replySetAt() int64 {
	if w.ReissuedAt != 0 {
		return w.ReissuedAt
	}
	return w.EnqueuedAt
}

// acquire applies an acquire. It returns granted=true when w's session holds the
// lock afterwards; otherwise w waits (wait) or the acquire fails (ErrWouldBlock).
// A request whose id is already waiting takes over that waiter (its reply subject,
// owner and deadline) and keeps its place — a copy that arrived before the waiter's
// reply subject was set does not get here (acquireBy, lateCopy); one whose id was
// answered for good is a late duplicate (ErrCompleted). remember says the id is the client's own, so a
// try-once refusal is remembered too.
func (r *record) acquire(w waiter, wait, remember bool, maxWaiters int, now int64, o *outcome) (granted bool, err error) {
	if r.completed(w.ID, w.Session) {
		return false, ErrCompleted
	}
	if _, holds := r.holder(w.Session); holds || (len(r.Waiters) == 0 && r.compatible(w.Mode)) {
		if err := r.grant(w, now, o); err != nil {
			return false, err
		}
		o.granted = append(o.granted, grantee{waiter: w, direct: true})
		// A copy of this request still waiting (re-issued while the session came
		// to hold the lock through another) is answered now, with the same lock:
		// left in the queue, it would be granted again, silently, after the session
		// has released the lock.
		if i := r.waiterIndex(w.ID, w.Session); i >= 0 {
			if old := r.Waiters[i]; old.Reply != "" && old.Reply != w.Reply {
				o.granted = append(o.granted, grantee{waiter: old})
			}
			r.Waiters = slices.Delete(r.Waiters, i, i+1)
			o.changed = true
			r.promote(now, o)
		}
		return true, nil
	}
	if !wait {
		// A try-once copy of a request that is waiting ends the wait: the caller
		// asks once and takes no for an answer, and a waiter left behind would be
		// granted to a caller that has moved on.
		if i := r.waiterIndex(w.ID, w.Session); i >= 0 {
			o.removed = append(o.removed, removal{w: r.Waiters[i], err: errWaitCancelled})
			r.Waiters = slices.Delete(r.Waiters, i, i+1)
			o.changed = true
			r.promote(now, o)
			remember = true
		}
		if remember {
			r.remember(w.ID, w.Session, now, o)
		}
		return false, ErrWouldBlock
	}
	if i := r.waiterIndex(w.ID, w.Session); i >= 0 {
		// w.EnqueuedAt is the copy's arrival (locks.go): it set the reply subject.
		w.ReissuedAt, w.EnqueuedAt = w.EnqueuedAt, r.Waiters[i].EnqueuedAt
		r.Waiters[i] = w
		o.changed = true
		// The copy may ask for another mode than the request it takes over (shared
		// where that was exclusive): at the head of the queue and compatible with the
		// holders, it is granted now, with the shared waiters behind it. Left there,
		// it would wait for nothing, holding back everyone behind it, until the next
		// release or its own timeout.
		if i == 0 && r.compatible(w.Mode) {
			r.Waiters = r.Waiters[1:]
			if err := r.grant(w, now, o); err != nil {
				return false, err
			}
			o.granted = append(o.granted, grantee{waiter: w, direct: true})
			r.promote(now, o)
			return true, nil
		}
		return false, nil
	}
	if len(r.Waiters) >= maxWaiters {
		return false, ErrTooManyWaiters
	}
	if r.waiting(w.Session) >= waitersApiece {
		return false, ErrTooManyOwnWaiters
	}
	r.Waiters = append(r.Waiters, w)
	o.changed = true
	return false, nil
}

// releaseBy applies a release that arrived at a: release, unless its token is 0
// and the session's hold was granted after the arrival (as actedSince judges it)
// — a hold taken after the request arrived is not the one it meant (ErrOvertaken).
func (r *record) releaseBy(session string, token uint64, a arrival, now int64, o *outcome) (holder, error) {
	if token == 0 && r.prior != nil {
		if i, ok := r.prior.holder(session); ok {
			if h := r.prior.Holders[i]; h.GrantedAt > a.at && !a.seen.holds(session, h.Token) {
				o.overtaken++
				return holder{}, ErrOvertaken
			}
		}
	}
	return r.release(session, token, now, o)
}

// release removes session's hold. A non-zero token must match the held token.
func (r *record) release(session string, token uint64, now int64, o *outcome) (holder, error) {
	i, ok := r.holder(session)
	if !ok || (token != 0 && r.Holders[i].Token != token) {
		return holder{}, ErrNotHeld
	}
	h := r.Holders[i]
	r.Holders = slices.Delete(r.Holders, i, i+1)
	o.changed = true
	o.holdReleased(h)
	r.rememberHold(h, now, o)
	r.promote(now, o)
	return h, nil
}

// cancel withdraws session's request id, whatever became of it: a waiting request
// leaves the queue (waiting); one answered with the session's hold no longer counts for it,
// and the hold is released (released) when no request answered with it remains; an
// id the record does not know is remembered when remember is set, so that the
// request, should it arrive after the cancel, is refused as stale (ErrNoWaiter is
// returned then).
func (r *record) cancel(id, session string, now int64, remember bool, o *outcome) (waiting, released bool, err error) {
	if i := r.waiterIndex(id, session); i >= 0 {
		o.removed = append(o.removed, removal{w: r.Waiters[i], err: errWaitCancelled})
		r.Waiters = slices.Delete(r.Waiters, i, i+1)
		o.changed = true
		r.remember(id, session, now, o)
		// Removing the head may let the waiters behind it through.
		r.promote(now, o)
		return true, false, nil
	}
	if i, ok := r.holder(session); ok && r.Holders[i].answers(id) {
		o.changed = true
		r.remember(id, session, now, o)
		// Granted earlier in this write, its held request is answered as a
		// cancelled wait rather than with the answer withdrawn.
		o.ungrant(func(w waiter) bool { return w.ID == id && w.Session == session }, errWaitCancelled)
		if !r.Holders[i].withdraw(id) {
			return false, false, nil
		}
		r.Holders = slices.Delete(r.Holders, i, i+1)
		o.holdGone(session, errWaitCancelled)
		r.promote(now, o)
		return false, true, nil
	}
	if remember && !r.completed(id, session) {
		r.remember(id, session, now, o)
	}
	return false, false, ErrNoWaiter
}

// expiry says who expires waiters, and how.
type expiry struct {
	instance string
	// grace delays the expiry of waiters owned by other instances.
	grace int64
	// reattach is how long a detached waiter keeps its place.
	reattach int64
}

// expire answers the waiters whose deadline has passed: those owned by
// e.instance at their deadline, others e.grace milliseconds later (their owner may
// be gone). A waiter whose caller wants to wait longer is detached rather than
// removed: its request is answered (errWaitBound) and it keeps its place for
// e.reattach, for the client to re-issue it. Answered ids past their retention are
// forgotten too (a free lock remembering none is then deleted).
func (r *record) expire(e expiry, now int64, o *outcome) {
	r.forget(now, o)
	var expired []waiter
	r.Waiters = slices.DeleteFunc(r.Waiters, func(w waiter) bool {
		if w.Deadline+expiryDelay(w, e.instance, e.grace) > now {
			return false
		}
		o.changed = true
		if w.Reply != "" && (w.Until == 0 || w.Until > now) {
			o.removed = append(o.removed, removal{w: w, err: errWaitBound})
			return false
		}
		o.removed = append(o.removed, removal{w: w, err: errWaitTimeout})
		expired = append(expired, w)
		return true
	})
	for _, w := range expired {
		r.remember(w.ID, w.Session, now, o)
	}
	for i := range r.Waiters {
		if w := &r.Waiters[i]; w.Reply != "" && w.Deadline+expiryDelay(*w, e.instance, e.grace) <= now {
			w.Reply, w.Owner, w.Deadline = "", e.instance, now+e.reattach
			if w.Until != 0 {
				w.Deadline = min(w.Deadline, w.Until)
			}
		}
	}
	r.promote(now, o)
}

// over reports whether w's wait has ended by now: the caller's wait (Until) is
// over, or w is detached and was not re-issued within its reattach time. Such a
// waiter is timed out by whichever instance finds it first, never granted.
func (w waiter) over(now int64) bool {
	return (w.Until != 0 && w.Until <= now) || (w.Reply == "" && w.Deadline <= now)
}

func expiryDelay(w waiter, instance string, grace int64) int64 {
	if w.Owner == instance {
		return 0
	}
	return grace
}

// nextDeadline is when e.instance should next call expire, or 0 with nothing to
// expire. A free lock is due when its oldest remembered id expires: no operation
// may come to forget it, and the record is deleted then.
func (r *record) nextDeadline(e expiry) int64 {
	var next int64
	for _, w := range r.Waiters {
		if d := w.Deadline + expiryDelay(w, e.instance, e.grace); next == 0 || d < next {
			next = d
		}
	}
	if r.free() {
		for _, d := range r.Done {
			if at := d.At + doneRetention + 1; next == 0 || at < next {
				next = at
			}
		}
	}
	return next
}

// sessionState is what the lock service knows of a session's liveness.
type sessionState struct {
	// closed: the session is closed, expired or unknown: drop everything.
	closed bool
	// connected is false while the session has lost its connection; conn is the
	// connection it is bound to.
	connected bool
	conn      string
	// rev is the revision of the session's record this state was read from.
	rev uint64
	// cause is the W3C traceparent of the request whose change of the session's
	// record this state was read from (sessions.Record.ChangeTrace): a release it
	// causes is a span of that request's trace. Empty for the server's own changes.
	cause string
}

// lostIn reports whether a hold or wait with scope and conn, read from the
// session's record at revision rev, is lost for a session in state st: everything
// when it is closed; a connection-scoped one when the session is not ACTIVE on the
// connection it was taken on — as far as st is at least as recent as the record the
// connection was read from. An older st comes from a view that lags the one that
// granted (the session may have resumed on the connection since): the check waits
// for the view, whose next change of the session is checked again. rev 0 (a record
// written before the revisions were kept) is checked against any st.
func lostIn(st sessionState, scope wire.LockScope, conn string, rev uint64) bool {
	if st.closed {
		return true
	}
	if scope != wire.ScopeConnection || (st.connected && conn == st.conn) {
		return false
	}
	return rev == 0 || st.rev >= rev
}

// olderSessionRev reports whether revision a of a session's record is known to be
// older than b (0 is unknown).
func olderSessionRev(a, b uint64) bool { return a != 0 && b != 0 && a < b }

// dropSession releases what a session may no longer hold: everything when it is
// closed; its connection-scoped locks and waiting requests when it is not on the
// connection they were taken on (lostIn).
func (r *record) dropSession(session string, st sessionState, now int64, o *outcome) {
	lost := func(scope wire.LockScope, conn string, rev uint64) bool { return lostIn(st, scope, conn, rev) }
	lostErr := errWaitSession
	if !st.closed {
		lostErr = errWaitConn
	}
	var dropped []waiter
	before := len(r.Holders)
	r.Holders = slices.DeleteFunc(r.Holders, func(h holder) bool {
		if h.Session != session || !lost(h.Scope, h.Conn, h.SessionRev) {
			return false
		}
		if !st.closed {
			for _, id := range append([]string{h.Request}, h.Also...) {
				dropped = append(dropped, waiter{ID: id, Session: h.Session})
			}
		}
		return true
	})
	if len(r.Holders) != before {
		o.changed = true
		o.holdGone(session, lostErr)
	}
	r.Waiters = slices.DeleteFunc(r.Waiters, func(w waiter) bool {
		if w.Session != session || !lost(w.Scope, w.Conn, w.SessionRev) {
			return false
		}
		if !st.closed {
			dropped = append(dropped, w)
		}
		o.removed = append(o.removed, removal{w: w, err: lostErr})
		o.changed = true
		return true
	})
	for _, w := range dropped {
		r.remember(w.ID, w.Session, now, o)
	}
	r.promote(now, o)
}

// of counts the holds and the waiting requests of session.
func (r *record) of(session string) (holds, waits int) {
	for _, h := range r.Holders {
		if h.Session == session {
			holds++
		}
	}
	for _, w := range r.Waiters {
		if w.Session == session {
			waits++
		}
	}
	return holds, waits
}

// sessions returns the sessions named by holders and waiters.
func (r *record) sessions() []string {
	var out []string
	for _, h := range r.Holders {
		out = append(out, h.Session)
	}
	for _, w := range r.Waiters {
		if !slices.Contains(out, w.Session) {
			out = append(out, w.Session)
		}
	}
	return out
}

// lock returns the wire form of h.
func (h holder) lock(name string) *wire.Lock {
	return &wire.Lock{Name: name, Mode: h.Mode, Scope: h.Scope, Session: h.Session, Token: h.Token,
		GrantedAt: time.UnixMilli(h.GrantedAt).UTC()}
}
