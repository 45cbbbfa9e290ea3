// Package lock is Roster's lock service: named session locks on path-like names,
// exclusive or shared, with fair waiting, session or connection scope, and fencing
// tokens.
//
// Subjects: roster.v1.lock.> (roster.v1.lock.health). Error codes: see schemas/errors.json.
package lock
