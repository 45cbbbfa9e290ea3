// Package registry is Roster's session registry: it owns session records in JetStream
// KV and the lifecycle of a session — open, get, list, update, keepalive, resume,
// close, expiry — and publishes session events.
//
// Subjects: roster.v1.session.> (roster.v1.session.health). Error codes: see
// schemas/errors.json.
package registry
