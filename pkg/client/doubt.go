package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// A session's locks outlive a lost connection on the server: the registry keeps the
// session RECOVERING for its reconnect window, then closes it failed, and a silent
// session expires after its inactivity timeout — either way its locks are
// released. A client cut off from NATS without noticing (a partition: the TCP
// connection stays open and silent, and NATS may take minutes to call it dead)
// learned of that only when it reached the server again, long after another
// session could have been granted the lock.
//
// So the SDK keeps the time it sent the latest request that the registry answered
// with the session ACTIVE (open, resume, a keepalive, Refresh): the session was
// ACTIVE at some moment after that send, and the registry releases the locks no
// sooner than the smaller of the reconnect window and the inactivity timeout after
// it (the window alone for a permanent session). When that much time passes with no
// newer answer, every lock of the session is reported lost (doubtCheck). The
// registry's reasoning, in services/registry (tracker.deadlineLocked):
//
//   - the timeout runs from the session's last activity, which the registry stamps
//     on receipt of a request — after the client sent it — plus ExpiryGrace;
//   - the window runs from RecoveringSince, stamped when the registry learns the
//     session's connection closed (or takes it for lost). A session answered ACTIVE
//     was not RECOVERING when the answer was made, so a later RecoveringSince comes
//     after the send; the resume that ended an earlier one cleared it.
//
// Both are measured on the registry's clock, the bound on this client's monotonic
// one. docs/architecture.md ("Lock", "A holder cut off from the server") has the
// limits (a registry instance answering from a lagging copy of the record, clock
// rates).

// defaultReconnectWindow is the registry's default reconnect window, assumed until
// the registry says (registries before reconnect_window_ms do not).
const defaultReconnectWindow = 30 * time.Second

// boundLocked is how long after a confirmed request the registry may release the
// session's locks without this client's doing: the smaller of the reconnect window
// and the inactivity timeout (the window alone for a permanent session).
func (s *Session) boundLocked() time.Duration {
	b := s.window
	if b <= 0 {
		b = defaultReconnectWindow
	}
	if t := time.Duration(s.info.TimeoutMS) * time.Millisecond; !s.info.Permanent && t > 0 {
		b = min(b, t)
	}
	return b
}

// learnWindowLocked takes the reconnect window a reply carried (0: not said).
// A new one is passed on to the heartbeats, whose default interval follows it.
func (s *Session) learnWindowLocked(ms int64) {
	if w := time.Duration(ms) * time.Millisecond; w > 0 && w != s.window {
		s.window = w
		select {
		case s.windowSet <- struct{}{}:
		default: // one already waits to be seen
		}
	}
}

// confirmed records that a request sent at sent (time.Now, monotonic) was answered
// with the session ACTIVE, with the reconnect window the answer carried, and moves
// the time its locks are reported lost to the bound past it.
func (s *Session) confirmed(sent time.Time, windowMS int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.learnWindowLocked(windowMS)
	if s.state == StateClosed || sent.Before(s.confirmedAt) || !s.servedLocked() {
		return
	}
	s.confirmedAt = sent
	s.doubtAt = sent.Add(s.boundLocked())
	if s.doubtTimer == nil {
		s.doubtTimer = time.AfterFunc(time.Until(s.doubtAt), s.doubtCheck)
		return
	}
	s.doubtTimer.Reset(time.Until(s.doubtAt))
}

// inDoubtLocked reports whether the bound past the last confirmation has passed:
// the registry may have released the session's locks.
func (s *Session) inDoubtLocked() bool {
	return !s.doubtAt.IsZero() && !time.Now().Before(s.doubtAt)
}

// doubtError is the cause of locks reported lost because the session could not be
// confirmed in time. It matches ErrUnavailable.
func (s *Session) doubtErrorLocked() error {
	return &wire.Error{Code: wire.CodeUnavailable, Message: fmt.Sprintf(
		"session %s not confirmed by the registry within %v of the last request it answered: its locks may have been released",
		s.id, s.boundLocked())}
}

// doubtCheck runs when the bound past the last confirmation passes: unless a newer
// confirmation moved it, every lock of the session is reported lost, and noted for
// release once the session is confirmed again (it may still be held).
func (s *Session) doubtCheck() {
	s.mu.Lock()
	if s.state == StateClosed || !s.inDoubtLocked() {
		s.mu.Unlock()
		return
	}
	cause := fmt.Errorf("%w: %w", ErrLockLost, s.doubtErrorLocked())
	var lost []*Lock
	for name, l := range s.locks {
		lost = append(lost, l)
		delete(s.locks, name)
		s.unsureLocked(l.info)
	}
	s.mu.Unlock()
	if len(lost) > 0 {
		s.c.log.Warn("roster: session not confirmed in time; its locks are reported lost", "session", s.id, "locks", len(lost))
	}
	for _, l := range lost {
		l.markLost(cause)
	}
}

// unsureLocked notes a hold reported lost in doubt: the server may still hold it
// for the session, nobody here will use it, and it is released by its token once the
// session is confirmed (releaseUnsure). A later grant of the name with a token no
// higher is that hold, or an older one: stale (trackLockLocked).
func (s *Session) unsureLocked(info wire.Lock) {
	if s.unsure == nil {
		s.unsure = map[string]uint64{}
		s.lostTokens = map[string]uint64{}
	}
	s.unsure[info.Name] = info.Token
	s.lostTokens[info.Name] = max(s.lostTokens[info.Name], info.Token)
}

// lostInDoubtLocked returns the error a grant is reported lost with at once, or nil:
// a grant handled while the session is in doubt cannot be vouched for, and one no
// newer than a hold reported lost in doubt is that hold (or an older one), which is
// released or about to be. The first is noted for release.
func (s *Session) lostInDoubtLocked(info wire.Lock) error {
	switch {
	case s.inDoubtLocked():
		s.unsureLocked(info)
		return fmt.Errorf("%w: %w", ErrLockLost, s.doubtErrorLocked())
	case info.Token != 0 && info.Token <= s.lostTokens[info.Name]:
		return fmt.Errorf("%w: %w", ErrLockLost, &wire.Error{Code: wire.CodeUnavailable, Message: fmt.Sprintf(
			"lock %s token %d: a late answer with a hold reported lost while session %s could not be confirmed, which is released",
			info.Name, info.Token, s.id)})
	}
	return nil
}

// releaseUnsure releases, by their tokens, the holds reported lost in doubt, once
// the session is confirmed again: it was still alive, so the server still holds
// them for it. The token makes sure that only that hold goes: a grant made since,
// to this session or another, has a higher one. Those the lock service cannot be
// asked about now are tried again at the next confirmation.
//
// The releases go out together, bounded as one, on settleLockWork's goroutine.
func (s *Session) releaseUnsure() {
	s.mu.Lock()
	pending := maps.Clone(s.unsure)
	s.mu.Unlock()
	if len(pending) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), abandonTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for name, token := range pending {
		wg.Go(func() {
			if err := s.releaseUnsureHold(ctx, name, token); err != nil {
				s.c.log.Debug("roster: releasing a lock reported lost failed; will retry", "lock", name, "err", err)
			}
		})
	}
	wg.Wait()
}

// releaseUnsureHold releases one hold reported lost in doubt.
func (s *Session) releaseUnsureHold(ctx context.Context, name string, token uint64) error {
	err := s.do(ctx, wire.SubjectLockRelease, &wire.LockReleaseRequest{Name: name, Token: token}, &wire.LockReleaseResponse{})
	if err == nil || errors.Is(err, ErrLockNotHeld) {
		s.forgetUnsure(name, token)
		return nil
	}
	return err
}

// forgetUnsure drops a hold reported lost in doubt once it is known released.
func (s *Session) forgetUnsure(name string, token uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.unsure[name] == token {
		delete(s.unsure, name)
	}
}

// settleUnsure releases the hold of name reported lost in doubt, if there is one,
// before a new acquire of it: the server would answer the acquire with that hold
// (the session holds it), which a release then takes away under the new Lock. It
// fails when the release cannot be made now.
func (s *Session) settleUnsure(ctx context.Context, name string) error {
	s.mu.Lock()
	token, ok := s.unsure[name]
	s.mu.Unlock()
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, abandonTimeout)
	defer cancel()
	if err := s.releaseUnsureHold(ctx, name, token); err != nil {
		return fmt.Errorf("lock %s: the hold reported lost while the session could not be confirmed (token %d) must be released first: %w", name, token, err)
	}
	return nil
}

// servedLocked reports whether the session is still served here (finish has not
// run): no timer starts after it.
func (s *Session) servedLocked() bool {
	select {
	case <-s.stopHB:
		return false
	default:
		return true
	}
}

// stopDoubtLocked ends the doubt timer: the session is closed, or no longer
// served here.
func (s *Session) stopDoubtLocked() {
	if s.doubtTimer != nil {
		s.doubtTimer.Stop()
	}
	s.doubtAt = time.Time{}
	s.unsure = nil
}
