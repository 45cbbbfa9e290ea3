// Package roster composes a Roster process: the embedded NATS server (or a connection
// to an existing cluster) and the selected services, started in dependency order —
// auth, registry, lock, messaging — each on its own NATS connection, and stopped
// together within one DrainTimeout (the auth service once the registry, whose
// requests in flight call it, has stopped). roster serve is a thin command line over Start; tests use Start to run the
// whole system in-process exactly as roster serve does.
//
// Every service of a process checks permissions against one policy Holder that
// follows the policy stored in JetStream (the auth service's store), so a policy
// change reaches every service within a second without a round trip per request.
package roster
