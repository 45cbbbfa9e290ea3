// Package messaging is Roster's messaging service: it delivers messages to one session
// or fans them out to every session matching a filter, and gathers the replies of
// requests.
//
// Subjects (all session-scoped: the sender is the session named by the Roster-Session
// and Roster-Token headers):
//
//	roster.v1.msg.send     send a message; replies {"delivered": n}
//	roster.v1.msg.request  send a request; replies {"expected": n, "results": [...]},
//	                       or, with stream_id, {"expected": n} and streams the results
//	roster.v1.msg.health   liveness and readiness
//
// Deliveries go to roster.v1.deliver.<connection key>.<session id>.<path tokens>
// (wire.DeliverSubject), which only the session's connection may subscribe to, with
// the headers Roster-Sender (the sender's session id), Content-Type, any headers the
// sender added, Roster-Message-Id when the sender named the message (message_id,
// validated as 1 to 64 letters, digits, '-' or '_'; receivers de-duplicate on it, the
// service keeps nothing of it), and the W3C trace context of the send. A delivery that is a request
// has a reply subject; the receiver answers once, with a payload, or with an error in
// the micro error form (Nats-Service-Error-Code and a wire error body).
//
// Streamed request results go to the requesting session on
// roster.v1.deliver.<key>.<session id>._results.<stream id> (wire.ResultSubject): one
// "start" message with the expected count, one "result" per receiving session (ok,
// error, timeout, gone or limit_exceeded), and one "end" with counts by status; each
// carries the trace context of the request's fan-out, as its deliveries do.
//
// Permissions: SEND_TO_SESSION for a session id and SEND_TO_FILTER for a filter, both
// scoped to the message path. Error codes: bad_request, invalid_filter (with the
// position), invalid_name (path), too_large (payload over the NATS maximum, or
// results that one reply cannot carry), limit_exceeded (Config.MaxStreams streamed
// requests or Config.MaxRequests others in progress, Config.MaxSenderRequests of the
// sender's, or
// Config.MaxPrincipalRequests of the sessions of the sender's principal),
// unauthenticated, invalid_token, forbidden, session_not_found, session_closed,
// internal and unavailable; see schemas/errors.json. A receiver that already has
// Config.MaxInFlight requests in flight is not an error of the request but a
// limit_exceeded result for that session.
//
// The service keeps every live session in memory from the sessions bucket (a slim
// sessions.View, for authentication) with an inverted index over their properties
// (fed with the full records through sessions.OnChange); it owns no bucket.
package messaging
