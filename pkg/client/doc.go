// Package client is the Go SDK of Roster: sessions, locks and filtered fan-out over
// NATS.
//
// Open connects and opens a session in one step; Connect and (*Client).Open open
// any number of sessions on one connection (a gateway opening one per user). A
// *Session is safe for use by any number of goroutines at once:
//
//	s, err := client.Open(ctx, "nats://127.0.0.1:4222", client.Options{
//		Credentials: client.Password("alice", "secret"),
//		Properties:  map[string]string{"Department": "Accounts"},
//	})
//	defer s.Close(ctx)
//
//	l, err := s.Lock(ctx, "orders/42", client.LockOptions{}) // waits while ctx allows
//	defer l.Unlock(ctx)
//	useResource(l.Token()) // the fencing token
//
// Credentials nil open an anonymous session, which roster serve's development
// configuration admits; the password users it knows are those of its --users-file
// (roster user add).
//
// A lock is the session's: goroutines of the session that call Lock for one name,
// mode and scope at once wait with a single request to the server and all get the
// same *Lock, which one Unlock releases (see (*Session).Lock).
//
//	s.Handle("chat/room1", func(ctx context.Context, m *client.Message) ([]byte, error) { … })
//	n, err := s.Send(ctx, client.ToFilter(`Department is "Accounts"`), "chat/room1", []byte("hello"))
//
// The SDK sends keepalives by itself. When the connection to NATS drops, the session
// becomes RECOVERING, connection-scoped locks are reported lost ((*Lock).Lost) and
// calls in flight fail at once with an error matching ErrUnavailable. Calls made
// while the connection is away fail at once too, and are never sent, not even once
// it is back: the SDK turns off nats.go's reconnect buffer (see WithNATSOptions).
// When NATS is back the SDK resumes the same session (ACTIVE again) or, if the server no longer
// has it, the session becomes CLOSED with the reason (OnStateChange reports each
// change; WaitActive waits for the resume). A keepalive answered RECOVERING while the connection works (the server
// counted a connection lost that this client did not see drop) is handled the same
// way: locks reported lost, then resumed. A session closed by another session or by
// the server becomes CLOSED as soon as the registry's notice reaches its connection
// (its next keepalive or call, should the notice be lost). After a session is closed
// every call returns an error matching ErrSessionClosed.
//
// A lock is reported lost also when the SDK can no longer be sure the server has not
// released it, without having to reach the server: the server releases a session's
// locks no sooner than the smaller of its inactivity timeout and the registry's
// reconnect window (which the registry tells the SDK) after the session was last
// seen ACTIVE, so once that long has passed since the SDK sent the latest request
// the registry answered with the session ACTIVE — a network partition, say, that
// NATS takes minutes to notice — every lock of the session is reported lost, with
// an error matching ErrLockLost and ErrUnavailable. Should the session turn out to
// be alive, the SDK releases those holds by their fencing tokens once it is back,
// and a new Lock of the name gets a new grant. The default keepalives (a third of
// that bound, at most 5 s) keep this from happening while everything works.
//
// Send, Request and RequestStream give each message an id (MessageID to choose it)
// and retry with it when they cannot learn the outcome (ErrUnavailable, or a send
// unanswered for 20 s); a handler registered with Handle takes a message with the
// same sender, path and id once within two minutes and 4,096 messages, so a retry
// whose first attempt was delivered is not handled twice (a request's copy gets the
// first answer again).
//
// Only the messaging service's deliveries reach a handler: a message under the
// session's delivery subjects without the Roster-Sender header — a service's reply to
// a request whose reply subject another client chose — is dropped.
//
// # Errors
//
// Every error a Roster service answers with matches one of the Err… values with
// errors.Is; errors.As with *wire.Error gives its code and message. The conditions
// a caller usually acts on:
//
//   - ErrSessionClosed: the caller's own session is closed (by Close, by another
//     session, by the server, by expiry); every later call on it fails so.
//   - ErrSessionNotFound: a session a call names (ToSession, GetSession …) does
//     not exist; the caller's session is fine.
//   - ErrUnavailable: Roster cannot be reached, the connection was lost during the
//     call or is away (reconnecting), or the Client was closed. The call may or may
//     not have taken effect — except when the error also matches ErrNotSent (a call
//     made while the connection was away): then it never reaches the server.
//   - ErrTimeout: no answer before ctx's deadline, or a lock not granted in time
//     (TryLock: not free now). A ctx cancelled by the caller gives context.Canceled.
//   - ErrLockLost: (*Lock).Err of a lock released without Unlock, or that may have
//     been, with the cause (ErrSessionClosed; or ErrUnavailable for a
//     connection-scoped lock whose connection was lost, or for any lock of a session
//     the SDK could not confirm in time).
//   - ErrForbidden, ErrUnauthenticated: the policy refuses the session's roles, or
//     the credentials.
//   - ErrLimitExceeded: a bound of the server, per session or per principal, is
//     reached (requests in progress: see (*Session).Request; locks; sessions;
//     properties). Nothing was done; the call may succeed once fewer are in use.
//   - ErrBadRequest, ErrInvalidName, ErrInvalidFilter, ErrTooLarge: arguments no
//     call can mean; the SDK refuses some before sending anything.
package client
