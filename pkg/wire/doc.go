// Package wire is Roster's wire contract: the subjects, header names, error codes and
// trace-context carrier that every service and client share.
//
// Requests are JSON bodies sent as NATS requests on roster.v1.<service>.<op>. A
// successful reply is the JSON response body. A failed reply carries the micro error
// headers (Nats-Service-Error-Code holds an HTTP-like class such as 410, and
// Nats-Service-Error a human message) and the body {"error":{"code":"…","message":"…"}},
// whose code is one of the stable codes registered in this package and documented in
// schemas/errors.json. Call decodes such a reply into an *Error that errors.Is matches
// against the sentinel errors below, e.g. errors.Is(err, wire.ErrSessionClosed).
//
// Session-scoped requests carry the session id and secret token in the Roster-Session
// and Roster-Token headers, never in the subject. Trace context travels as W3C
// traceparent/tracestate headers written in lowercase (see HeaderCarrier).
package wire
