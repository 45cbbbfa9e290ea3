// Package registry is Roster's session registry: it owns session records in JetStream
// KV and the lifecycle of a session — open, get, list, update, keepalive, resume,
// change of principal, close, expiry — and publishes session events.
//
// Subjects served (JSON bodies, schemas/session.<op>.request.json and .response.json;
// all but open are session-scoped: Roster-Session and Roster-Token headers):
//
//	roster.v1.session.open              open a session (credentials checked by auth)
//	roster.v1.session.get               the own session, or another (VIEW_SESSION)
//	roster.v1.session.list              sessions matching a filter, paginated (VIEW_SESSION)
//	roster.v1.session.update            set/remove user properties: own (MODIFY_OWN_PROPERTIES
//	                                    per key), others by id or filter (MODIFY_SESSION)
//	roster.v1.session.keepalive         activity, no write
//	roster.v1.session.resume            rebind to the caller's connection, back to ACTIVE
//	roster.v1.session.change_principal  re-authenticate; the token is rotated
//	roster.v1.session.close             own (by_client); others by id or filter (by_server)
//	roster.v1.session.events            stored events from a sequence or time, a page at a
//	                                    time, optionally waiting for the next (own session's;
//	                                    others' and all need VIEW_SESSION, checked
//	                                    again while a read is held)
//	roster.v1.session.health            readiness
//
// Subjects used: roster.internal.v1.auth.authenticate (the auth service),
// roster.internal.v1.session.activity (activity batches; every instance subscribes and
// publishes), $SYS.ACCOUNT.CLIENTS.DISCONNECT (imported from the system account:
// lost connections move their sessions to RECOVERING), $SYS.REQ.ACCOUNT.CLIENTS.CONNZ
// (imported from the system account: the connection listing that finds the lost
// connections nobody reported, connections.go), roster.v1.events.session.<id>.<kind>
// (events, published), roster.v1.deliver.<key>.<id>._state (wire.SessionStateSubject:
// the notice to a session's connection that the session closed, published).
//
// Storage (services account): KV bucket ROSTER_SESSIONS (pkg/sessions; per-key TTLs),
// stream ROSTER_SESSION_EVENTS (events, 5 min duplicate window, MaxAge
// Config.EventsMaxAge), stream ROSTER_SESSION_ACTIVITY (activity batches, MaxAge twice
// Config.PersistInterval).
//
// Error codes: bad_request, too_large, invalid_name (property keys), invalid_filter,
// unauthenticated (no session header, or from auth), invalid_token, forbidden,
// session_not_found, session_closed (410: every request naming a closed session),
// limit_exceeded (the message names the limit), conflict (a change of principal whose
// session's properties kept changing), throttled (from auth), timeout (auth did not
// answer in time; storage that does not is unavailable),
// unavailable, internal. See schemas/errors.json.
//
// See docs/architecture.md, "Registry", for how expiry, activity and exactly-once
// CLOSED events work across instances.
package registry
