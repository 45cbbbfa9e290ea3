package client

import (
	"time"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// SetMaxHeldRequest sets the bound on one acquire request for a test, and returns
// a function that restores it.
func SetMaxHeldRequest(d time.Duration) (restore func()) {
	old := maxHeldRequest
	maxHeldRequest = d
	return func() { maxHeldRequest = old }
}

// MaxHandlers is the number of handlers one Handle runs at once.
const MaxHandlers = maxHandlers

// SetAbandonTimeout sets the bound on withdrawing a lock request for a test, and
// returns a function that restores it.
func SetAbandonTimeout(d time.Duration) (restore func()) {
	old := abandonTimeout
	abandonTimeout = d
	return func() { abandonTimeout = old }
}

// WaitingLockCalls returns how many Lock calls of s wait for the named lock, in
// every mode and scope.
func WaitingLockCalls(s *Session, name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, w := range s.waits {
		if k.name == name {
			n += w.callers
		}
	}
	return n
}

// SetDedupLimits sets the receivers' de-duplication window, its number of messages
// and the largest answer it keeps, for a test, and returns a function that restores
// them.
func SetDedupLimits(window time.Duration, entries, maxAnswer int) (restore func()) {
	w, e, a := dedupWindow, dedupMaxEntries, dedupMaxAnswer
	dedupWindow, dedupMaxEntries, dedupMaxAnswer = window, entries, maxAnswer
	return func() { dedupWindow, dedupMaxEntries, dedupMaxAnswer = w, e, a }
}

// TrackLock records a grant of info to s, as a Lock call's reply does.
func TrackLock(s *Session, info wire.Lock) *Lock { return s.trackLock(info) }

// HandlerDeliveries returns how many messages the subscriptions of s's handlers
// have passed to their callbacks (which run one at a time, and queue each message
// for a handler slot).
func HandlerDeliveries(s *Session) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for sub := range s.handlers {
		if d, err := sub.Delivered(); err == nil {
			n += int(d)
		}
	}
	return n
}

// UnsureLocks returns how many holds of s were reported lost while the session
// could not be confirmed and are not yet known released.
func UnsureLocks(s *Session) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.unsure)
}

// DoubtNow makes s's bound pass now, as if no request had been answered for that
// long, and reports its locks lost as the timer would.
func DoubtNow(s *Session) {
	s.mu.Lock()
	s.doubtAt = time.Now()
	s.mu.Unlock()
	s.doubtCheck()
}

// TrackedLock returns the token of the lock named name that s tracks as held, if
// it tracks one.
func TrackedLock(s *Session, name string) (token uint64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.locks[name]
	if !ok {
		return 0, false
	}
	return l.info.Token, true
}

// SetFollowBackoff sets the first and the largest pause of FollowEvents after a
// failed read, for a test, and returns a function that restores them.
func SetFollowBackoff(first, most time.Duration) (restore func()) {
	f, m := followBackoffFirst, followBackoffMax
	followBackoffFirst, followBackoffMax = first, most
	return func() { followBackoffFirst, followBackoffMax = f, m }
}

// WaitLockWork waits until every withdrawal of s's Lock calls has been answered or
// has given up (abandonTimeout): Lock itself waits withdrawWait at most.
func WaitLockWork(s *Session) { s.lockWork.Wait() }

// SetHandleRegistering makes Handle call fn once its subscription is made, before
// it registers it with the session, for a test, and returns a function that
// restores the default (no call).
func SetHandleRegistering(fn func()) (restore func()) {
	handleRegistering = fn
	return func() { handleRegistering = nil }
}
