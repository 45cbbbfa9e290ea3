// Package embedded runs the NATS server Roster embeds by default, with JetStream and
// the account layout Roster uses in production (see docs/architecture.md):
//
//   - SERVICES: the Roster services' account. JetStream is enabled here and every
//     bucket and stream lives here. It exports the request subjects of each service
//     (roster.v1.<service>.>) and $SRV.> for discovery, and imports the delivery
//     subjects (roster.v1.deliver.>) from CLIENTS.
//   - CLIENTS: the account clients connect to. It imports the service request subjects
//     with share: true, so each request reaches a service with the server-written,
//     unforgeable Nats-Request-Info header, and exports roster.v1.deliver.>. Clients
//     have no JetStream, $KV or $SYS access.
//   - SYS: the system account. It exports the CLIENTS account's disconnect advisories
//     ($SYS.ACCOUNT.CLIENTS.DISCONNECT) and, to SERVICES alone, its connection
//     listing ($SYS.REQ.ACCOUNT.CLIENTS.CONNZ) and the servers' request closing a
//     connection ($SYS.REQ.SERVER.*.KICK), which SERVICES imports: the registry
//     finds lost connections, and the auth service closes connections holding a
//     grant a policy change withdrew, without system credentials.
//
// The same configuration text (see ConfigText) is what deploy/ documents for a
// cluster, so tests and production run one layout.
package embedded
