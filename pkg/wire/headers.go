package wire

// Header names used on Roster messages. NATS headers are case-sensitive on the wire;
// Roster writes these exact spellings and reads them with Header.Get, which
// canonicalises, so other clients should use the same spelling.
const (
	// HeaderSession carries the id of the session a request acts for.
	HeaderSession = "Roster-Session"
	// HeaderToken carries the secret token of the session named by HeaderSession.
	HeaderToken = "Roster-Token"
	// HeaderSender carries the session id of a message's sender on deliveries. A
	// message under a delivery prefix without it is not a delivery: a client may name
	// any subject as the reply subject of its requests, and a service's reply to it
	// lands there — but no service's reply carries this header.
	HeaderSender = "Roster-Sender"
	// HeaderNotice marks the registry's notices (SessionStateSubject: "state"), for
	// the same reason.
	HeaderNotice = "Roster-Notice"
	// HeaderContentType carries the media type of a delivery's payload.
	HeaderContentType = "Content-Type"
	// HeaderTimeout carries how long the sender of a request waits for its answer,
	// in whole milliseconds from when it sent the request: relative, so that the
	// clocks of the two ends need not agree. On a request to a service (Call sets it
	// from the context's deadline) the service gives up on the request that long
	// after its arrival (pkg/endpoint; ParseTimeout); on a delivery that is a
	// request, it is how long the messaging service waits for this receiver's
	// answer from when it published the delivery, and a later answer never reaches
	// the requester. The Go SDK gives a delivery's handler that deadline, counted
	// from the delivery's arrival.
	HeaderTimeout = "Roster-Timeout"

	// HeaderRequestInfo is written by the NATS server on requests that cross a
	// service import with share: true. Clients cannot forge it on imported subjects.
	HeaderRequestInfo = "Nats-Request-Info"

	// HeaderErrorCode and HeaderError are the micro service error headers.
	HeaderErrorCode = "Nats-Service-Error-Code"
	HeaderError     = "Nats-Service-Error"
)

// Subject prefix and request subjects. Each service owns roster.v1.<service>.>.
const (
	SubjectPrefix = "roster.v1"

	AuthPrefix      = SubjectPrefix + ".auth"
	SessionPrefix   = SubjectPrefix + ".session"
	LockPrefix      = SubjectPrefix + ".lock"
	MessagingPrefix = SubjectPrefix + ".msg"

	// DeliverPrefix is where the messaging service delivers to sessions. It lives in
	// the clients account and is imported into the services account.
	DeliverPrefix = SubjectPrefix + ".deliver"
	// EventsPrefix is where session events are published (into a JetStream stream).
	EventsPrefix = SubjectPrefix + ".events"
)
