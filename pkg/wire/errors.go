package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"unicode/utf8"
)

// Code is a stable, machine-readable error code. Codes never change meaning once
// published; new ones are added to the registry below and to schemas/errors.json
// (make generate writes it, and a test fails when the two differ).
type Code string

// The registered error codes.
const (
	CodeBadRequest      Code = "bad_request"
	CodeInvalidFilter   Code = "invalid_filter"
	CodeInvalidName     Code = "invalid_name"
	CodeTooLarge        Code = "too_large"
	CodeUnauthenticated Code = "unauthenticated"
	CodeInvalidToken    Code = "invalid_token"
	CodeForbidden       Code = "forbidden"
	CodeNotFound        Code = "not_found"
	CodeSessionNotFound Code = "session_not_found"
	CodeTimeout         Code = "timeout"
	CodeConflict        Code = "conflict"
	CodeLockNotHeld     Code = "lock_not_held"
	CodeStaleRequest    Code = "stale_request"
	CodeSessionClosed   Code = "session_closed"
	CodeLimitExceeded   Code = "limit_exceeded"
	CodeThrottled       Code = "throttled"
	CodeInternal        Code = "internal"
	CodeUnavailable     Code = "unavailable"
)

// CodeInfo documents one registered code.
type CodeInfo struct {
	Code        Code   `json:"code"`
	Status      int    `json:"status"`
	Description string `json:"description"`
}

var registry = []CodeInfo{
	{CodeBadRequest, 400, "The request is malformed: invalid JSON, unknown fields, wrong types, or a value out of range. The message names the field."},
	{CodeInvalidFilter, 400, "A session filter does not parse or does not compile. The message names the position and what was expected."},
	{CodeInvalidName, 400, "A lock name, message path or property key is empty or contains characters that are not allowed."},
	{CodeTooLarge, 413, "The request or a payload in it is larger than allowed; the message gives the limit."},
	{CodeUnauthenticated, 401, "Credentials are missing or were not accepted. The message never says whether a user exists."},
	{CodeInvalidToken, 401, "The session token does not match the session, or was rotated."},
	{CodeForbidden, 403, "The caller is authenticated but lacks the permission the operation needs; the message names it. Also the answer to a held request whose session lost the permission while it was held: a waiting lock acquire (ACQUIRE_LOCK), a waiting read of other sessions' events (VIEW_SESSION)."},
	{CodeNotFound, 404, "The named object (lock, waiter, policy entry) does not exist."},
	{CodeSessionNotFound, 404, "No session with that id has ever been known to this Roster, or its record is gone."},
	{CodeTimeout, 408, "The operation did not complete within the time the caller allowed (e.g. waiting for a lock)."},
	{CodeConflict, 409, "A concurrent change won; the operation can be retried."},
	{CodeLockNotHeld, 409, "The session does not hold the lock it tried to release or use."},
	{CodeStaleRequest, 409, "A copy of a request that was already answered for good arrived late (a retry overtook it); it changed nothing. For an acquire: not granted — re-issue with a new request id to wait again. As a receiver's result of a message request: the receiver handled a copy with the same message id already and no longer keeps its answer."},
	{CodeSessionClosed, 410, "The session is closed; every later request naming it gets this error."},
	{CodeLimitExceeded, 429, "A configured limit was reached (sessions per principal, properties, in-flight requests …); the message says which."},
	{CodeThrottled, 429, "Too many failed attempts; retry later."},
	{CodeInternal, 500, "An unexpected server error. The cause is logged on the server, never sent to the client."},
	{CodeUnavailable, 503, "A service or its storage is not available right now; retry later."},
}

var byCode = func() map[Code]CodeInfo {
	m := make(map[Code]CodeInfo, len(registry))
	for _, c := range registry {
		if _, dup := m[c.Code]; dup {
			panic("wire: duplicate error code " + string(c.Code))
		}
		m[c.Code] = c
	}
	return m
}()

// Codes returns the registry, sorted by code.
func Codes() []CodeInfo {
	out := append([]CodeInfo(nil), registry...)
	sort.Slice(out, func(i, j int) bool { return out[i].Code < out[j].Code })
	return out
}

// Status returns the HTTP-like class of a code; unknown codes are 500.
func (c Code) Status() int {
	if info, ok := byCode[c]; ok {
		return info.Status
	}
	return 500
}

// Known reports whether c is in the registry.
func (c Code) Known() bool {
	_, ok := byCode[c]
	return ok
}

// Error is an error as it travels on the wire.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string {
	if e.Message == "" {
		return string(e.Code)
	}
	return string(e.Code) + ": " + e.Message
}

// Is matches any *Error with the same code, so errors.Is(err, wire.ErrSessionClosed)
// holds for every session_closed error whatever its message.
func (e *Error) Is(target error) bool {
	var t *Error
	if errors.As(target, &t) {
		return t.Code == e.Code
	}
	return false
}

// Status returns the HTTP-like class of the error.
func (e *Error) Status() int { return e.Code.Status() }

// Sentinel errors, one per code, for errors.Is.
var (
	ErrBadRequest      = &Error{Code: CodeBadRequest}
	ErrInvalidFilter   = &Error{Code: CodeInvalidFilter}
	ErrInvalidName     = &Error{Code: CodeInvalidName}
	ErrTooLarge        = &Error{Code: CodeTooLarge}
	ErrUnauthenticated = &Error{Code: CodeUnauthenticated}
	ErrInvalidToken    = &Error{Code: CodeInvalidToken}
	ErrForbidden       = &Error{Code: CodeForbidden}
	ErrNotFound        = &Error{Code: CodeNotFound}
	ErrSessionNotFound = &Error{Code: CodeSessionNotFound}
	ErrTimeout         = &Error{Code: CodeTimeout}
	ErrConflict        = &Error{Code: CodeConflict}
	ErrLockNotHeld     = &Error{Code: CodeLockNotHeld}
	ErrStaleRequest    = &Error{Code: CodeStaleRequest}
	ErrSessionClosed   = &Error{Code: CodeSessionClosed}
	ErrLimitExceeded   = &Error{Code: CodeLimitExceeded}
	ErrThrottled       = &Error{Code: CodeThrottled}
	ErrInternal        = &Error{Code: CodeInternal}
	ErrUnavailable     = &Error{Code: CodeUnavailable}
)

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorBody is the JSON body of an error reply.
type ErrorBody struct {
	Error *Error `json:"error"`
}

// CodeOf returns the code err is answered with on the wire: its *Error's code when
// that is a registered one, internal otherwise (see EncodeError).
func CodeOf(err error) Code {
	var we *Error
	if errors.As(err, &we) && we.Code.Known() {
		return we.Code
	}
	return CodeInternal
}

// EncodeError renders err as the status header value and JSON body of an error reply.
// An error that is not a *Error becomes internal with a generic message: causes are
// logged by the service, never sent.
func EncodeError(err error) (status string, message string, body []byte) {
	var we *Error
	if !errors.As(err, &we) || !we.Code.Known() {
		we = &Error{Code: CodeInternal, Message: "internal error"}
	}
	body, _ = json.Marshal(ErrorBody{Error: we})
	msg := we.Message
	if msg == "" {
		msg = string(we.Code)
	}
	return strconv.Itoa(we.Status()), headerMessage(msg), body
}

// maxHeaderMessage bounds the message an error reply repeats in its header; the body
// carries it whole. A message echoing a large input would otherwise be sent twice,
// and could make the reply too large to send at all.
const maxHeaderMessage = 1024

func headerMessage(msg string) string {
	if len(msg) <= maxHeaderMessage {
		return msg
	}
	cut := maxHeaderMessage
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + "…"
}

// DecodeError turns an error reply (status header, message header and body) into an
// *Error. A body without a registered code keeps the class from the status header.
func DecodeError(status, message string, body []byte) *Error {
	var eb ErrorBody
	if json.Unmarshal(body, &eb) == nil && eb.Error != nil && eb.Error.Code != "" {
		return eb.Error
	}
	code := CodeInternal
	if n, err := strconv.Atoi(status); err == nil {
		for _, c := range registry {
			if c.Status == n {
				code = c.Code
				break
			}
		}
	}
	return &Error{Code: code, Message: message}
}
