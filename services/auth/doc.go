// Package auth is Roster's auth service: it turns credentials into a principal and
// roles, vets the properties a session proposes, holds the permission policy, and
// serves NATS's auth callout so that NATS itself enforces who may publish or
// subscribe where.
//
// Authentication runs a chain of Authenticators in a configured order; each allows
// (with principal, roles and extra properties), denies or abstains, and the first
// that does not abstain decides (all abstaining is a denial). Built in: UsersFile
// (bcrypt hashes, written by roster user add), JWT (HS256, EdDSA and RS256 bearer
// tokens; principal from sub, roles from a configured claim, exp required) and
// Anonymous (admitted or not, with roles, by the policy; principal empty). Proposed
// user properties are then accepted, vetoed or rewritten by the policy. Failures are
// counted per principal and per client address (IPv6: per /64); past the limit
// attempts are throttled (429) without being checked; attempts for one principal or
// address are checked no more at once than it has failures left (the others wait).
// Instances share what they count (roster.internal.v1.auth.throttle), so the limit
// holds for the deployment, not per instance. A password failure never says whether
// the user exists.
//
// Subjects (services account):
//
//	roster.v1.auth.health                 health (every service has one)
//	roster.v1.auth.policy.get             read the policy       (MODIFY_SECURITY)
//	roster.v1.auth.policy.set             replace the policy    (MODIFY_SECURITY)
//	roster.internal.v1.auth.authenticate  the registry asks who a session is
//	roster.internal.v1.auth.throttle      failures and successes counted, for the other instances
//	$SYS.REQ.USER.AUTH                    NATS auth callout (when configured)
//
// A client calling the policy endpoints names a session with the Roster-Session
// and Roster-Token headers; a request from inside the services account is trusted,
// told by its reply subject (not one the import wrote: endpoint.Call.Internal), not
// by a missing Nats-Request-Info, which a client can hide.
//
// Storage: the KV bucket roster_policy (key current) holds the policy as JSON;
// every process follows it with policy.Store.Watch. The service reads the sessions
// bucket (pkg/sessions) to find a caller's roles.
//
// Error codes: bad_request, unauthenticated, throttled, limit_exceeded, forbidden,
// invalid_token, session_closed, session_not_found, not_found, conflict, timeout
// (gave up waiting for the same client's other attempts: at shutdown, or, for the
// callout, when the server stopped waiting for the answer), internal (see
// schemas/errors.json).
//
// The callout admits a connection into the clients account with only: publish to
// the request subjects (roster.v1.{auth,session,lock,msg}.>), subscribe to its own
// inbox _R.<key>.> and its own deliveries roster.v1.deliver.<key>.>, and answer
// requests delivered to it. <key> is the public user nkey the client proved by
// signing the server's nonce; see docs/architecture.md, "Auth and NATS security".
// What of that the policy decides (admission of anonymous connections, the gateway
// open, the development relaxations) an instance remembers per connection it
// admitted, and a policy change withdrawing it closes the connection
// ($SYS.REQ.SERVER.<id>.KICK), which is then admitted again under the new policy.
package auth
