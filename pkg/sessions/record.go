package sessions

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// Fixed property keys, set only by the server (or an authenticator).
const (
	PropSessionID   = "$SessionId"
	PropPrincipal   = "$Principal"
	PropRoles       = "$Roles"
	PropClientIP    = "$ClientIP"
	PropClientType  = "$ClientType"
	PropTransport   = "$Transport"
	PropStartTime   = "$StartTime"
	PropServerName  = "$ServerName"
	PropConnector   = "$Connector"
	PropCountry     = "$Country"
	PropLanguage    = "$Language"
	PropLatitude    = "$Latitude"
	PropLongitude   = "$Longitude"
	PropGatewayType = "$GatewayType"
	PropGatewayID   = "$GatewayId"
)

// Format is the format of the records this version writes. A version that adds to the
// record something an older one would lose or misread when it writes the record back
// (the older one decodes only the fields it knows, and writes only those) raises it:
// an instance refuses to write a record of a later format than its own (Encode), so
// that while versions overlap in a rolling upgrade the older instances leave the newer
// records to the newer instances instead of silently dropping what they added (see
// docs/architecture.md, "Record formats across versions").
const Format = 1

// ErrNewerFormat is Encode's error for a record read in a later format than Format.
// It matches wire.ErrUnavailable: an instance of the newer version can write it.
var ErrNewerFormat = wire.Errorf(wire.CodeUnavailable, "the session record was written by a newer version of Roster: this instance leaves it to an instance of that version; retry")

// IsNewerFormat reports whether err is Encode's refusal of a record in a later format
// (ErrNewerFormat itself: errors.Is would match any unavailable error).
func IsNewerFormat(err error) bool {
	var e *wire.Error
	return errors.As(err, &e) && e == ErrNewerFormat
}

// Record is a session as stored in the bucket (JSON). A *Record obtained from a View
// or Decode is shared and must not be modified; Clone it first.
type Record struct {
	// Format is the format the record was written in (0 before it was kept: 1).
	Format    int      `json:"format,omitempty"`
	ID        string   `json:"id"`
	Principal string   `json:"principal"`
	Roles     []string `json:"roles"`
	// Fixed holds the $ properties; User the user properties.
	Fixed       map[string]string `json:"fixed"`
	User        map[string]string `json:"user"`
	State       wire.SessionState `json:"state"`
	CloseReason wire.CloseReason  `json:"close_reason,omitempty"`
	// TokenHash is the hex SHA-256 of the session token.
	TokenHash string `json:"token_hash"`
	// Connection is the key (wire.RequestInfo.ConnectionKey) of the connection the
	// session is bound to; empty when the request carried no request info.
	Connection string `json:"connection"`
	// Account is the NATS account of that connection (wire.RequestInfo.Account): the
	// registry asks the servers about the connection in that account's listing.
	Account string `json:"account,omitempty"`
	// DeliverKey is the connection key the auth callout verified for that connection
	// (its user nkey, wire.RequestInfo.User): deliveries to the session go under
	// wire.ConnectionDeliverPrefix(DeliverKey), which only that connection may read.
	// Empty when the connection presented no key.
	DeliverKey string `json:"deliver_key,omitempty"`
	// TimeoutMS is the inactivity timeout; 0 when Permanent.
	TimeoutMS int64     `json:"timeout_ms"`
	Permanent bool      `json:"permanent"`
	StartTime time.Time `json:"start_time"`
	// LastActivity is the last activity the registry persisted. Activity is
	// persisted lazily, so the registry's in-memory view may be more recent.
	LastActivity time.Time `json:"last_activity"`
	UpdatedAt    time.Time `json:"updated_at"`
	// RecoveringSince is set while State is RECOVERING.
	RecoveringSince *time.Time `json:"recovering_since,omitempty"`
	ClosedAt        *time.Time `json:"closed_at,omitempty"`
	// EventSeq numbers the session's events: the last one staged. Message ids of
	// events other than closed are <id>-<seq>.
	EventSeq uint64 `json:"event_seq,omitempty"`
	// Outbox holds the events written by the same compare-and-set as the change they
	// describe, until the registry knows they are stored in the events stream (see
	// docs/architecture.md, "Registry", Events). Any registry instance republishes the
	// ones it has not seen stored, with their message ids, so that an instance dying
	// between its write and the event's acknowledgement loses nothing.
	Outbox []PendingEvent `json:"outbox,omitempty"`

	// Revision is the KV revision the record was read at (not stored).
	Revision uint64 `json:"-"`

	// body is set on a compact tombstone (Compact): the closed record's JSON without
	// its token hash and outbox, which Full decodes.
	body []byte
}

// PendingEvent is an event in a record's outbox. Event.Revision is 0 for the event
// staged by the write that stored the record: it is that record's revision, known only
// once the write is acknowledged, and is filled in when a later write carries it
// over.
type PendingEvent struct {
	MsgID string            `json:"msg_id"`
	Event wire.SessionEvent `json:"event"`
	// Trace is the W3C traceparent of the request that made the change (empty for
	// the server's own: expiry, a lost connection): the event is published with it,
	// so that whoever reads the event can join that trace.
	Trace string `json:"trace,omitempty"`
}

// ChangeTrace returns the W3C traceparent of the request whose change the record's
// own write made, as that write staged it with its event (the last outbox entry,
// whose revision is not filled in yet), or "" when the write staged no event or the
// server made the change on its own (an expiry, a lost connection). A service that
// reacts to the change it sees in the bucket — the lock service releasing a closed
// session's locks — joins the request's trace with it: the outbox keeps the entry
// until a later write of the record, and a closed record is not written again.
func (r *Record) ChangeTrace() string {
	if n := len(r.Outbox); n > 0 && r.Outbox[n-1].Event.Revision == 0 {
		return r.Outbox[n-1].Trace
	}
	return ""
}

// Timeout returns the inactivity timeout (0 for a permanent session).
func (r *Record) Timeout() time.Duration { return time.Duration(r.TimeoutMS) * time.Millisecond }

// Closed reports whether the session is closed.
func (r *Record) Closed() bool { return r.State == wire.StateClosed }

// Properties returns the fixed and user properties in one map, as session filters see
// them, built anew at each call (the record keeps Fixed and User apart: a merged copy
// kept beside them cost ~1.8 KB a session with a dozen properties). A filter matches a
// record without it: filter.Filter.MatchesSplit(r.Fixed, r.User).
func (r *Record) Properties() map[string]string {
	if r.body != nil {
		return r.Full().Properties()
	}
	m := make(map[string]string, len(r.Fixed)+len(r.User))
	maps.Copy(m, r.User)
	maps.Copy(m, r.Fixed)
	return m
}

// CheckToken compares token with the stored hash in constant time. It returns
// wire.ErrInvalidToken-matching errors when they differ.
func (r *Record) CheckToken(token string) error {
	h := HashToken(token)
	if token == "" || subtle.ConstantTimeCompare([]byte(h), []byte(r.TokenHash)) != 1 {
		return wire.Errorf(wire.CodeInvalidToken, "the token does not match session %s", r.ID)
	}
	return nil
}

// Clone returns a deep copy that may be modified.
func (r *Record) Clone() *Record {
	c := *r
	c.Roles = append([]string(nil), r.Roles...)
	c.Fixed = maps.Clone(r.Fixed)
	c.User = maps.Clone(r.User)
	if c.Fixed == nil {
		c.Fixed = map[string]string{}
	}
	if c.User == nil {
		c.User = map[string]string{}
	}
	if r.RecoveringSince != nil {
		t := *r.RecoveringSince
		c.RecoveringSince = &t
	}
	if r.ClosedAt != nil {
		t := *r.ClosedAt
		c.ClosedAt = &t
	}
	c.Outbox = append([]PendingEvent(nil), r.Outbox...)
	return &c
}

// Public returns the wire view of the record (no token hash).
func (r *Record) Public() *wire.Session {
	if r.body != nil {
		return r.Full().Public()
	}
	s := &wire.Session{
		ID:          r.ID,
		Principal:   r.Principal,
		Roles:       append([]string{}, r.Roles...),
		State:       r.State,
		CloseReason: r.CloseReason,
		Fixed:       maps.Clone(r.Fixed),
		Properties:  maps.Clone(r.User),
		TimeoutMS:   r.TimeoutMS,
		Permanent:   r.Permanent,
		StartTime:   r.StartTime,
		ClosedAt:    r.ClosedAt,
		Revision:    r.Revision,
	}
	if s.Fixed == nil {
		s.Fixed = map[string]string{}
	}
	if s.Properties == nil {
		s.Properties = map[string]string{}
	}
	return s
}

// ClosedError returns the session_closed error for a closed record.
func (r *Record) ClosedError() error {
	return wire.Errorf(wire.CodeSessionClosed, "session %s is closed (%s)", r.ID, r.CloseReason)
}

// Encode renders r as stored, in Format. It refuses, with ErrNewerFormat, a record
// read in a later format: written back by this version, it would lose what that
// version added.
func Encode(r *Record) ([]byte, error) {
	if r.Format > Format {
		return nil, ErrNewerFormat
	}
	if r.body != nil {
		return nil, errCompact
	}
	c := *r
	c.Format = Format
	return json.Marshal(&c)
}

// errCompact is Encode's refusal of a compact tombstone, which lacks what the stored
// record holds. No writer writes a closed record again.
var errCompact = errors.New("sessions: a compact tombstone cannot be stored")

// Compact returns the record as a view keeps a closed session for the tombstone's
// retention (a day by default), and r itself when r is not closed or already
// compact. A tombstone is only ever asked whether it is closed and why (every
// request naming it is answered session_closed), yet a decoded record holds its
// roles and three maps of properties: with sessions that live minutes, the
// tombstones of the last day outnumber the live sessions a hundred to one and held
// most of a process's memory. The compact record keeps the fields of the close, the
// times and the outbox (its closed event may still have to be published; the lock
// service joins its trace); the rest — roles and properties, for a list that
// includes closed sessions — is kept as the record's JSON, which Full, Public and
// Properties decode. It has no token hash and no connection. Encode refuses it.
func (r *Record) Compact() *Record {
	if !r.Closed() || r.body != nil {
		return r
	}
	full := *r
	full.TokenHash, full.Outbox = "", nil
	body, err := json.Marshal(&full)
	if err != nil {
		return r // the record was decoded from JSON or built to be written as JSON
	}
	return &Record{
		Format:          r.Format,
		ID:              r.ID,
		Principal:       r.Principal,
		State:           r.State,
		CloseReason:     r.CloseReason,
		TimeoutMS:       r.TimeoutMS,
		Permanent:       r.Permanent,
		StartTime:       r.StartTime,
		LastActivity:    r.LastActivity,
		UpdatedAt:       r.UpdatedAt,
		RecoveringSince: r.RecoveringSince,
		ClosedAt:        r.ClosedAt,
		EventSeq:        r.EventSeq,
		Outbox:          r.Outbox,
		Revision:        r.Revision,
		body:            body,
	}
}

// Full returns r itself unless r is a compact tombstone (Compact), and then the
// closed record it keeps, decoded anew at each call: everything the stored record
// holds but the token hash.
func (r *Record) Full() *Record {
	if r.body == nil {
		return r
	}
	f, err := Decode(r.body, r.Revision)
	if err != nil {
		return r // Compact encoded it
	}
	f.Outbox = r.Outbox
	return f
}

// Decode parses a stored record read at revision rev.
func Decode(data []byte, rev uint64) (*Record, error) {
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("sessions: decode record at revision %d: %w", rev, err)
	}
	r.Revision = rev
	return &r, nil
}

// HashToken returns the hex SHA-256 of a token, as stored in Record.TokenHash.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// ValidateKey checks a user property key (seed 002): not empty, none of space, tab,
// CR, LF, '"', '\”, '(' or ')', and not starting with '$', which marks the fixed
// properties only the server sets. Errors match wire.ErrInvalidName. A key that holds
// [ ] { } or , or is spelled as a filter keyword, passes but no filter can name it
// (docs/architecture.md, "Session filters").
func ValidateKey(key string) error {
	if key == "" {
		return wire.Errorf(wire.CodeInvalidName, "a property key must not be empty")
	}
	if key[0] == '$' {
		return wire.Errorf(wire.CodeInvalidName, "property key %q: keys starting with $ are fixed properties that only the server sets", key)
	}
	if i := strings.IndexAny(key, " \t\r\n\"'()"); i >= 0 {
		return wire.Errorf(wire.CodeInvalidName, "property key %q: character %q is not allowed", key, key[i])
	}
	return nil
}

// IDLength is the length of a session id: 128 random bits in base62.
const IDLength = wire.SessionIDLength

// ValidID reports whether id has the shape of a session id, so that anything else is
// refused before it reaches a KV key or subject.
func ValidID(id string) bool { return wire.ValidSessionID(id) }
