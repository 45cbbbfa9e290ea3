package client

import (
	"errors"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// Errors returned by the SDK. Every error a Roster service sends matches one of these
// with errors.Is, whatever its message:
//
//	if errors.Is(err, client.ErrSessionClosed) { … }
//
// errors.As with *wire.Error gives the code and the server's message.
var (
	ErrBadRequest      = wire.ErrBadRequest
	ErrInvalidFilter   = wire.ErrInvalidFilter
	ErrInvalidName     = wire.ErrInvalidName
	ErrTooLarge        = wire.ErrTooLarge
	ErrUnauthenticated = wire.ErrUnauthenticated
	ErrInvalidToken    = wire.ErrInvalidToken
	ErrForbidden       = wire.ErrForbidden
	ErrNotFound        = wire.ErrNotFound
	ErrSessionNotFound = wire.ErrSessionNotFound
	ErrTimeout         = wire.ErrTimeout
	ErrConflict        = wire.ErrConflict
	ErrLockNotHeld     = wire.ErrLockNotHeld
	ErrStaleRequest    = wire.ErrStaleRequest
	ErrSessionClosed   = wire.ErrSessionClosed
	ErrLimitExceeded   = wire.ErrLimitExceeded
	ErrThrottled       = wire.ErrThrottled
	ErrInternal        = wire.ErrInternal
	// ErrUnavailable is returned when no Roster service answers, and for calls in
	// flight when the connection to NATS is lost or closed.
	ErrUnavailable = wire.ErrUnavailable
)

// ErrNotSent matches, besides ErrUnavailable, the error of a call made while the
// connection to NATS is away: its request was never sent, so it took no effect,
// and repeating it cannot apply it twice. A call in flight when the connection is
// lost matches ErrUnavailable alone: its request may have been applied.
var ErrNotSent = errors.New("the request was not sent")
