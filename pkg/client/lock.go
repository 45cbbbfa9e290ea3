package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nuid"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// LockOptions choose how a lock is held.
type LockOptions struct {
	// Mode is exclusive (default) or shared.
	Mode wire.LockMode
	// Scope is session (default: held until released or the session ends) or
	// connection (also released when the session loses its connection).
	Scope wire.LockScope
}

// Lock is a lock held by a session. Every call of the session answered with one
// grant gets the same *Lock.
type Lock struct {
	s    *Session
	info wire.Lock

	mu      sync.Mutex
	lost    chan struct{}
	lostErr error
}

// ErrLockLost is the cause reported by (*Lock).Err when the lock was released
// without Unlock, or may have been: its session closed, a connection-scoped lock's
// session lost its connection, or the session could not be confirmed for so long
// that the server may have released its locks.
var ErrLockLost = errors.New("client: lock lost")

// Lock acquires the named lock, waiting until it is granted or ctx ends: give ctx a
// deadline to bound the wait, or cancel it to give up. A session that already
// holds the lock gets an equal Lock with the same fencing token. TryLock does not
// wait.
//
// A lock is the session's, not the goroutine's: goroutines sharing a session share
// its locks, and do not exclude each other. So Lock calls of one session waiting
// for the same name, mode and scope share one waiting request: the server sees one
// waiter however many goroutines wait (it keeps at most 16 requests of a session
// waiting for one lock, and refuses more with ErrLimitExceeded), and when the lock
// is granted every one of them gets the same *Lock, with one fencing token. A call
// whose ctx ends returns alone — context.Canceled, or an error matching ErrTimeout
// past its deadline — and the others wait on; the request is withdrawn only when
// the last call waiting for it gives up (a grant that raced the withdrawal is
// released, unless another request of the session was answered with it). Calls
// that ask for another mode or scope wait with requests of their own: a session
// granted both holds the lock with the weaker scope, and one holding it shared
// that asks for it exclusively gets ErrConflict. Since every call gets the same
// lock, one Unlock releases it for all of them.
//
// The shared request asks the server to wait until it is withdrawn; each call's
// deadline ends its own wait in the SDK. The server holds one waiting request at
// most a minute; the SDK re-issues it with the same request id, which keeps its
// place in the queue, for as long as a call waits — also when no answer comes at
// all (the instance that took the request died), and when the lock service
// answers that the outcome is unknown. When the session closes, every waiting call
// returns an error matching ErrSessionClosed. When the connection is lost, the
// calls fail together (ErrUnavailable) and the request is withdrawn once the
// session is back: a Lock does not outlive its connection.
func (s *Session) Lock(ctx context.Context, name string, opts LockOptions) (*Lock, error) {
	if err := ctx.Err(); err != nil {
		return nil, givenUp(ctx, name, err)
	}
	key := keyOf(name, opts)
	s.mu.Lock()
	select {
	case <-s.stopHB:
		// No longer served here (closed, or its Client closed): no request starts
		// that Client.Close would not wait for (lockWork).
		s.mu.Unlock()
		return nil, s.goneErr()
	default:
	}
	w := s.waits[key]
	if w == nil {
		// The request runs in the first call's trace (ctx's values), and until
		// the last call waiting for it gives up (not ctx's end).
		wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		w = &lockWait{cancel: cancel, done: make(chan struct{})}
		if s.waits == nil {
			s.waits = map[lockKey]*lockWait{}
		}
		s.waits[key] = w
		s.lockWork.Add(1)
		go s.runWait(wctx, key, w)
	}
	w.callers++
	s.mu.Unlock()
	select {
	case <-w.done:
		return w.l, w.err
	case <-ctx.Done():
	case <-s.stopHB: // the session closed: its requests are gone on the server
	}
	return s.leaveWait(ctx, key, w)
}

// lockKey names the Lock calls of a session that share one waiting request.
type lockKey struct {
	name  string
	mode  wire.LockMode
	scope wire.LockScope
}

// keyOf returns the key of a Lock call, with the defaults spelt out: a call that
// leaves them out asks for what one naming them does.
func keyOf(name string, opts LockOptions) lockKey {
	k := lockKey{name: name, mode: opts.Mode, scope: opts.Scope}
	if k.mode == "" {
		k.mode = wire.LockExclusive
	}
	if k.scope == "" {
		k.scope = wire.ScopeSession
	}
	return k
}

// lockWait is one waiting acquire request, shared by the Lock calls of a session
// with the same key.
type lockWait struct {
	callers int                // the calls waiting for it (under Session.mu)
	cancel  context.CancelFunc // withdraws the request: the last call gave up
	done    chan struct{}      // closed once l or err is set (under Session.mu while calls wait)
	l       *Lock
	err     error
}

// leaveWait detaches a Lock call that gives up (its ctx ended, or the session
// closed) from the request it waits for. The last call to leave withdraws the
// request, and returns once the withdrawal is answered (withdrawWait at most).
func (s *Session) leaveWait(ctx context.Context, key lockKey, w *lockWait) (*Lock, error) {
	s.mu.Lock()
	select {
	case <-w.done:
		// Answered as the call gave up: the answer is the call's, as it would be
		// were the call alone (the grant is not taken back).
		s.mu.Unlock()
		if w.err != nil && ctx.Err() != nil {
			return nil, givenUp(ctx, key.name, w.err)
		}
		return w.l, w.err
	default:
	}
	w.callers--
	last := w.callers == 0
	if last {
		if s.waits[key] == w {
			delete(s.waits, key)
		}
		w.cancel()
	}
	s.mu.Unlock()
	if last {
		<-w.done
	}
	if err := ctx.Err(); err != nil {
		return nil, givenUp(ctx, key.name, err)
	}
	return nil, s.goneErr()
}

// goneErr is what a call of a session that stopped being served gets: closed, or
// attached and its Client closed.
func (s *Session) goneErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == StateClosed {
		return s.closedErr()
	}
	return errClosedConn
}

// runWait runs the request the Lock calls of key share until it is answered for
// good, or the last call gives up (ctx ends), and hands the answer to the calls
// waiting then. A grant that came as the last call gave up is withdrawn: nobody
// would use or release it. It counts in s.lockWork until its withdrawal, if any,
// is answered.
func (s *Session) runWait(ctx context.Context, key lockKey, w *lockWait) {
	defer s.lockWork.Done()
	defer w.cancel()
	opts := LockOptions{Mode: key.mode, Scope: key.scope}
	reqID := nuid.Next()
	info, err := s.request(ctx, key.name, opts, &reqID)
	s.mu.Lock()
	if s.waits[key] == w {
		delete(s.waits, key) // a call from now on asks anew
	}
	// Decided under s.mu, where calls leave: a call either takes the answer or
	// has left before it came.
	abandoned := w.callers == 0
	if !abandoned {
		if err == nil {
			w.l = s.trackLockLocked(info)
		} else {
			w.err = err
		}
		close(w.done)
	}
	s.mu.Unlock()
	if abandoned {
		if err == nil {
			s.withdraw(ctx, key.name, reqID, opts, true)
		}
		close(w.done)
	}
}

// request sends a waiting acquire and asks again, with the same request id, until
// it is granted or refused for good, or ctx ends — then it withdraws the request.
// *reqID is the id the request has in the end: one whose place was lost waits
// again under a new id.
func (s *Session) request(ctx context.Context, name string, opts LockOptions, reqID *string) (wire.Lock, error) {
	if err := s.settleUnsure(ctx, name); err != nil {
		return wire.Lock{}, err
	}
	unknown := 0 // outcomes in a row the service could not tell
	for {
		// Bound each request a little past the server's bound on one held request,
		// so that a request nobody will answer is re-issued.
		rctx, cancel := context.WithTimeout(ctx, maxHeldRequest)
		info, err := s.acquire(rctx, name, opts, wire.WaitForever, *reqID)
		unanswered := rctx.Err() != nil // read before cancel, which sets it
		cancel()
		switch {
		case err == nil:
			return info, nil
		case ctx.Err() != nil:
			s.withdraw(ctx, name, *reqID, opts, true)
			return wire.Lock{}, err
		case unanswered:
			continue // no answer within the bound (ctx lives on): ask again, same request id
		case errors.Is(err, ErrUnavailable):
			// The request may have been stored, and may wait or be granted. While
			// connected, ask again with the same request id, which settles it;
			// failing that, withdraw it — now, or once the session is back.
			if unknown++; unknown <= unknownRetries && s.c.nc.IsConnected() {
				select {
				case <-time.After(time.Duration(unknown) * 50 * time.Millisecond):
					continue
				case <-ctx.Done():
				}
			}
			s.withdraw(ctx, name, *reqID, opts, true)
			return wire.Lock{}, err
		case errors.Is(err, ErrStaleRequest):
			// The request's place was lost (its waiter expired while we could not
			// re-issue it): wait again, at the back of the queue.
			*reqID = nuid.Next()
			continue
		case errors.Is(err, ErrTimeout):
			// The server's bound on one held request (a minute) passed: the
			// request keeps its place for a while; re-issue it.
			continue
		default:
			return wire.Lock{}, err
		}
	}
}

// givenUp is Lock's error when its context ended, with err the cause: past the
// deadline it matches ErrTimeout, whatever the cause was.
func givenUp(ctx context.Context, name string, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && !errors.Is(err, ErrTimeout) {
		return fmt.Errorf("%w: %w", &wire.Error{Code: wire.CodeTimeout, Message: "lock " + name + " not granted before the deadline"}, err)
	}
	return err
}

// maxHeldRequest bounds one acquire request: the server answers a held request
// within a minute (its bound on one request); past that, the request or its answer
// was lost and the SDK asks again.
var maxHeldRequest = 65 * time.Second

// unknownRetries is how often Lock asks again, with the same request id, after the
// lock service answered that the outcome was unknown.
const unknownRetries = 3

// TryLock acquires the named lock if it is free now, and fails with ErrTimeout
// otherwise. When ctx ends before the answer comes, or the answer is that the
// outcome is unknown (ErrUnavailable), the request is withdrawn as Lock's is: a
// grant the caller never saw is released.
func (s *Session) TryLock(ctx context.Context, name string, opts LockOptions) (*Lock, error) {
	// The request id is what lets the server withdraw a try the caller gave up
	// on, and refuse it should it arrive after its withdrawal.
	if err := s.settleUnsure(ctx, name); err != nil {
		return nil, err
	}
	reqID := nuid.Next()
	info, err := s.acquire(ctx, name, opts, 0, reqID)
	if err != nil {
		if ctx.Err() != nil || errors.Is(err, ErrUnavailable) {
			s.withdraw(ctx, name, reqID, opts, false)
		}
		return nil, err
	}
	return s.trackLock(info), nil
}

// acquire sends one acquire request and returns the grant.
func (s *Session) acquire(ctx context.Context, name string, opts LockOptions, waitMS int64, reqID string) (wire.Lock, error) {
	req := &wire.LockAcquireRequest{Name: name, Mode: opts.Mode, Scope: opts.Scope, WaitMS: waitMS, RequestID: reqID}
	var resp wire.LockAcquireResponse
	if err := s.do(ctx, wire.SubjectLockAcquire, req, &resp); err != nil {
		return wire.Lock{}, err
	}
	if resp.Lock == nil {
		return wire.Lock{}, &wire.Error{Code: wire.CodeInternal, Message: "acquire reply without a lock"}
	}
	return *resp.Lock, nil
}

// withdraw abandons an acquire the caller gave up on, waiting for the lock service's
// answer no longer than withdrawWait: the caller's deadline has passed already, and
// a service slow to answer must not hold it seconds more. The withdrawal goes on in
// the background, in the caller's trace (ctx's values, not its end), counted in
// s.lockWork when counted is set (only by a caller counted there already: runWait).
func (s *Session) withdraw(ctx context.Context, name, reqID string, opts LockOptions, counted bool) {
	ctx = context.WithoutCancel(ctx)
	done := make(chan struct{})
	if counted {
		s.lockWork.Add(1)
	}
	go func() {
		defer close(done)
		if counted {
			defer s.lockWork.Done()
		}
		s.abandon(ctx, name, reqID, opts)
	}()
	t := time.NewTimer(withdrawWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// withdrawWait is how long Lock waits for a withdrawal's answer before it returns;
// abandonTimeout bounds the withdrawal itself.
const withdrawWait = 200 * time.Millisecond

var abandonTimeout = 5 * time.Second

// abandon withdraws an acquire the caller gave up on, whatever became of it: the
// server's cancel takes it out of the queue, releases the hold it was granted unless
// another request of the session was answered with that hold too (another Lock of
// this session keeps its lock), and refuses it should it arrive later.
//
// A withdrawal whose outcome is unknown is sent again later (abandonLater): one
// answered unavailable, and one not answered within abandonTimeout (ErrTimeout: the
// instance that took it died, or it was lost on the way). Given up on no answer, it
// left the request queued, to be granted when the lock came free — on a reply
// subject nobody reads any more — and the session held the lock, unknown to it and
// never released, until it ended.
func (s *Session) abandon(ctx context.Context, name, reqID string, opts LockOptions) {
	ctx, cancel := context.WithTimeout(ctx, abandonTimeout)
	defer cancel()
	err := s.do(ctx, wire.SubjectLockCancel, &wire.LockCancelRequest{Name: name, RequestID: reqID}, &wire.LockCancelResponse{})
	switch {
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrTimeout):
		s.abandonLater(name, reqID, opts)
	case err != nil && !errors.Is(err, ErrNotFound):
		s.c.log.Debug("roster: withdrawing a lock request failed", "lock", name, "err", err)
	}
}

// abandoned is a lock request given up while the server could not be told.
type abandoned struct {
	name, reqID string
	opts        LockOptions
}

// abandonLater withdraws the request when the session is reachable again: after a
// resume, or at the next heartbeat.
func (s *Session) abandonLater(name, reqID string, opts LockOptions) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.abandoned = append(s.abandoned, abandoned{name, reqID, opts})
}

// abandonPending withdraws the requests given up while the server could not be told.
func (s *Session) abandonPending(ctx context.Context) {
	s.mu.Lock()
	pending := s.abandoned
	s.abandoned = nil
	s.mu.Unlock()
	if len(pending) == 0 {
		return
	}
	for _, a := range pending {
		s.abandon(ctx, a.name, a.reqID, a.opts)
	}
}

// withdrawLeftovers withdraws, before Client.Close closes the connection, the lock
// requests a session taken with Attach leaves behind: that session stays open on
// the server, and a request left waiting there would be granted to it with nobody
// to use or release the lock. The Lock calls have given up (finish); this waits,
// while ctx allows, for their requests to be withdrawn, then withdraws those given
// up while the lock service could not be told.
func (s *Session) withdrawLeftovers(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		s.lockWork.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return
	}
	if s.c.nc.IsConnected() {
		s.abandonPending(ctx)
	}
}

// ListLocks returns one page of the locks whose names start with req.Prefix, with
// their holders and waiters (VIEW_LOCKS). Pass the returned Next as req.After for
// the next page.
func (s *Session) ListLocks(ctx context.Context, req wire.LockListRequest) (*wire.LockListResponse, error) {
	var resp wire.LockListResponse
	if err := s.do(ctx, wire.SubjectLockList, &req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Release releases the named lock held by the session, whichever process took it
// (a session handed over with Attach, say). A non-zero token must be the held
// lock's fencing token. It returns the released lock.
//
// A *Lock of this session that the release ends is no longer tracked, and its Lost
// closes (ErrLockLost): its holders learn that it was released without Unlock.
// When the release fails with ErrLockNotHeld and this SDK tracks a *Lock of the
// name that the answer says the session no longer holds (Release without a token,
// or with that lock's token) — released by another process acting as the session,
// which this one is not told of — that *Lock is dropped and reported lost too,
// with an Err matching ErrLockNotHeld.
func (s *Session) Release(ctx context.Context, name string, token uint64) (wire.Lock, error) {
	s.mu.Lock()
	before := s.locks[name] // tracked before the request: granted before it was handled
	s.mu.Unlock()
	var resp wire.LockReleaseResponse
	if err := s.do(ctx, wire.SubjectLockRelease, &wire.LockReleaseRequest{Name: name, Token: token}, &resp); err != nil {
		if errors.Is(err, ErrLockNotHeld) && before != nil && (token == 0 || before.info.Token == token) {
			s.loseTracked(before, fmt.Errorf("%w: %w", ErrLockLost, err))
			if token != 0 {
				s.forgetUnsure(name, token) // reported lost in doubt: not held either
			}
		}
		return wire.Lock{}, err
	}
	released := wire.Lock{Name: name, Token: token}
	if resp.Lock != nil {
		released = *resp.Lock
	}
	// Only the hold released: a grant of the name made after the release (a new
	// token) may have been tracked before this answer came.
	s.mu.Lock()
	l, ok := s.locks[name]
	if ok && (released.Token == 0 || l.info.Token == released.Token) {
		delete(s.locks, name)
	} else {
		l = nil
	}
	if released.Token != 0 && s.unsure[name] == released.Token {
		delete(s.unsure, name) // a hold reported lost in doubt, released by the caller
	}
	s.mu.Unlock()
	if l != nil {
		l.markLost(fmt.Errorf("%w: released by Session.Release (token %d)", ErrLockLost, released.Token))
	}
	return released, nil
}

// loseTracked stops tracking l, if it is still the session's lock of its name, and
// reports it lost with cause.
func (s *Session) loseTracked(l *Lock, cause error) {
	s.mu.Lock()
	tracked := s.locks[l.info.Name] == l
	if tracked {
		delete(s.locks, l.info.Name)
	}
	s.mu.Unlock()
	if tracked {
		l.markLost(cause)
	}
}

// Info returns the grant: name, mode, scope, session, token and when it was granted.
func (l *Lock) Info() wire.Lock {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.info
}

// Name returns the lock's name.
func (l *Lock) Name() string { return l.info.Name }

// Mode returns the mode the lock is held in.
func (l *Lock) Mode() wire.LockMode { return l.Info().Mode }

// Scope returns the lock's scope: a later acquire of the session may have weakened
// it to connection (seed 002: a lock is held with the weaker of the scopes asked).
func (l *Lock) Scope() wire.LockScope { return l.Info().Scope }

// Token returns the fencing token of the grant: it strictly increases for every
// grant of this lock name. Pass it to the resource the lock protects (see pkg/fence).
// A shared lock's holders each have the token of their own grant (those granted by
// one write share it), so a resource fencing by the highest token refuses all but
// the latest of them: fence writes made under an exclusive lock.
func (l *Lock) Token() uint64 { return l.info.Token }

// Lost is closed when the lock is released without Unlock, or may have been: by
// Session.Release (of this SDK; a release by another process acting as the session
// is known only once a Release here is answered lock_not_held, or the session is
// granted the name anew, with a higher token); its
// session closed; a connection-scoped lock's session lost its connection or was
// taken over by another client (see Attach); or the SDK could not confirm the
// session with the registry for so long that the server may have released the
// session's locks. That last one comes without the client having to reach the
// server: the SDK keeps the time it sent the latest request the registry answered
// with the session ACTIVE, and the server releases a session's locks no sooner
// than the smaller of its inactivity timeout and the registry's reconnect window
// after it (the window alone for a permanent session). Past that bound, with no
// newer answer — a network partition, say, which NATS may take minutes to notice —
// every lock of the session is reported lost, however it is held. If the session
// turns out to be alive (it is resumed, or a keepalive is answered), the holds so
// reported are released by their fencing tokens, so that the state converges;
// a new Lock of the name then gets a new grant.
//
// The holder must stop using the protected resource; fencing tokens keep a late
// writer out regardless.
func (l *Lock) Lost() <-chan struct{} { return l.lost }

// Err returns why the lock was lost, or nil. The error matches ErrLockLost and the
// cause: ErrSessionClosed when its session closed, ErrUnavailable when the
// connection of a connection-scoped lock's session was lost or the session moved to
// another client's, or when the session could not be confirmed in time (the
// message says its locks may have been released), ErrLockNotHeld when a Release
// found it released elsewhere.
func (l *Lock) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lostErr
}

// Unlock releases the lock. Releasing a lock that is no longer held returns an error
// matching ErrLockNotHeld. When the release fails otherwise (ErrUnavailable,
// ErrTimeout: it may not have happened), the lock stays tracked — Lost still reports
// its loss — and Unlock may be called again.
//
// The lock is the session's, held once however many calls got it: every Lock and
// TryLock of the session answered with it returned this same *Lock, and one Unlock
// releases it for all of them, as the server's release does (there is no count of
// holders). Goroutines sharing a lock agree among themselves which of them releases
// it; an Unlock by one does not close Lost for the others.
func (l *Lock) Unlock(ctx context.Context) error {
	err := l.s.do(ctx, wire.SubjectLockRelease, &wire.LockReleaseRequest{Name: l.info.Name, Token: l.info.Token}, &wire.LockReleaseResponse{})
	if err == nil || errors.Is(err, ErrLockNotHeld) || errors.Is(err, ErrSessionClosed) || errors.Is(err, ErrSessionNotFound) {
		l.s.untrackLock(l)
		l.s.forgetUnsure(l.info.Name, l.info.Token) // reported lost in doubt: released now
	}
	return err
}

func (l *Lock) markLost(cause error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lostErr != nil {
		return
	}
	l.lostErr = cause
	close(l.lost)
}

// trackLock returns the Lock for a grant. Two grants of one lock to the session
// are equal and share one Lock value, so that its loss is reported to every holder.
func (s *Session) trackLock(info wire.Lock) *Lock {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.trackLockLocked(info)
}

// trackLockLocked is trackLock with s.mu held.
func (s *Session) trackLockLocked(info wire.Lock) *Lock {
	if s.locks == nil {
		s.locks = map[string]*Lock{}
	}
	if l, ok := s.locks[info.Name]; ok && l.info.Token == info.Token {
		// The same hold: keep the one Lock value, with the scope the server holds
		// it in now (a connection scope asked for weakens a session-scoped hold).
		// Only the scope changes; it is read under l.mu.
		l.mu.Lock()
		l.info.Scope = info.Scope
		l.mu.Unlock()
		return l
	}
	l := &Lock{s: s, info: info, lost: make(chan struct{})}
	// The server holds one hold per session and name, and a hold's token never
	// changes: a grant with another token than the tracked lock's tells which of
	// the two holds is gone. A higher one was granted after the tracked hold ended
	// (released by another process acting as the session, say): that *Lock is lost.
	// A lower one is an answer older than the tracked hold, handled late: its hold
	// ended before the tracked one was granted.
	if old, ok := s.locks[info.Name]; ok && info.Token != 0 && old.info.Token != 0 {
		if info.Token < old.info.Token {
			l.lostErr = fmt.Errorf("%w: %w", ErrLockLost, &wire.Error{Code: wire.CodeLockNotHeld, Message: fmt.Sprintf(
				"lock %s token %d: a late answer; the session has held the lock since with token %d", info.Name, info.Token, old.info.Token)})
			close(l.lost)
			return l
		}
		delete(s.locks, info.Name)
		old.markLost(fmt.Errorf("%w: %w", ErrLockLost, &wire.Error{Code: wire.CodeLockNotHeld, Message: fmt.Sprintf(
			"lock %s token %d: the session was granted the lock anew (token %d), so that hold had been released", info.Name, old.info.Token, info.Token)}))
	}
	// A grant whose reply is handled after the session closed, or after the
	// connection it was taken on was lost or the session moved to another
	// client's connection (connection scope), missed loseLocks: tracked, its Lost
	// would never close. The server released it already, or, for a connection
	// the registry counted lost while it worked, may not have (keptHolds). (A session bound
	// elsewhere is granted no connection-scoped lock from here: one handled then
	// was made before the move.)
	switch {
	case s.state == StateClosed:
		l.lostErr = fmt.Errorf("%w: %w", ErrLockLost, s.closedErr())
		close(l.lost)
		return l
	case s.state == StateRecovering && info.Scope == wire.ScopeConnection:
		if s.keptHolds {
			// The server may still hold it, on the connection the session is
			// resumed on: released by its token once the session is confirmed, as
			// the holds connectionCountedLost reported lost are.
			s.unsureLocked(info)
		}
		l.lostErr = fmt.Errorf("%w: %w", ErrLockLost, errConnectionLost)
		close(l.lost)
		return l
	case s.elsewhere.Load() && info.Scope == wire.ScopeConnection:
		l.lostErr = fmt.Errorf("%w: %w", ErrLockLost, errSessionMoved)
		close(l.lost)
		return l
	case info.Scope == wire.ScopeConnection && s.c.nc.IsClosed():
		// Handled once Client.Close closed the connection, after it reported the
		// connection-scoped locks of its attached sessions lost: the server
		// releases this one with the connection.
		l.lostErr = fmt.Errorf("%w: %w", ErrLockLost, errClosedConn)
		close(l.lost)
		return l
	}
	// Handled while the session could not be confirmed, or an answer with a hold
	// reported lost then (doubt.go): nobody can vouch for it.
	if err := s.lostInDoubtLocked(info); err != nil {
		l.lostErr = err
		close(l.lost)
		return l
	}
	s.locks[info.Name] = l
	return l
}

func (s *Session) untrackLock(l *Lock) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locks[l.info.Name] == l {
		delete(s.locks, l.info.Name)
	}
}

// loseLocks reports held locks lost: every lock when the session closed, the
// connection-scoped ones when the connection was lost. With release set, the
// server may still hold them for the session, and they are released by their
// tokens once the session is confirmed, as the holds reported lost in doubt are
// (unsureLocked).
func (s *Session) loseLocks(onlyConnectionScoped bool, cause error) {
	s.dropLocks(onlyConnectionScoped, false, cause)
}

func (s *Session) dropLocks(onlyConnectionScoped, release bool, cause error) {
	s.mu.Lock()
	var lost []*Lock
	for name, l := range s.locks {
		if !onlyConnectionScoped || l.Scope() == wire.ScopeConnection {
			lost = append(lost, l)
			delete(s.locks, name)
			if release && s.state != StateClosed {
				s.unsureLocked(l.info)
			}
		}
	}
	s.mu.Unlock()
	for _, l := range lost {
		l.markLost(fmt.Errorf("%w: %w", ErrLockLost, cause))
	}
}
