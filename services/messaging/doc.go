// Package messaging is Roster's messaging service: it delivers messages to one session
// or fans them out to every session matching a filter, and collects replies.
//
// Subjects: roster.v1.msg.> (roster.v1.msg.health). Error codes: see schemas/errors.json.
package messaging
