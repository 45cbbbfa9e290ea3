// Package auth is Roster's auth service: it turns credentials into a principal and
// roles, vets the properties a session proposes, holds the permission policy, and can
// serve NATS's auth callout so that NATS itself enforces who may publish or subscribe
// where.
//
// Subjects: roster.v1.auth.> (roster.v1.auth.health). Error codes: see schemas/errors.json.
package auth
