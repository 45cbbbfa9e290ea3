// Package lock is Roster's lock service: named session locks on path-like names,
// exclusive or shared, with fair waiting, session or connection scope, and fencing
// tokens.
//
// # Subjects
//
// Every request is session-scoped (Roster-Session and Roster-Token headers):
//
//   - roster.v1.lock.acquire: take a lock (ACQUIRE_LOCK on the name). Try once
//     (wait_ms 0), wait up to wait_ms, or until cancelled (-1). A waiting request
//     is held by the service — no handler slot, no goroutine — and answered when
//     it is granted, its wait ends (timeout), it is cancelled, its session
//     closes (session_closed) or, for connection scope, loses its connection, or
//     its session may no longer acquire the name (forbidden: the policy or the
//     session's roles changed while it waited; see Permissions below). One
//     request is held at most Config.MaxWait (below the import's 2-minute response
//     threshold); a longer wait is answered timeout there and keeps its place for
//     Config.Reattach, for the client to re-issue it with the same request_id.
//     Acquiring a lock the session holds returns the equal lock (same token), with
//     the weaker of the two scopes. A session holds or waits for at most
//     Config.MaxLocksPerSession locks (1000); the bound is checked against the
//     instance's view of the bucket, so acquires made at the same moment through
//     several instances can overshoot it by those in flight.
//   - roster.v1.lock.release: give a lock back; lock_not_held when the session does
//     not hold it, or a non-zero token is not the held one.
//   - roster.v1.lock.cancel: withdraw an acquire by its request_id, whatever became
//     of it: a waiting one leaves the queue (its held request is answered timeout), a
//     granted one has that answer withdrawn (the hold is released when no other
//     acquire of the session was answered with it), and an unknown one is not_found
//     and remembered, so that a late copy is refused stale_request.
//   - roster.v1.lock.list: locks with holders and waiters (VIEW_LOCKS).
//   - roster.v1.lock.health.
//
// # State
//
// KV bucket roster_locks (services account), key = base64url(name), value = JSON
// record {name, holders[], waiters[], done[]}, done being the request ids answered
// for good in the last two minutes; a lock with neither holders nor waiters is
// deleted once those have expired, by a purge marker that itself expires a minute
// later (GoneTTL), so the bucket never grows with the names ever locked. Every change
// is a compare-and-set on the key's revision, so any instance can serve any request
// and an instance can die at any moment without breaking safety. The fencing token
// of a grant is the revision of the write that granted it: stream sequences only
// grow, so tokens strictly increase per name across restarts and failovers.
//
// Waiters are served first come, first served: a request is granted only if it is
// compatible with the holders and nobody waits before it, so a waiting exclusive
// request holds back the shared ones behind it; consecutive shared waiters at the
// head are granted by one write. The write that frees a lock grants the next
// waiters in the same compare-and-set, and whichever instance made it answers
// their held requests on the reply subjects stored with them.
//
// An instance that stops drains its endpoint, then finishes the writes it has
// begun (a release or an expiry of its own) and answers the waiters they grant or
// remove before Run returns; Config.DrainTimeout bounds the whole stop.
//
// Locks of a session that closes or expires are released, and connection-scoped
// ones also when it loses its connection (RECOVERING, or resumed elsewhere): every
// instance follows the sessions bucket (pkg/sessions) and releases with a
// compare-and-set, which makes the release happen once however many instances see
// the change. A connection-scoped hold or waiter keeps the revision of the session's
// record its connection was read from: an instance whose view of the session is
// older waits for it rather than take the connection for lost. An acquire first
// releases what the session's record that authenticated it shows lost, as a view's
// would, and a connection-scoped hold never moves to another connection.
//
// # Permissions
//
// ACQUIRE_LOCK is checked when an acquire arrives, and again for a waiting one:
// every write that would grant a waiter checks its session against the policy and
// the roles the writing instance has then (record.allowed, promote), and every
// instance goes over the waiting requests when the policy changes, when a
// session's roles change (change_principal), and every recheckEvery. A waiter whose
// session may no longer acquire the name leaves the queue, is answered forbidden
// and its id remembered (withdrawForbidden), as a cancelled one is; it is never
// granted. Locks held are not taken away: the permission is one to acquire, as in
// Diffusion. An instance that holds no policy at all withdraws nothing.
//
// # Error codes
//
// invalid_name (bad lock name), bad_request (mode, scope, wait, request id,
// malformed body), unauthenticated / invalid_token / session_not_found /
// session_closed (the session headers), forbidden (ACQUIRE_LOCK, VIEW_LOCKS; also
// the answer to a waiting acquire whose session lost ACQUIRE_LOCK while it waited),
// timeout (not granted: try-once, wait over, cancelled), lock_not_held (release),
// not_found (cancel), conflict (a shared holder asking for exclusive), stale_request
// (a late copy of an acquire already answered: not granted),
// limit_exceeded (too many waiters on one lock, or 16 of the session's own waiting
// for it; the session holds or waits for Config.MaxLocksPerSession locks; the record
// would grow past Config.MaxRecordBytes), unavailable (storage; a connection-scoped acquire from a session not
// ACTIVE on the requesting connection; an acquire, or a release without a token,
// that was not applied because its session acted on the lock after it arrived —
// see record.actedSince).
package lock
