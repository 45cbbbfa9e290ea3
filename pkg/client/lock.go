package client

import (
	"context"
	"errors"
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

// Lock is a lock held by a session.
type Lock struct {
	s    *Session
	info wire.Lock

	mu      sync.Mutex
	lost    chan struct{}
	lostErr error
}

// ErrLockLost is the cause reported by (*Lock).Err when the lock was released
// without Unlock: its session closed, or a connection-scoped lock's session lost its
// connection.
var ErrLockLost = errors.New("client: lock lost")

// Lock acquires the named lock, waiting until it is granted or ctx ends (the waiting
// request is then withdrawn). A session that already holds the lock gets an equal
// Lock with the same fencing token. TryLock does not wait.
func (s *Session) Lock(ctx context.Context, name string, opts LockOptions) (*Lock, error) {
	reqID := nuid.Next()
	for {
		wait := int64(wire.WaitForever)
		if dl, ok := ctx.Deadline(); ok {
			wait = max(time.Until(dl).Milliseconds(), 1)
		}
		l, err := s.acquire(ctx, name, opts, wait, reqID)
		switch {
		case err == nil:
			return l, nil
		case ctx.Err() != nil:
			s.cancelWait(name, reqID)
			return nil, err
		case errors.Is(err, ErrTimeout):
			if _, bounded := ctx.Deadline(); !bounded {
				continue // the server's wait bound passed: wait again, keeping our place
			}
			return nil, err
		default:
			return nil, err
		}
	}
}

// TryLock acquires the named lock if it is free now, and fails with ErrTimeout
// otherwise.
func (s *Session) TryLock(ctx context.Context, name string, opts LockOptions) (*Lock, error) {
	return s.acquire(ctx, name, opts, 0, "")
}

func (s *Session) acquire(ctx context.Context, name string, opts LockOptions, waitMS int64, reqID string) (*Lock, error) {
	req := &wire.LockAcquireRequest{Name: name, Mode: opts.Mode, Scope: opts.Scope, WaitMS: waitMS, RequestID: reqID}
	var resp wire.LockAcquireResponse
	if err := s.do(ctx, wire.SubjectLockAcquire, req, &resp); err != nil {
		return nil, err
	}
	if resp.Lock == nil {
		return nil, &wire.Error{Code: wire.CodeInternal, Message: "acquire reply without a lock"}
	}
	l := &Lock{s: s, info: *resp.Lock, lost: make(chan struct{})}
	s.trackLock(l)
	return l, nil
}

// cancelWait withdraws a waiting acquire after the caller gave up on it.
func (s *Session) cancelWait(name, reqID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.do(ctx, wire.SubjectLockCancel, &wire.LockCancelRequest{Name: name, RequestID: reqID}, &wire.LockCancelResponse{})
	// A grant may have raced the cancel: release what we may hold. A session that
	// held the lock before this call keeps it only if the caller did not ask again.
}

// Name returns the lock's name.
func (l *Lock) Name() string { return l.info.Name }

// Mode returns the mode the lock is held in.
func (l *Lock) Mode() wire.LockMode { return l.info.Mode }

// Scope returns the lock's scope.
func (l *Lock) Scope() wire.LockScope { return l.info.Scope }

// Token returns the fencing token of the grant: it strictly increases for every
// grant of this lock name. Pass it to the resource the lock protects (see pkg/fence).
func (l *Lock) Token() uint64 { return l.info.Token }

// Lost is closed when the lock is released without Unlock: its session closed, or
// a connection-scoped lock's session lost its connection. The holder must stop using
// the protected resource; fencing tokens keep a late writer out regardless.
func (l *Lock) Lost() <-chan struct{} { return l.lost }

// Err returns why the lock was lost, or nil.
func (l *Lock) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lostErr
}

// Unlock releases the lock. Releasing a lock that is no longer held returns an error
// matching ErrLockNotHeld.
func (l *Lock) Unlock(ctx context.Context) error {
	err := l.s.do(ctx, wire.SubjectLockRelease, &wire.LockReleaseRequest{Name: l.info.Name, Token: l.info.Token}, &wire.LockReleaseResponse{})
	l.s.untrackLock(l)
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

// trackLock remembers a held lock so that it can be reported lost.
func (s *Session) trackLock(l *Lock) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locks == nil {
		s.locks = map[*Lock]struct{}{}
	}
	s.locks[l] = struct{}{}
}

func (s *Session) untrackLock(l *Lock) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.locks, l)
}

// loseLocks reports held locks lost: every lock when the session closed, the
// connection-scoped ones when the connection was lost.
func (s *Session) loseLocks(onlyConnectionScoped bool, cause error) {
	s.mu.Lock()
	var lost []*Lock
	for l := range s.locks {
		if !onlyConnectionScoped || l.info.Scope == wire.ScopeConnection {
			lost = append(lost, l)
			delete(s.locks, l)
		}
	}
	s.mu.Unlock()
	for _, l := range lost {
		l.markLost(errors.Join(ErrLockLost, cause))
	}
}
