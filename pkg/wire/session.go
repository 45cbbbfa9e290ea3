package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Properties are proposed property values. Decoding refuses a null value, which
// encoding/json would otherwise turn into an empty string without a word.
type Properties map[string]string

// UnmarshalJSON decodes an object of strings, refusing null values.
func (p *Properties) UnmarshalJSON(data []byte) error {
	var m map[string]*string
	if err := json.Unmarshal(data, &m); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fmt.Errorf("property values must be strings, not %s", te.Value)
		}
		return err
	}
	if m == nil {
		*p = nil
		return nil
	}
	out := make(Properties, len(m))
	for k, v := range m {
		if v == nil {
			return fmt.Errorf("property %q is null: a property value is a string (remove a property with remove)", k)
		}
		out[k] = *v
	}
	*p = out
	return nil
}

// Session request subjects, served by the registry. Requests marked "session-scoped"
// carry the caller's session in the Roster-Session and Roster-Token headers.
const (
	// SubjectSessionOpen opens a session (not session-scoped).
	SubjectSessionOpen = SessionPrefix + ".open"
	// SubjectSessionOpenGateway opens a session for a gateway's user, with
	// gateway_type and gateway_id (not session-scoped). The auth callout lets only
	// connections whose roles have GATEWAY_SESSION publish to it.
	SubjectSessionOpenGateway = SessionPrefix + ".open_gateway"
	// SubjectSessionGet returns one session: the caller's own, or another by id.
	SubjectSessionGet = SessionPrefix + ".get"
	// SubjectSessionList lists the sessions matching a filter, a page at a time.
	SubjectSessionList = SessionPrefix + ".list"
	// SubjectSessionUpdate sets and removes user properties.
	SubjectSessionUpdate = SessionPrefix + ".update"
	// SubjectSessionKeepalive records activity of the caller's session.
	SubjectSessionKeepalive = SessionPrefix + ".keepalive"
	// SubjectSessionResume binds a session to the connection the request came from.
	SubjectSessionResume = SessionPrefix + ".resume"
	// SubjectSessionChangePrincipal re-authenticates the caller's session.
	SubjectSessionChangePrincipal = SessionPrefix + ".change_principal"
	// SubjectSessionClose closes the caller's session, or others by id or filter.
	SubjectSessionClose = SessionPrefix + ".close"
	// SubjectSessionEvents reads stored session events from a point, a page at a time.
	SubjectSessionEvents = SessionPrefix + ".events"

	// SubjectSessionActivity is the internal subject on which services publish
	// batches of the session ids that were active (SessionActivity). Every registry
	// instance subscribes to it, and a stream keeps it for a while so that a
	// starting registry knows recent activity.
	SubjectSessionActivity = InternalPrefix + ".session.activity"

	// SessionEventsPrefix is the prefix of session events:
	// roster.v1.events.session.<id>.<kind>.
	SessionEventsPrefix = EventsPrefix + ".session"
)

// SessionEventSubject returns the subject of a session event.
func SessionEventSubject(id string, kind SessionEventKind) string {
	return SessionEventsPrefix + "." + id + "." + string(kind)
}

// SessionState is the state of a session.
type SessionState string

// Session states. CONNECTING is the state while an open is in progress; it is never
// stored, since a record is written only once the session is ACTIVE.
const (
	StateConnecting SessionState = "CONNECTING"
	StateActive     SessionState = "ACTIVE"
	StateRecovering SessionState = "RECOVERING"
	StateClosed     SessionState = "CLOSED"
)

// CloseReason says why a session closed.
type CloseReason string

// Close reasons.
const (
	// ClosedByClient: the session closed itself.
	ClosedByClient CloseReason = "by_client"
	// ClosedByServer: another session with MODIFY_SESSION closed it.
	ClosedByServer CloseReason = "by_server"
	// ClosedExpired: it was inactive for longer than its timeout.
	ClosedExpired CloseReason = "expired"
	// ClosedFailed: its connection was lost and it did not resume in time.
	ClosedFailed CloseReason = "failed"
)

// Session is the public view of a session: everything but its token.
type Session struct {
	ID        string       `json:"id"`
	Principal string       `json:"principal"`
	Roles     []string     `json:"roles"`
	State     SessionState `json:"state"`
	// CloseReason is set once State is CLOSED.
	CloseReason CloseReason `json:"close_reason,omitempty"`
	// Fixed holds the $ properties, set by the server.
	Fixed map[string]string `json:"fixed_properties"`
	// Properties holds the user properties.
	Properties map[string]string `json:"properties"`
	// TimeoutMS is the inactivity timeout in milliseconds; 0 when Permanent.
	TimeoutMS int64     `json:"timeout_ms"`
	Permanent bool      `json:"permanent"`
	StartTime time.Time `json:"start_time"`
	// ClosedAt is set once State is CLOSED.
	ClosedAt *time.Time `json:"closed_at,omitempty"`
	// Revision is the KV revision of the record this view was made from.
	Revision uint64 `json:"revision"`
}

// SessionOpenRequest opens a session for the connection the request comes from.
type SessionOpenRequest struct {
	// Credentials are checked by the auth service; nil means anonymous.
	Credentials *Credentials `json:"credentials,omitempty"`
	// Properties are the proposed user properties; the auth service may veto,
	// rewrite or add to them.
	Properties Properties `json:"properties,omitempty"`
	// TimeoutMS is the requested inactivity timeout (0: the registry default).
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
	// Permanent asks for no inactivity timeout; it needs PERMANENT_SESSION.
	Permanent bool `json:"permanent,omitempty"`
	// GatewayType and GatewayID are set by a gateway opening sessions for its own
	// users; they become $GatewayType and $GatewayId.
	GatewayType string `json:"gateway_type,omitempty"`
	GatewayID   string `json:"gateway_id,omitempty"`
	// ClientIP, on open_gateway only, is the address of the gateway's user: it
	// becomes $ClientIP, and the auth service counts the user's failed attempts by
	// it rather than by the gateway's own address, which all its users share.
	ClientIP string `json:"client_ip,omitempty"`
}

// SessionOpenResponse is the opened session and its secret token. The token is
// returned only here and on a change of principal.
type SessionOpenResponse struct {
	Session *Session `json:"session"`
	Token   string   `json:"token"`
	// ReconnectWindowMS is the registry's reconnect window in milliseconds: how long
	// a RECOVERING session may be resumed before it is closed failed, and so
	// releases its locks. It is server configuration, the same for every session;
	// the SDK needs it to tell when it can no longer be sure a session's locks are
	// held (see pkg/client, "Lock"). 0 from a registry older than the field.
	ReconnectWindowMS int64 `json:"reconnect_window_ms"`
}

// SessionGetRequest names the session to return; an empty ID means the caller's own.
// Another session needs VIEW_SESSION.
type SessionGetRequest struct {
	ID string `json:"id,omitempty" roster:"nonempty"`
}

// Validate checks the form of the id.
func (r *SessionGetRequest) Validate() error { return checkSessionID("id", r.ID) }

// SessionGetResponse carries one session.
type SessionGetResponse struct {
	Session *Session `json:"session"`
	// ReconnectWindowMS is the registry's reconnect window in milliseconds (see
	// SessionOpenResponse).
	ReconnectWindowMS int64 `json:"reconnect_window_ms"`
}

// SessionListRequest lists sessions matching a filter (all when empty), ordered by
// id, at most Limit of them after the id After. It needs VIEW_SESSION.
type SessionListRequest struct {
	Filter string `json:"filter,omitempty"`
	After  string `json:"after,omitempty"`
	Limit  int    `json:"limit,omitempty"`
	// IncludeClosed also lists CLOSED tombstones.
	IncludeClosed bool `json:"include_closed,omitempty"`
}

// Validate checks the form of the cursor: empty, or the id of the last session of
// the previous page. Any other string would still name a place in the id order, and
// a cursor the client mangled would end the listing early without a word.
func (r *SessionListRequest) Validate() error { return checkSessionID("after", r.After) }

// SessionListResponse is one page of a list.
type SessionListResponse struct {
	Sessions []*Session `json:"sessions"`
	// Total is the number of sessions matching the filter, over all pages.
	Total int `json:"total"`
	// Next, when not empty, is the After of the next page.
	Next string `json:"next,omitempty"`
}

// SessionUpdateRequest sets and removes user properties of the caller's session, or
// of another session by ID or of every session matching Filter (MODIFY_SESSION).
type SessionUpdateRequest struct {
	ID     string     `json:"id,omitempty" roster:"nonempty"`
	Filter string     `json:"filter,omitempty"`
	Set    Properties `json:"set,omitempty"`
	Remove []string   `json:"remove,omitempty"`
}

// Validate checks the form of the id; the registry checks the rest.
func (r *SessionUpdateRequest) Validate() error { return checkSessionID("id", r.ID) }

// SessionUpdateResponse reports an update. Session is the updated session when one
// session was named (own or by id).
type SessionUpdateResponse struct {
	Updated int      `json:"updated"`
	Session *Session `json:"session,omitempty"`
}

// SessionKeepaliveRequest is the (empty) body of a keepalive.
type SessionKeepaliveRequest struct{}

// SessionKeepaliveResponse acknowledges a keepalive.
type SessionKeepaliveResponse struct {
	State     SessionState `json:"state"`
	TimeoutMS int64        `json:"timeout_ms"`
	// ReconnectWindowMS is the registry's reconnect window in milliseconds (see
	// SessionOpenResponse).
	ReconnectWindowMS int64 `json:"reconnect_window_ms"`
}

// SessionResumeRequest is the (empty) body of a resume: the session is named by the
// headers and bound to the connection the request comes from.
type SessionResumeRequest struct{}

// SessionResumeResponse carries the resumed session.
type SessionResumeResponse struct {
	Session *Session `json:"session"`
	// ReconnectWindowMS is the registry's reconnect window in milliseconds (see
	// SessionOpenResponse).
	ReconnectWindowMS int64 `json:"reconnect_window_ms"`
}

// SessionChangePrincipalRequest re-authenticates the caller's session.
type SessionChangePrincipalRequest struct {
	Credentials *Credentials `json:"credentials,omitempty"`
}

// SessionChangePrincipalResponse carries the session and its new token; the old
// token no longer works.
type SessionChangePrincipalResponse struct {
	Session *Session `json:"session"`
	Token   string   `json:"token"`
}

// SessionCloseRequest closes the caller's session, or another by ID or every session
// matching Filter (MODIFY_SESSION).
type SessionCloseRequest struct {
	ID     string `json:"id,omitempty" roster:"nonempty"`
	Filter string `json:"filter,omitempty"`
}

// Validate checks the form of the id; the registry checks the rest.
func (r *SessionCloseRequest) Validate() error { return checkSessionID("id", r.ID) }

// SessionCloseResponse reports how many sessions this request closed.
type SessionCloseResponse struct {
	Closed int `json:"closed"`
}

// SessionEventKind names a session event.
type SessionEventKind string

// Session event kinds.
const (
	EventOpened           SessionEventKind = "opened"
	EventUpdated          SessionEventKind = "updated"
	EventDisconnected     SessionEventKind = "disconnected"
	EventReconnected      SessionEventKind = "reconnected"
	EventPrincipalChanged SessionEventKind = "principal_changed"
	EventClosed           SessionEventKind = "closed"
)

// SessionEvent is published to the session events stream on
// roster.v1.events.session.<id>.<kind>.
type SessionEvent struct {
	Kind      SessionEventKind `json:"kind"`
	SessionID string           `json:"session_id"`
	Time      time.Time        `json:"time"`
	Principal string           `json:"principal"`
	State     SessionState     `json:"state"`
	// Reason is set on closed events.
	Reason CloseReason `json:"reason,omitempty"`
	// Keys lists the properties an updated event changed.
	Keys []string `json:"keys,omitempty"`
	// Connection is the connection key the session is bound to.
	Connection string `json:"connection,omitempty"`
	// Revision is the KV revision of the record the event describes.
	Revision uint64 `json:"revision"`
}

// SessionEventsRequest asks for the stored events of one session (the caller's own,
// or another with VIEW_SESSION) or of every session (VIEW_SESSION), from StartSeq or
// StartTime (neither: from the oldest stored). With WaitMS, a request that finds no
// event waits up to that long for the first one.
type SessionEventsRequest struct {
	SessionID string             `json:"session_id,omitempty" roster:"nonempty"`
	Kinds     []SessionEventKind `json:"kinds,omitempty"`
	StartSeq  uint64             `json:"start_seq,omitempty"`
	StartTime *time.Time         `json:"start_time,omitempty"`
	Limit     int                `json:"limit,omitempty"`
	WaitMS    int64              `json:"wait_ms,omitempty"`
}

// Validate checks the form of the session id; the registry checks the rest.
func (r *SessionEventsRequest) Validate() error { return checkSessionID("session_id", r.SessionID) }

// checkSessionID refuses an id that cannot name a session (22 letters or digits),
// as the schemas do: looked up, it would be session_not_found, or forbidden to a
// caller without VIEW_SESSION, and a client would not learn its mistake. Empty is
// the caller's own session.
func checkSessionID(member, id string) error {
	if id == "" || ValidSessionID(id) {
		return nil
	}
	return Errorf(CodeBadRequest, "%s must be a session id: %d letters or digits", member, SessionIDLength)
}

// SessionEventsResponse is one page of events, in stream order.
type SessionEventsResponse struct {
	Events []StoredSessionEvent `json:"events"`
	// NextSeq is the StartSeq of the next page: one past the last event read. It is
	// 0 only when a request by StartTime found no event: ask again by time.
	NextSeq uint64 `json:"next_seq"`
}

// StoredSessionEvent is an event with its place in the events stream.
type StoredSessionEvent struct {
	Seq    uint64        `json:"seq"`
	Stored time.Time     `json:"stored"`
	Event  *SessionEvent `json:"event"`
	// TraceParent is the W3C traceparent of the request that made the change, when
	// it had one: a reader joins the change's trace with it (a span link, say).
	TraceParent string `json:"traceparent,omitempty"`
}

// SessionActivity is the body published on SubjectSessionActivity: ids of sessions
// that were active since the previous batch from the same publisher.
type SessionActivity struct {
	Sessions []string `json:"sessions"`
}
