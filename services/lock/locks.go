package lock

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nuid"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// caller is the session a request acts for.
type caller struct {
	id    string
	roles []string
	// conn is the connection the session is bound to, and bound whether the
	// session is ACTIVE on it, as of revision rev of the session's record.
	conn  string
	bound bool
	rev   uint64
	call  *endpoint.Call
}

// onBoundConnection reports whether the request came from the connection the
// session is ACTIVE on. It reads the request info, which only connection-scoped
// acquires need.
func (c *caller) onBoundConnection() bool {
	return c.bound && c.conn == c.call.Info().ConnectionKey()
}

// state is the session's state as the record that authenticated the request has
// it.
func (c *caller) state() sessionState {
	return sessionState{connected: c.bound, conn: c.conn, rev: c.rev}
}

// authenticate checks the request's session headers against the session view and
// counts the request as the session's activity.
func (s *Service) authenticate(c *endpoint.Call) (*caller, error) {
	if c.SessionID == "" {
		return nil, wire.Errorf(wire.CodeUnauthenticated, "lock requests need the %s and %s headers", wire.HeaderSession, wire.HeaderToken)
	}
	// The view reads a session it has not seen yet (opened a moment ago) from the
	// bucket before declaring it unknown.
	r, err := s.sess.Authenticate(c.SessionID, c.Token)
	if err != nil {
		return nil, err
	}
	s.sess.Touch(r.ID)
	return &caller{id: r.ID, roles: r.Roles, conn: r.Connection, bound: r.State == wire.StateActive, rev: r.Revision, call: c}, nil
}

// acquire grants the lock or, when the request may wait and the lock is not
// available, queues it and returns endpoint.ErrReplyLater: the request is answered
// on reply when it is granted, times out, is cancelled, its session goes, or its
// session may no longer acquire the name (checked again while it waits: see
// record.allowed). The check here is the one at arrival.
func (s *Service) acquire(ctx context.Context, c *caller, reply string, req *wire.LockAcquireRequest) (*wire.Lock, error) {
	if !s.pol.Allowed(c.roles, policy.AcquireLock, req.Name) {
		return nil, wire.Errorf(wire.CodeForbidden, "%s on lock %q is not granted to the session's roles", policy.AcquireLock, req.Name)
	}
	// A connection-scoped lock lives as long as the session stays on the connection
	// it was taken on: that must be the connection the request came from, with the
	// session ACTIVE on it — not a connection the session has left (RECOVERING, or
	// resumed elsewhere), whose loss was already seen and would never release it.
	if req.Scope == wire.ScopeConnection && !c.onBoundConnection() {
		return nil, wire.Errorf(wire.CodeUnavailable, "a connection-scoped lock needs the session ACTIVE on the connection the request comes from; resume the session on it first")
	}
	wait := req.WaitMS != 0
	if wait && reply == "" {
		return nil, wire.Errorf(wire.CodeBadRequest, "an acquire that waits must be a request (it has no reply subject)")
	}
	key := KeyFor(req.Name)
	now := s.nowMS()
	seen, _ := s.st.cached(key)
	w := waiter{
		ID: req.RequestID, Session: c.id, Mode: req.Mode, Scope: req.Scope, Conn: c.conn, SessionRev: c.rev,
		Reply: reply, Owner: s.cfg.Instance, EnqueuedAt: now, Deadline: now + s.cfg.MaxWait.Milliseconds(),
	}
	if wait {
		w.Trace = wire.TraceParent(ctx)
	}
	// A wait whose end does not fit in the clock's range (it would wrap around to
	// the past and end at once) has no end, like WaitForever.
	if req.WaitMS > 0 && req.WaitMS <= math.MaxInt64-now {
		w.Until = now + req.WaitMS
		w.Deadline = min(w.Deadline, w.Until)
	}
	// A requester's deadline (Roster-Timeout) before the server's bound ends its
	// wait there: it has given up, and will not re-issue the request. Detached
	// instead, as at MaxWait, the waiter kept its place for Reattach and could be
	// granted the lock in that time, held by a session that never learns of it.
	if left, ok := endpoint.Remaining(ctx); ok && wait {
		if end := now + max(left.Milliseconds(), 0); end < w.Deadline {
			w.Until, w.Deadline = end, end
		}
	}
	clientID := w.ID != ""
	if !clientID {
		w.ID = nuid.Next()
	}
	var granted bool
	var aerr error
	var out *outcome // of the write the request was last applied in
	arrived := arrival{at: now, seen: seen.rec}
	cm, err := s.do(ctx, req.Name, func(r *record, now int64, o *outcome) {
		out = o
		// A lock the session holds or waits for is counted already: re-acquiring
		// it, or waiting for it again, takes nothing more.
		if _, holds := r.holder(c.id); !holds && r.waiting(c.id) == 0 {
			if n := s.st.sessionLocks(c.id, key); n >= s.cfg.MaxLocksPerSession {
				granted, aerr = false, wire.Errorf(wire.CodeLimitExceeded, "the session holds or waits for %d locks; one session may hold or wait for at most %d (release one first)", n, s.cfg.MaxLocksPerSession)
				return
			}
		}
		granted, aerr = r.acquireBy(c.state(), arrived, w, wait, clientID, s.cfg.MaxWaiters, now, o)
	})
	if err != nil {
		return nil, err
	}
	switch {
	case errors.Is(aerr, ErrWouldBlock):
		return nil, wire.Errorf(wire.CodeTimeout, "lock %q is not available (try once)", req.Name)
	case errors.Is(aerr, ErrUpgrade):
		return nil, wire.Errorf(wire.CodeConflict, "the session holds lock %q shared; release it before acquiring it exclusively", req.Name)
	case errors.Is(aerr, ErrOvertaken):
		return nil, errOvertaken(req.Name)
	case errors.Is(aerr, ErrCompleted):
		// The request was answered for good without leaving the session holding the
		// lock (refused, timed out, cancelled, or granted and since released).
		return nil, wire.Errorf(wire.CodeStaleRequest, "request %q on lock %q was already answered and is not granted; this copy arrived late and changes nothing", w.ID, req.Name)
	case errors.Is(aerr, ErrTooManyWaiters):
		return nil, wire.Errorf(wire.CodeLimitExceeded, "lock %q already has %d waiting requests", req.Name, s.cfg.MaxWaiters)
	case errors.Is(aerr, ErrTooManyOwnWaiters):
		return nil, wire.Errorf(wire.CodeLimitExceeded, "the session already has %d requests waiting for lock %q, the limit", waitersApiece, req.Name)
	case aerr != nil:
		return nil, aerr
	}
	if !granted {
		return nil, endpoint.ErrReplyLater
	}
	// An operation later in the same write may have taken the hold away again: the
	// request's cancel or its session's loss (answered as they answer a waiter), or
	// a release by its session (answered with the lock it was given).
	if released, derr, ok := out.direct(w.ID, w.Session); ok {
		switch {
		case derr != nil:
			return nil, derr
		case released != nil:
			l := released.lock(req.Name)
			if l.Token == 0 {
				l.Token = cm.rev
			}
			return l, nil
		}
	}
	l, ok := lockOf(cm.rec, c.id)
	if !ok {
		return nil, wire.Errorf(wire.CodeConflict, "lock %q was released concurrently", req.Name)
	}
	return l, nil
}

// errOvertaken answers a request that was not applied because its session acted on
// the lock after it arrived (record.actedSince), or re-issued it (record.lateCopy).
// Its caller has most likely given it up and gone on; one still waiting re-issues
// it, with the same request id.
func errOvertaken(name string) error {
	return wire.Errorf(wire.CodeUnavailable, "the session acted on lock %q, or re-issued this request, after this request arrived and before it could be applied, so it was not applied; re-issue it with the same request_id if it is still wanted", name)
}

// errOvertakenRelease answers a release without a token that was not applied
// because the session took the lock after it arrived (record.releaseBy). A release
// has no request id: repeated without a token, it would release that hold.
func errOvertakenRelease(name string) error {
	return wire.Errorf(wire.CodeUnavailable, "the session took lock %q again after this release arrived and before it could be applied, so it was not applied; to release that hold, give its token", name)
}

// release releases the caller's hold on a lock and grants it to the next waiters.
func (s *Service) release(ctx context.Context, c *caller, req *wire.LockReleaseRequest) (*wire.Lock, error) {
	var released holder
	var rerr error
	seen, _ := s.st.cached(KeyFor(req.Name))
	arrived := arrival{at: s.nowMS(), seen: seen.rec}
	cm, err := s.do(ctx, req.Name, func(r *record, now int64, o *outcome) {
		released, rerr = r.releaseBy(c.id, req.Token, arrived, now, o)
	})
	if err != nil {
		return nil, err
	}
	if errors.Is(rerr, ErrOvertaken) {
		return nil, errOvertakenRelease(req.Name)
	}
	if errors.Is(rerr, ErrNotHeld) {
		if req.Token != 0 {
			return nil, wire.Errorf(wire.CodeLockNotHeld, "the session does not hold lock %q with token %d", req.Name, req.Token)
		}
		return nil, wire.Errorf(wire.CodeLockNotHeld, "the session does not hold lock %q", req.Name)
	}
	if rerr != nil {
		return nil, rerr
	}
	l := released.lock(req.Name)
	if l.Token == 0 {
		// Granted by the same write (a batch that granted and released it): its
		// token is that write's revision.
		l.Token = cm.rev
	}
	return l, nil
}

// cancelWait withdraws the caller's request (record.cancel): a waiting one is
// answered with a timeout error saying it was cancelled; the hold a granted one was
// answered with is released if no other request of the session was answered with it.
func (s *Service) cancelWait(ctx context.Context, c *caller, req *wire.LockCancelRequest) (*wire.LockCancelResponse, error) {
	var cerr error
	var resp wire.LockCancelResponse
	// A request the session may not make needs no remembering: should it arrive, it
	// is refused forbidden. Remembered, it would let a session without any right on
	// a name write a record for it, kept for doneRetention.
	remember := s.pol.Allowed(c.roles, policy.AcquireLock, req.Name)
	if _, err := s.do(ctx, req.Name, func(r *record, now int64, o *outcome) {
		resp.Cancelled, resp.Released, cerr = r.cancel(req.RequestID, c.id, now, remember, o)
	}); err != nil {
		return nil, err
	}
	if errors.Is(cerr, ErrNoWaiter) {
		return nil, wire.Errorf(wire.CodeNotFound, "no request %q of the session is waiting for or holds lock %q; should it arrive later, it is refused", req.RequestID, req.Name)
	}
	if cerr != nil {
		return nil, cerr
	}
	return &resp, nil
}

// list returns locks from this instance's view of the bucket, which follows the
// writes within milliseconds.
func (s *Service) list(c *caller, req *wire.LockListRequest) (*wire.LockListResponse, error) {
	if !s.pol.Allowed(c.roles, policy.ViewLocks, "") {
		return nil, wire.Errorf(wire.CodeForbidden, "%s is not granted to the session's roles", policy.ViewLocks)
	}
	limit := req.Limit
	if limit == 0 {
		limit = s.cfg.ListLimit
	}
	limit = min(limit, s.cfg.MaxListLimit)
	var all []entry
	for _, e := range s.st.snapshot() {
		if !e.rec.free() && strings.HasPrefix(e.rec.Name, req.Prefix) && e.rec.Name > req.After {
			all = append(all, e)
		}
	}
	slices.SortFunc(all, func(a, b entry) int { return strings.Compare(a.rec.Name, b.rec.Name) })
	out := &wire.LockListResponse{Locks: []wire.LockInfo{}}
	for i, e := range all {
		if i == limit {
			out.Next = all[i-1].rec.Name
			break
		}
		out.Locks = append(out.Locks, info(e))
	}
	return out, nil
}

func info(e entry) wire.LockInfo {
	li := wire.LockInfo{Name: e.rec.Name, Revision: e.rev, Holders: []wire.LockHolder{}, Waiters: []wire.LockWaiter{}}
	for _, h := range e.rec.Holders {
		li.Holders = append(li.Holders, wire.LockHolder{Session: h.Session, Mode: h.Mode, Scope: h.Scope, Token: h.Token,
			GrantedAt: time.UnixMilli(h.GrantedAt).UTC()})
	}
	for _, w := range e.rec.Waiters {
		lw := wire.LockWaiter{RequestID: w.ID, Session: w.Session, Mode: w.Mode, Scope: w.Scope,
			EnqueuedAt: time.UnixMilli(w.EnqueuedAt).UTC(), Detached: w.Reply == ""}
		if w.Until != 0 {
			t := time.UnixMilli(w.Until).UTC()
			lw.Until = &t
		}
		li.Waiters = append(li.Waiters, lw)
	}
	return li
}
