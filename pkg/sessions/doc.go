// Package sessions is the shared, read-mostly side of Roster's session registry: the
// format of a session record in JetStream KV, and a live in-memory View of every
// session that any service can use without importing the registry.
//
// Storage. Sessions live in the KV bucket ROSTER_SESSIONS (Bucket) of the services
// account, key = session id. Only the registry writes it; every write is a
// compare-and-set on the key's revision. A record holds the principal, roles, fixed
// ($) and user properties, state, close reason, the SHA-256 hash of the token (never
// the token), the connection key it is bound to, its timeout and timestamps.
//
// Closed sessions. When a session closes the registry keeps its record as a CLOSED
// tombstone, with the reason, for the registry's tombstone retention (24 h by
// default); every service then answers requests naming it with session_closed (410).
// After the retention the key expires, and the session is unknown: session_not_found.
//
// Activity. A session times out after its inactivity timeout. Every session-scoped
// request to any service counts as activity: a service calls View.Touch, which
// coalesces the ids and publishes one batch per interval (100 ms by default) on
// wire.SubjectSessionActivity, which every registry instance consumes.
//
// Freshness. A View follows the bucket through a KV watch; it lags the registry's
// writes by the time the watch takes to deliver (typically well under a millisecond on
// one server, always well under a second), so a closed session is rejected by every
// service within a second of closing.
package sessions
