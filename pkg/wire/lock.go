package wire

import (
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Lock request subjects, served by the lock service. Every one is session-scoped:
// the caller's session travels in the Roster-Session and Roster-Token headers.
const (
	// SubjectLockAcquire acquires a lock, trying once or waiting for it.
	SubjectLockAcquire = LockPrefix + ".acquire"
	// SubjectLockRelease releases a lock the caller's session holds.
	SubjectLockRelease = LockPrefix + ".release"
	// SubjectLockCancel withdraws a waiting acquire by its request id.
	SubjectLockCancel = LockPrefix + ".cancel"
	// SubjectLockList lists locks with their holders and waiters (VIEW_LOCKS).
	SubjectLockList = LockPrefix + ".list"
)

// LockMode says whether a lock is held alone or together with other readers.
type LockMode string

// Lock modes.
const (
	// LockExclusive (the default) is held by one session at a time.
	LockExclusive LockMode = "exclusive"
	// LockShared is held by any number of sessions at once, never beside an
	// exclusive holder.
	LockShared LockMode = "shared"
)

// Valid reports whether m is a known mode.
func (m LockMode) Valid() bool { return m == LockExclusive || m == LockShared }

// LockScope says when a held lock is released without an explicit release.
type LockScope string

// Lock scopes (seed 002's UNLOCK_ON_SESSION_LOSS and UNLOCK_ON_CONNECTION_LOSS).
const (
	// ScopeSession (the default) keeps the lock until the session closes or
	// expires.
	ScopeSession LockScope = "session"
	// ScopeConnection also releases the lock when the session loses its
	// connection, so that another session can take it while the first reconnects.
	ScopeConnection LockScope = "connection"
)

// Valid reports whether s is a known scope.
func (s LockScope) Valid() bool { return s == ScopeSession || s == ScopeConnection }

// Weaker returns the scope that releases the lock sooner of s and o: a session
// that asks for one lock with both scopes holds it with the weaker one.
func (s LockScope) Weaker(o LockScope) LockScope {
	if s == ScopeConnection || o == ScopeConnection {
		return ScopeConnection
	}
	return ScopeSession
}

// MaxLockNameLength bounds a lock name in characters, as the schema's maxLength
// counts them.
const MaxLockNameLength = 256

// ValidateLockName checks a lock name. Names are path-like, segments separated by
// "/", so that ACQUIRE_LOCK can be granted on patterns (update-topic/*): a name is
// 1 to MaxLockNameLength characters of UTF-8, has no empty segment (no leading,
// trailing or doubled "/"), and contains no control characters, no white space and
// neither of the pattern characters "*" and ">". Errors match ErrInvalidName.
func ValidateLockName(name string) error {
	switch {
	case name == "":
		return Errorf(CodeInvalidName, "a lock name must not be empty")
	case len(name) > MaxLockNameLength && utf8.RuneCountInString(name) > MaxLockNameLength:
		return Errorf(CodeInvalidName, "lock name is %d characters; the limit is %d", utf8.RuneCountInString(name), MaxLockNameLength)
	case !utf8.ValidString(name):
		return Errorf(CodeInvalidName, "lock name %q is not valid UTF-8", name)
	case strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") || strings.Contains(name, "//"):
		return Errorf(CodeInvalidName, "lock name %q has an empty path segment", name)
	}
	for _, r := range name {
		if unicode.IsControl(r) || unicode.IsSpace(r) || r == '*' || r == '>' {
			return Errorf(CodeInvalidName, "lock name %q: character %q is not allowed", name, r)
		}
	}
	return nil
}

// MaxRequestIDLength bounds a request id.
const MaxRequestIDLength = 64

// ValidateRequestID checks a client-chosen request id: 1 to MaxRequestIDLength
// characters from A-Z, a-z, 0-9, "-" and "_".
func ValidateRequestID(id string) error {
	if id == "" || len(id) > MaxRequestIDLength {
		return Errorf(CodeBadRequest, "request_id must be 1 to %d characters", MaxRequestIDLength)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return Errorf(CodeBadRequest, "request_id %q: character %q is not allowed (A-Z a-z 0-9 - _)", id, r)
		}
	}
	return nil
}

// WaitForever as LockAcquireRequest.WaitMS waits until the lock is granted, the
// request is cancelled or the session closes (one request is still bounded by the
// server's maximum wait; see LockAcquireRequest.WaitMS).
const WaitForever = -1

// LockAcquireRequest acquires the lock Name for the caller's session.
type LockAcquireRequest struct {
	Name string `json:"name"`
	// Mode is exclusive (default) or shared.
	Mode LockMode `json:"mode,omitempty" roster:"nonempty"`
	// Scope is session (default) or connection.
	Scope LockScope `json:"scope,omitempty" roster:"nonempty"`
	// WaitMS is how long to wait for the lock: 0 tries once, a positive value waits
	// up to that many milliseconds, WaitForever waits until cancelled.
	//
	// The server holds one request at most its maximum wait (60 s by default, below
	// the 2-minute response threshold of the clients' service import). A longer
	// wait is answered timeout at that bound while the request keeps its place in
	// the queue for a short while (10 s by default): a client whose own wait has
	// not ended re-issues the request with the same RequestID and keeps its place.
	WaitMS int64 `json:"wait_ms,omitempty"`
	// RequestID names a waiting request so that it can be cancelled; the server
	// picks one when it is empty. Re-issuing a request with the id of one still
	// waiting takes over its place in the queue (and a session that was granted the
	// lock meanwhile gets the equal lock).
	RequestID string `json:"request_id,omitempty" roster:"nonempty"`
}

// Validate checks the request and fills the defaults.
func (r *LockAcquireRequest) Validate() error {
	if err := ValidateLockName(r.Name); err != nil {
		return err
	}
	if r.Mode == "" {
		r.Mode = LockExclusive
	}
	if !r.Mode.Valid() {
		return Errorf(CodeBadRequest, "mode %q: want exclusive or shared", r.Mode)
	}
	if r.Scope == "" {
		r.Scope = ScopeSession
	}
	if !r.Scope.Valid() {
		return Errorf(CodeBadRequest, "scope %q: want session or connection", r.Scope)
	}
	if r.WaitMS < WaitForever {
		return Errorf(CodeBadRequest, "wait_ms %d: want 0 (try once), a positive wait or -1 (until cancelled)", r.WaitMS)
	}
	if r.RequestID != "" {
		return ValidateRequestID(r.RequestID)
	}
	return nil
}

// Lock is a granted lock. Two grants of one lock to one session are equal.
type Lock struct {
	Name    string    `json:"name"`
	Mode    LockMode  `json:"mode"`
	Scope   LockScope `json:"scope"`
	Session string    `json:"session"`
	// Token is the fencing token: it strictly increases with every grant of the
	// lock name (shared holders granted together share one), across restarts.
	Token     uint64    `json:"token"`
	GrantedAt time.Time `json:"granted_at"`
}

// LockAcquireResponse carries the granted lock.
type LockAcquireResponse struct {
	Lock *Lock `json:"lock"`
}

// LockReleaseRequest releases the lock Name held by the caller's session. A
// non-zero Token must be the held lock's token.
type LockReleaseRequest struct {
	Name  string `json:"name"`
	Token uint64 `json:"token,omitempty"`
}

// Validate checks the request.
func (r *LockReleaseRequest) Validate() error { return ValidateLockName(r.Name) }

// LockReleaseResponse carries the lock that was released.
type LockReleaseResponse struct {
	Lock *Lock `json:"lock"`
}

// LockCancelRequest withdraws the caller's acquire RequestID on Name, whatever
// became of it: a waiting one leaves the queue, a granted one is released (unless
// another request of the session holds the lock with it), and one the service has
// not seen yet is refused should it arrive.
type LockCancelRequest struct {
	Name      string `json:"name"`
	RequestID string `json:"request_id"`
}

// Validate checks the request.
func (r *LockCancelRequest) Validate() error {
	if err := ValidateLockName(r.Name); err != nil {
		return err
	}
	return ValidateRequestID(r.RequestID)
}

// LockCancelResponse acknowledges a cancel.
type LockCancelResponse struct {
	// Cancelled: the request was waiting and no longer is.
	Cancelled bool `json:"cancelled"`
	// Released: the request had been granted, and the hold it was answered with
	// is released (no other request of the session was answered with it).
	Released bool `json:"released,omitempty"`
}

// LockListRequest lists the locks whose name starts with Prefix (all when empty),
// ordered by name, at most Limit of them after the name After.
type LockListRequest struct {
	Prefix string `json:"prefix,omitempty"`
	After  string `json:"after,omitempty"`
	Limit  int    `json:"limit,omitempty"`
}

// Validate checks the request.
func (r *LockListRequest) Validate() error {
	if r.Limit < 0 {
		return Errorf(CodeBadRequest, "limit %d must not be negative", r.Limit)
	}
	return nil
}

// LockHolder is one holder of a lock.
type LockHolder struct {
	Session   string    `json:"session"`
	Mode      LockMode  `json:"mode"`
	Scope     LockScope `json:"scope"`
	Token     uint64    `json:"token"`
	GrantedAt time.Time `json:"granted_at"`
}

// LockWaiter is one waiting acquire, in queue order.
type LockWaiter struct {
	RequestID  string    `json:"request_id"`
	Session    string    `json:"session"`
	Mode       LockMode  `json:"mode"`
	Scope      LockScope `json:"scope"`
	EnqueuedAt time.Time `json:"enqueued_at"`
	// Until is the end of the wait; absent for a wait until cancelled.
	Until *time.Time `json:"until,omitempty"`
	// Detached: the request was answered at the server's bound on one request and
	// keeps its place until the client re-issues it (or a short while passes).
	Detached bool `json:"detached,omitempty"`
}

// LockInfo describes one lock.
type LockInfo struct {
	Name    string       `json:"name"`
	Holders []LockHolder `json:"holders"`
	Waiters []LockWaiter `json:"waiters"`
	// Revision is the KV revision the description was read at.
	Revision uint64 `json:"revision"`
}

// LockListResponse is one page of locks.
type LockListResponse struct {
	Locks []LockInfo `json:"locks"`
	// Next, when not empty, is the After of the next page.
	Next string `json:"next,omitempty"`
}
