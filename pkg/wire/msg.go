package wire

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Messaging request subjects, served by the messaging service. Both are
// session-scoped: the sender is the session named by Roster-Session/Roster-Token.
const (
	// SubjectMsgSend sends a message to one session or to every session matching a
	// filter, and replies with how many it was delivered to.
	SubjectMsgSend = MessagingPrefix + ".send"
	// SubjectMsgRequest sends a request to one session or to every session matching
	// a filter and returns, for each, its response, its error or a timeout.
	SubjectMsgRequest = MessagingPrefix + ".request"
)

// Message paths name what a message is about (chat/room1, orders/updates). A receiver
// registers a handler per path; permissions are scoped to paths.
//
// A path is 1 to MaxPathLength bytes of segments separated by single '/'. A segment is
// 1 to 64 bytes of ASCII letters, digits and - _ ~ = : @ + , ! (no '.', '*', '>',
// '$', white space or '/'). The first segment may not start with '_' or '$'
// (reserved for Roster's own subjects under a session's deliveries). A path maps to
// NATS subject tokens by replacing each '/' with '.', which is reversible because no
// segment contains '.'.
const (
	MaxPathLength   = 256
	MaxPathSegments = 16
	maxSegment      = 64
)

// DefaultContentType is the content type of a delivery whose sender named none.
const DefaultContentType = "application/octet-stream"

// HeaderRequestID carries, on a delivery that is a request, the id the messaging
// service gave the fan-out it belongs to (for logs and traces; not secret).
const HeaderRequestID = "Roster-Request-Id"

// HeaderMessageID carries, on a delivery, the Message.MessageID its sender gave the
// message: the same on every delivery of one send or request, and on every retry of
// it. A receiver that has already handled a delivery from the same sender on the
// same path with the same id handles a copy as a duplicate (see Message.MessageID).
const HeaderMessageID = "Roster-Message-Id"

// MaxMessageIDLength bounds a message id.
const MaxMessageIDLength = 64

// ValidMessageID reports whether s can be a message id: 1 to MaxMessageIDLength
// ASCII letters, digits, '-' or '_' (as a lock request id; a header value as it is).
func ValidMessageID(s string) bool { return ValidStreamID(s) }

// resultsToken is the token, after the session id, under which the messaging service
// streams request results to the requesting session. Paths cannot start with '_'.
const resultsToken = "_results"

// stateToken is the token, after the session id, of the subject on which the
// registry tells the connection a session is bound to that the session closed.
const stateToken = "_state"

// SessionStateSubject returns the subject on which the connection with key, to which
// session id is bound, is told that the session closed:
// roster.v1.deliver.<key>.<session id>._state (body SessionStateNotice).
func SessionStateSubject(key, id string) string {
	return SessionDeliverPrefix(key, id) + "." + stateToken
}

// ConnectionStateSubjects returns the subscription that receives the
// SessionStateSubject messages of every session bound to the connection with key.
func ConnectionStateSubjects(key string) string {
	return ConnectionDeliverPrefix(DeliveryKey(key)) + ".*." + stateToken
}

// SessionStateNotice tells a session's connection that the session closed, and why:
// at once, where the next keepalive would otherwise learn it. With Moved it tells
// the connection the session was bound to that another client resumed it on its own
// connection: this one no longer receives the session's deliveries, and the
// connection-scoped locks taken on it are released. Revision is the record's after
// the move, so that a notice arriving after the client took the session back (a
// later revision) is told apart.
type SessionStateNotice struct {
	SessionID string       `json:"session_id"`
	State     SessionState `json:"state"`
	Reason    CloseReason  `json:"reason,omitempty"`
	Moved     bool         `json:"moved,omitempty"`
	Revision  uint64       `json:"revision,omitempty"`
}

// ValidatePath checks a message path (see the rule above). Errors match
// ErrInvalidName.
func ValidatePath(path string) error {
	if path == "" {
		return Errorf(CodeInvalidName, "the message path must not be empty")
	}
	if len(path) > MaxPathLength {
		return Errorf(CodeInvalidName, "the message path is %d bytes; the limit is %d", len(path), MaxPathLength)
	}
	if path[0] == '_' || path[0] == '$' {
		return Errorf(CodeInvalidName, "message path %q: a path may not start with %q", path, path[0])
	}
	segs := 0
	for seg := range strings.SplitSeq(path, "/") {
		segs++
		if seg == "" {
			return Errorf(CodeInvalidName, "message path %q has an empty segment", path)
		}
		if len(seg) > maxSegment {
			return Errorf(CodeInvalidName, "message path %q: a segment is longer than %d bytes", path, maxSegment)
		}
		for i := 0; i < len(seg); i++ {
			if !pathChar(seg[i]) {
				return Errorf(CodeInvalidName, "message path %q: character %q is not allowed (letters, digits and - _ ~ = : @ + , ! only)", path, seg[i])
			}
		}
	}
	if segs > MaxPathSegments {
		return Errorf(CodeInvalidName, "message path %q has %d segments; the limit is %d", path, segs, MaxPathSegments)
	}
	return nil
}

func pathChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-_~=:@+,!", c) >= 0
}

// PathTokens returns the subject tokens of a valid path: "chat/room1" is "chat.room1".
func PathTokens(path string) string { return strings.ReplaceAll(path, "/", ".") }

// DeliveryKey returns the connection key part of a delivery subject for a session
// bound to a connection with key: the key itself, or NoConnectionKey for a
// connection that presented none (development configurations).
func DeliveryKey(key string) string {
	if key == "" {
		return NoConnectionKey
	}
	return key
}

// SessionDeliverPrefix returns the prefix of every subject on which the session id,
// bound to the connection with key, receives: deliveries on its paths and results of
// its requests. A receiver subscribes to SessionDeliverPrefix(key, id) + ".>".
func SessionDeliverPrefix(key, id string) string {
	return ConnectionDeliverPrefix(DeliveryKey(key)) + "." + id
}

// DeliverSubject returns the subject on which session id, bound to the connection
// with key, receives messages on path:
// roster.v1.deliver.<key>.<session id>.<path tokens>. Only that connection may
// subscribe to it (see ConnectionDeliverPrefix).
func DeliverSubject(key, id, path string) string {
	return SessionDeliverPrefix(key, id) + "." + PathTokens(path)
}

// AppendDeliverSubject appends DeliverSubject(key, id, path) to b, with pathTokens
// being PathTokens(path); fan-out builds subjects in one reused buffer.
func AppendDeliverSubject(b []byte, key, id, pathTokens string) []byte {
	b = append(b, DeliverPrefix...)
	b = append(b, '.')
	b = append(b, DeliveryKey(key)...)
	b = append(b, '.')
	b = append(b, id...)
	b = append(b, '.')
	return append(b, pathTokens...)
}

// ResultSubject returns the subject on which the requesting session id (bound to the
// connection with key) receives the streamed results of its request with stream id
// streamID: roster.v1.deliver.<key>.<session id>._results.<stream id>.
func ResultSubject(key, id, streamID string) string {
	return SessionDeliverPrefix(key, id) + "." + resultsToken + "." + streamID
}

// ParseDeliverSubject splits a delivery subject into its connection key, session id
// and path. It fails for result subjects and anything that is not a delivery.
func ParseDeliverSubject(subject string) (key, id, path string, err error) {
	rest, ok := strings.CutPrefix(subject, DeliverPrefix+".")
	if !ok {
		return "", "", "", fmt.Errorf("wire: %q is not a delivery subject", subject)
	}
	parts := strings.SplitN(rest, ".", 3)
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return "", "", "", fmt.Errorf("wire: %q is not a delivery subject", subject)
	}
	path = strings.ReplaceAll(parts[2], ".", "/")
	if err := ValidatePath(path); err != nil {
		return "", "", "", fmt.Errorf("wire: %q: %w", subject, err)
	}
	return parts[0], parts[1], path, nil
}

// ValidStreamID reports whether s can be a result stream id: 1 to 64 ASCII letters,
// digits, '-' or '_'.
func ValidStreamID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Message is the addressed part shared by send and request: a target (exactly one of
// SessionID and Filter), a path, and the payload with its content type and headers.
type Message struct {
	// SessionID names one receiving session.
	SessionID string `json:"session_id,omitempty" roster:"nonempty"`
	// Filter selects every session it matches (session-filter language).
	Filter string `json:"filter,omitempty" roster:"nonempty"`
	// Path is the message path; see ValidatePath.
	Path string `json:"path"`
	// ContentType is the payload's media type (DefaultContentType when empty).
	ContentType string `json:"content_type,omitempty"`
	// Payload is the message body (base64 in JSON).
	Payload []byte `json:"payload,omitempty"`
	// Headers are extra headers for the receiver. Names starting with Roster-,
	// Nats- or naming trace context are reserved.
	Headers map[string]string `json:"headers,omitempty"`
	// MessageID, when set, names the message for de-duplication: the service puts
	// it on every delivery as HeaderMessageID. A sender gives one id to one logical
	// message and sends it again, after an outcome it could not learn, with the same
	// id; receivers drop (or, for a request, answer again without handling) a
	// delivery whose sender, path and id they have already seen. The Go SDK assigns
	// one per Send or Request and keeps it across its retries. 1 to
	// MaxMessageIDLength letters, digits, '-' or '_'.
	MessageID string `json:"message_id,omitempty" roster:"nonempty"`
}

// MaxUserHeaders bounds the extra headers of a message.
const MaxUserHeaders = 32

// Validate checks the target, path and headers.
func (m *Message) Validate() error {
	switch {
	case m.SessionID == "" && m.Filter == "":
		return Errorf(CodeBadRequest, "name the receiver: session_id or filter")
	case m.SessionID != "" && m.Filter != "":
		return Errorf(CodeBadRequest, "session_id and filter are exclusive")
	case m.SessionID != "" && !ValidSessionID(m.SessionID):
		// Checked here, not at the lookup: an id no session can have is the
		// caller's mistake, not a session gone, and an error echoing a huge one
		// would not fit in a reply.
		return Errorf(CodeBadRequest, "session_id must be a session id: %d letters or digits", SessionIDLength)
	case m.MessageID != "" && !ValidMessageID(m.MessageID):
		return Errorf(CodeBadRequest, "message_id must be 1 to %d letters, digits, '-' or '_'", MaxMessageIDLength)
	}
	if err := ValidatePath(m.Path); err != nil {
		return err
	}
	// Lengths count characters, as the schema's maxLength does.
	if utf8.RuneCountInString(m.ContentType) > 256 || strings.ContainsAny(m.ContentType, "\r\n") {
		return Errorf(CodeBadRequest, "content_type must be at most 256 characters on one line")
	}
	if len(m.Headers) > MaxUserHeaders {
		return Errorf(CodeBadRequest, "%d headers; the limit is %d", len(m.Headers), MaxUserHeaders)
	}
	for k, v := range m.Headers {
		if err := checkUserHeader(k, v); err != nil {
			return err
		}
	}
	return nil
}

// SessionIDLength is the length of a session id: 128 random bits in base62.
const SessionIDLength = 22

// ValidSessionID reports whether s has the shape of a session id (schemas'
// session.types.json#/$defs/id), so that anything else is refused before it reaches
// a KV key or a subject.
func ValidSessionID(s string) bool {
	if len(s) != SessionIDLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// headerNameSpecials are the printable characters NATS refuses in a header name.
const headerNameSpecials = "\"(),/:;<=>?@[\\]{}"

func checkUserHeader(k, v string) error {
	if k == "" || len(k) > 128 {
		return Errorf(CodeBadRequest, "header name %q is not allowed", k)
	}
	// What NATS accepts as a header name: printable ASCII but the specials. A name
	// it refuses would fail every delivery, after validation.
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c > '~' || strings.IndexByte(headerNameSpecials, c) >= 0 {
			return Errorf(CodeBadRequest, "header name %q is not allowed: printable ASCII without spaces or any of %s", k, headerNameSpecials)
		}
	}
	lk := strings.ToLower(k)
	if strings.HasPrefix(lk, "roster-") || strings.HasPrefix(lk, "nats-") ||
		lk == "traceparent" || lk == "tracestate" || lk == "baggage" || lk == "content-type" || lk == "status" || lk == "description" {
		return Errorf(CodeBadRequest, "header %q is reserved", k)
	}
	if utf8.RuneCountInString(v) > 4096 || strings.ContainsAny(v, "\r\n") {
		return Errorf(CodeBadRequest, "header %q: the value must be at most 4096 characters on one line", k)
	}
	return nil
}

// MsgSendRequest is the body of SubjectMsgSend.
type MsgSendRequest struct {
	Message
}

// MsgSendResponse reports a send.
type MsgSendResponse struct {
	// Delivered is the number of sessions the message was published to: 1 for a
	// session id, the number of live sessions matching a filter.
	Delivered int `json:"delivered"`
}

// Request timeouts.
const (
	DefaultRequestTimeoutMS = 5000
	MaxRequestTimeoutMS     = 60000
)

// MsgRequestRequest is the body of SubjectMsgRequest.
type MsgRequestRequest struct {
	Message
	// TimeoutMS bounds the wait for each receiver's response (default
	// DefaultRequestTimeoutMS, at most MaxRequestTimeoutMS).
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
	// StreamID, when set, asks for the results to stream to the requesting session
	// on ResultSubject(key, id, StreamID) as they arrive; the reply then carries only
	// the expected count. Without it the reply waits for every result and carries
	// them all.
	StreamID string `json:"stream_id,omitempty" roster:"nonempty"`
}

// Validate checks the message, the timeout and the stream id.
func (r *MsgRequestRequest) Validate() error {
	if err := r.Message.Validate(); err != nil {
		return err
	}
	if r.TimeoutMS < 0 || r.TimeoutMS > MaxRequestTimeoutMS {
		return Errorf(CodeBadRequest, "timeout_ms must be between 0 and %d", MaxRequestTimeoutMS)
	}
	if r.StreamID != "" && !ValidStreamID(r.StreamID) {
		return Errorf(CodeBadRequest, "stream_id must be 1 to 64 letters, digits, '-' or '_'")
	}
	return nil
}

// MsgRequestResponse is the reply to SubjectMsgRequest.
type MsgRequestResponse struct {
	// Expected is the number of sessions the request went to: exactly that many
	// results follow (streamed) or are in Results.
	Expected int `json:"expected"`
	// Results holds one result per receiving session, when not streaming.
	Results []MsgResult `json:"results,omitempty"`
}

// MsgStatus is the outcome of a request for one receiving session.
type MsgStatus string

// Outcomes of a request per receiving session.
const (
	// StatusOK: the receiver responded; Payload holds the response.
	StatusOK MsgStatus = "ok"
	// StatusError: the receiver responded with an error (Error).
	StatusError MsgStatus = "error"
	// StatusTimeout: no response within the timeout.
	StatusTimeout MsgStatus = "timeout"
	// StatusGone: no receiver subscribes to the path (disconnected, or no handler).
	StatusGone MsgStatus = "gone"
	// StatusLimitExceeded: the session already had the maximum number of requests in
	// flight; the request was not delivered.
	StatusLimitExceeded MsgStatus = "limit_exceeded"
)

// MsgResult is the outcome of a request for one receiving session.
type MsgResult struct {
	SessionID string    `json:"session_id"`
	Status    MsgStatus `json:"status"`
	// ContentType and Payload are the receiver's response when Status is ok.
	ContentType string `json:"content_type,omitempty"`
	Payload     []byte `json:"payload,omitempty"`
	// Error says what went wrong when Status is not ok.
	Error *Error `json:"error,omitempty"`
}

// MsgStreamKind is the kind of a message of a result stream.
type MsgStreamKind string

// Kinds of result stream messages: one start, Expected results, one end.
const (
	StreamStart  MsgStreamKind = "start"
	StreamResult MsgStreamKind = "result"
	StreamEnd    MsgStreamKind = "end"
)

// MsgStreamItem is one message of a request's result stream.
type MsgStreamItem struct {
	Kind MsgStreamKind `json:"kind"`
	// Expected is set on start and end.
	Expected int `json:"expected,omitempty"`
	// Result is set on result messages.
	Result *MsgResult `json:"result,omitempty"`
	// Counts, on end, counts results by status.
	Counts map[MsgStatus]int `json:"counts,omitempty"`
}
