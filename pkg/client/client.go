package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/logthrottle"
	"github.com/seed-3c836eab/roster/pkg/natsprobe"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// Client is a connection to Roster over NATS. It can open any number of sessions
// (a gateway opens one per user of its own). A Client is safe for concurrent use.
type Client struct {
	nc     *nats.Conn
	key    string
	log    *slog.Logger
	tracer trace.Tracer
	// dropWarn logs the requests dropped because their deadline passed while they
	// waited for a handler: one a request, so under overload thousands a second,
	// and at most one line per dropWarnEvery (dropExpired).
	dropWarn *logthrottle.Warner

	mu       sync.Mutex
	sessions map[*Session]struct{}
	// epoch ends when the connection is lost: calls in flight fail at once with
	// ErrUnavailable instead of waiting for replies that will not come.
	epoch       context.Context
	epochCancel context.CancelCauseFunc
	// back, when not nil, is closed when a new epoch starts (the connection is
	// back) or the connection is closed: what waitBack waits on.
	back   chan struct{}
	closed bool
	// closing is set once Close has taken the sessions to close: no session may
	// join them after that (add).
	closing bool
	// calls counts the calls in flight; idle, when not nil, is closed once none is.
	calls int
	idle  chan struct{}
	// denyWatch ends the gateway opens in flight if NATS refuses them (denied.go).
	denyWatch map[*context.CancelCauseFunc]struct{}
	// orphans counts the sessions being closed on the server because their open
	// was answered after Close began (closeOrphan); orphansDone, when not nil, is
	// closed once none is. final is set when Close stops waiting for them, just
	// before it closes the connection: no orphan's close begins after that.
	orphans     int
	orphansDone chan struct{}
	final       bool
}

// ConnectOption configures Connect.
type ConnectOption func(*connectOptions)

type connectOptions struct {
	creds  *wire.Credentials
	nats   []nats.Option
	tp     trace.TracerProvider
	logger *slog.Logger
}

// WithNATSOptions adds options to the NATS connection (credentials, TLS, names …).
// The SDK sets the reconnect, disconnect and closed handlers itself.
//
// The SDK also turns off nats.go's reconnect buffer (nats.ReconnectBufSize(-1)): a
// request made while the connection is away fails with ErrUnavailable, and is never
// sent. An application may pass nats.ReconnectBufSize here to have it back, at a
// cost: nats.go then keeps what is published while it reconnects and sends it once
// it is back, so that a request whose caller was told it failed (ErrUnavailable, or
// ErrTimeout when its deadline passed meanwhile) may still reach the service, after
// the caller retried or moved on. With nats.RetryOnFailedConnect, calls made before
// the first connection succeeds are refused the same way (ErrUnavailable, not
// sent) rather than kept until it does.
func WithNATSOptions(opts ...nats.Option) ConnectOption {
	return func(o *connectOptions) { o.nats = append(o.nats, opts...) }
}

// WithCredentials authenticates the NATS connection itself (the auth callout
// checks them): a user and password, or a JWT bearer token. Without them the
// connection is anonymous, which the policy may refuse.
func WithCredentials(creds *wire.Credentials) ConnectOption {
	return func(o *connectOptions) { o.creds = creds }
}

// WithTracerProvider sets the tracer provider for client spans (default: the global
// one).
func WithTracerProvider(tp trace.TracerProvider) ConnectOption {
	return func(o *connectOptions) { o.tp = tp }
}

// WithLogger sets the logger (default: discard). It also gets the errors NATS
// reports asynchronously (a publish the connection is not permitted, a slow
// consumer), unless WithNATSOptions sets nats.ErrorHandler.
func WithLogger(l *slog.Logger) ConnectOption {
	return func(o *connectOptions) { o.logger = l }
}

// errConnectionLost is the cause of what a lost connection ends: calls in flight
// (as their context's cause), connection-scoped locks ((*Lock).Err) and the change
// to RECOVERING (StateChange.Err). It matches ErrUnavailable, as the calls' errors
// do; tell it from other unavailable errors by identity, not errors.Is.
var errConnectionLost = &wire.Error{Code: wire.CodeUnavailable, Message: "connection to NATS lost"}

// Connect dials NATS at url. It reconnects by itself; sessions opened on it resume
// after a reconnect.
//
// The connection proves a fresh user nkey, its connection key: Roster's auth callout
// lets it subscribe only to its own inbox (_R.<key>.>) and to deliveries for its own
// sessions (roster.v1.deliver.<key>.>). A server without the callout, which sends no
// nonce for a key to sign, is connected to without one (Key is then empty): its
// sessions receive under roster.v1.deliver.-.>, which that server's own permissions
// must guard.
//
// A failed Connect fails with ErrUnavailable, or ErrUnauthenticated when the server
// refused the credentials. A server of url that is a NATS cluster route port or an
// HTTP port (NATS monitoring) is named as such: Connect then asks the servers once
// more what they are, which adds at most two seconds to the failure.
func Connect(url string, opts ...ConnectOption) (*Client, error) {
	o := connectOptions{tp: otel.GetTracerProvider(), logger: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(&o)
	}
	c := &Client{
		log:      o.logger,
		tracer:   o.tp.Tracer("github.com/seed-3c836eab/roster/pkg/client"),
		dropWarn: logthrottle.New(o.logger, "roster: request dropped: its deadline passed while it waited for a handler", dropWarnEvery),
		sessions: map[*Session]struct{}{},
	}
	c.epoch, c.epochCancel = context.WithCancelCause(context.Background())
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("client: connection key: %w", err)
	}
	c.key, _ = kp.PublicKey()
	if err := natsprobe.CheckURLs(url); err != nil {
		// No retry would make it parse: bad_request, not the unavailable a
		// caller retries.
		return nil, fmt.Errorf("client: %w: %w", &wire.Error{Code: wire.CodeBadRequest, Message: "cannot connect"}, err)
	}
	nc, err := nats.Connect(url, c.natsOptions(o, kp)...)
	if errors.Is(err, nats.ErrNkeysNotSupported) {
		// A server that does not authenticate through Roster's callout sends no
		// nonce to sign: nothing there would check the key. The connection goes
		// without one, and its sessions receive under the keyless prefix.
		c.key = ""
		nc, err = nats.Connect(url, c.natsOptions(o, nil)...)
	}
	if err != nil {
		return nil, connectError(url, err, o.nats)
	}
	c.nc = nc
	var next nats.ErrHandler
	if userErrorHandler(o.nats) {
		next = nc.ErrorHandler()
	}
	nc.SetErrorHandler(c.asyncError(next))
	if _, err := nc.Subscribe(wire.ConnectionStateSubjects(c.key), c.stateNotice); err != nil {
		nc.Close()
		return nil, fmt.Errorf("client: subscribe %s: %w", wire.ConnectionStateSubjects(c.key), err)
	}
	return c, nil
}

// natsOptions returns the options of the client's NATS connection: proving the key
// of kp, or with no key when kp is nil.
func (c *Client) natsOptions(o connectOptions, kp nkeys.KeyPair) []nats.Option {
	var opts []nats.Option
	if kp != nil {
		opts = append(opts, nats.Nkey(c.key, kp.Sign), nats.CustomInboxPrefix(wire.ConnectionInbox(c.key)))
	}
	opts = append(opts,
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		// No reconnect buffer: nats.go refuses a publish while it reconnects
		// (ErrReconnectBufExceeded) rather than sending it once back. The SDK ends
		// its calls when its disconnect callback runs, which nats.go runs later, on
		// its callback goroutine: a request published in between, buffered, was
		// delivered after the reconnect to a service its caller had been told did
		// not get it (errNotSentAway).
		nats.ReconnectBufSize(-1),
	)
	opts = append(opts, credentialOptions(o.creds)...)
	opts = append(opts, o.nats...)
	return append(opts,
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			// nats.go calls it also when the connection is closed (Close, or
			// reconnecting given up): connectionClosed handles that, and nothing
			// was lost that could come back.
			if !nc.IsClosed() {
				c.disconnected(err)
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { go c.reconnected() }),
		nats.ClosedHandler(func(*nats.Conn) { c.connectionClosed() }),
	)
}

// stateNotice closes, on this side, the sessions the registry says have closed
// (wire.SessionStateNotice): a close by another session or by the server is known at
// once, where the next keepalive would otherwise learn it.
func (c *Client) stateNotice(m *nats.Msg) {
	// Without the registry's header it is a service's reply to a request whose
	// reply subject another client chose (see wire.HeaderSender).
	if m.Header.Get(wire.HeaderNotice) != "state" {
		return
	}
	var n wire.SessionStateNotice
	if err := json.Unmarshal(m.Data, &n); err != nil || (n.State != wire.StateClosed && !n.Moved) {
		return
	}
	var named []*Session
	c.mu.Lock()
	for s := range c.sessions {
		if s.id == n.SessionID && !s.closing.Load() {
			named = append(named, s)
		}
	}
	c.mu.Unlock()
	if n.State != wire.StateClosed {
		for _, s := range named {
			s.movedAway(n.Revision)
		}
		return
	}
	for _, s := range named {
		s.setClosed(n.Reason, &wire.Error{Code: wire.CodeSessionClosed, Message: fmt.Sprintf("session %s was closed (%s)", n.SessionID, n.Reason)})
	}
}

// connectError maps a failed dial to the SDK's errors: a refused authorization
// (the auth callout denied the credentials) matches ErrUnauthenticated, anything
// else ErrUnavailable. A server of url that is a route port or an HTTP port, not a
// client port, is named as such (natsprobe.WrongPort), with ErrUnavailable: a route port's
// refusal is no judgement of the credentials. opts are the connection's.
func connectError(url string, err error, opts []nats.Option) error {
	if hint := natsprobe.WrongPort(url, opts...); hint != "" {
		return fmt.Errorf("client: %w: %w", &wire.Error{Code: wire.CodeUnavailable, Message: "cannot connect: " + hint}, err)
	}
	code, msg := wire.CodeUnavailable, "cannot connect to "+natsprobe.RedactURLs(url)
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) {
		code, msg = wire.CodeUnauthenticated, "the server refused the connection's credentials"
	}
	return fmt.Errorf("client: %w: %w", &wire.Error{Code: code, Message: msg}, err)
}

func credentialOptions(creds *wire.Credentials) []nats.Option {
	if creds == nil {
		return nil
	}
	switch creds.Type {
	case wire.CredentialsPassword:
		return []nats.Option{nats.UserInfo(creds.Username, creds.Password)}
	case wire.CredentialsJWT:
		return []nats.Option{nats.Token(creds.Token)}
	}
	return nil
}

// Key returns the connection key: the public user nkey this connection proved.
func (c *Client) Key() string { return c.key }

// Conn returns the underlying NATS connection.
func (c *Client) Conn() *nats.Conn { return c.nc }

// Close closes every session opened on c, then the connection, and returns once
// the sessions' background work has stopped. Sessions taken with Attach were opened
// elsewhere: they are left open on the server, and only stop being served here;
// their Lock calls still waiting fail with ErrUnavailable, and their requests are
// withdrawn (while ctx allows) before the connection closes, so that the session
// is never granted a lock nobody here could release. Locks they hold stay held,
// but for the connection-scoped ones, which go with the connection: their Lost
// closes (ErrUnavailable). Calling Close again returns nil; any other call on c, or on a session taken
// with Attach, fails with ErrUnavailable once it has returned. While the connection
// is away, the closes wait for it to be back (Session.Close), for 5 s at most in
// all. An Open whose reply
// comes after Close began fails with ErrUnavailable and closes that session on the
// server; Close waits for that close (while ctx allows) before it closes the
// connection.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	c.closing = true
	var open []*Session
	for s := range c.sessions {
		open = append(open, s)
	}
	c.mu.Unlock()
	var errs []error
	wait, cancel := awayWait(ctx)
	defer cancel()
	for _, s := range open {
		if s.attached {
			s.finish()
			continue
		}
		if err := s.close(ctx, wait); err != nil && !errors.Is(err, ErrSessionClosed) {
			errs = append(errs, err)
		}
	}
	// An attached session stays open on the server: its lock requests must be
	// withdrawn while the connection lives, or one granted later is held by the
	// session with nobody to use or release it.
	for _, s := range open {
		if s.attached {
			s.withdrawLeftovers(ctx)
		}
	}
	c.waitOrphans(ctx)
	c.nc.Close()
	// The connection-scoped locks of an attached session go with the connection:
	// the server releases them once it sees it closed. No later loss is told to a
	// session no longer served here (connectionClosed finds it gone), so they are
	// reported lost now; the session-scoped ones stay held.
	for _, s := range open {
		if s.attached {
			s.loseLocks(true, errClosedConn)
		}
	}
	// A heartbeat in flight fails at once on the closed connection.
	for _, s := range open {
		<-s.hbDone
	}
	// The drops not logged yet are counted now: a program that exits after Close
	// would never see the line due at the end of the interval.
	c.dropWarn.Flush()
	return errors.Join(errs...)
}

func (c *Client) disconnected(err error) {
	c.mu.Lock()
	c.epochCancel(errConnectionLost)
	sessions := c.sessionList()
	c.mu.Unlock()
	c.log.Warn("roster: connection lost", "err", err)
	for _, s := range sessions {
		s.connectionLost()
	}
}

func (c *Client) reconnected() {
	c.mu.Lock()
	if !c.nc.IsConnected() {
		// Disconnected again before this ran: keep the ended epoch, so calls fail
		// fast; the next reconnect resumes.
		c.mu.Unlock()
		return
	}
	if c.epoch.Err() != nil {
		// Not when another reconnect's handler started the epoch already: calls
		// made since wait on that one, and the next loss must end them.
		c.epoch, c.epochCancel = context.WithCancelCause(context.Background())
	}
	c.wakeBackLocked()
	sessions := c.sessionList()
	c.mu.Unlock()
	for _, s := range sessions {
		s.resume()
	}
}

func (c *Client) connectionClosed() {
	c.mu.Lock()
	c.closed = true
	c.epochCancel(errConnectionLost)
	c.wakeBackLocked()
	sessions := c.sessionList()
	c.mu.Unlock()
	for _, s := range sessions {
		s.setClosed(wire.ClosedFailed, errClosedConn)
	}
}

// wakeBackLocked wakes the waitBack calls waiting: the connection is back, or
// closed for good.
func (c *Client) wakeBackLocked() {
	if c.back != nil {
		close(c.back)
		c.back = nil
	}
}

// waitBack waits, while ctx allows, for a connection that is away (reconnecting) to
// be back, and reports whether it is: at once when it is connected, false once it
// is closed or ctx ends. Back means both that nats.go is connected and that the
// SDK has seen it (a new epoch): nats.go refuses a publish as soon as it loses the
// connection, before the SDK's callback of the loss has run.
func (c *Client) waitBack(ctx context.Context) bool {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return false
		}
		if c.epoch.Err() == nil && c.nc.IsConnected() {
			c.mu.Unlock()
			return true
		}
		if c.back == nil {
			c.back = make(chan struct{})
		}
		back := c.back
		c.mu.Unlock()
		select {
		case <-back:
		case <-ctx.Done():
			return false
		}
	}
}

// addOnce registers s, which Attach made, unless c already has a Session for its
// session: that one is returned instead (ok, have not nil). A Session closed here,
// or whose Attach was refused, is no longer counted (gone). ok is false once Close has begun or the
// connection is closed (add).
func (c *Client) addOnce(s *Session) (have *Session, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || c.closed || c.nc.IsClosed() {
		return nil, false
	}
	for o := range c.sessions {
		if o.id == s.id && !o.gone.Load() {
			return o, true
		}
	}
	c.sessions[s] = struct{}{}
	return nil, true
}

func (c *Client) sessionList() []*Session {
	out := make([]*Session, 0, len(c.sessions))
	for s := range c.sessions {
		out = append(out, s)
	}
	return out
}

// add registers s with c, so that c's connection events reach it. Once Close has
// begun, or the connection is closed, nothing would close s or tell it so: add then
// reports false (an open whose reply raced with Client.Close).
func (c *Client) add(s *Session) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || c.closed || c.nc.IsClosed() {
		return false
	}
	c.sessions[s] = struct{}{}
	return true
}

// orphanCloseTimeout bounds the close of a session whose open was answered after
// Close began (closeOrphan).
const orphanCloseTimeout = 2 * time.Second

// closeOrphan closes on the server the session s, which open could not register
// because Close had begun (add): nothing here would keep it alive, and it would
// stay open on the server until its timeout, counted against its principal's
// sessions and listed among the open ones. It is best-effort: once Close has
// closed the connection, or is about to, nothing can be sent, and the session
// expires after its timeout, as one does whose open reply a closed connection
// never received.
func (c *Client) closeOrphan(ctx context.Context, s *Session) {
	if !c.beginOrphanClose() {
		return
	}
	defer c.orphanClosed()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), orphanCloseTimeout)
	defer cancel()
	hdr := nats.Header{wire.HeaderSession: {s.id}, wire.HeaderToken: {s.token}}
	if err := c.call(ctx, wire.SubjectSessionClose, hdr, &wire.SessionCloseRequest{}, &wire.SessionCloseResponse{}); err != nil {
		c.log.Warn("roster: a session opened as the client closed is left to expire", "session", s.id, "err", err)
	}
}

// beginOrphanClose counts an orphan's close in progress, unless the connection is
// closed or Close no longer waits for one (final).
func (c *Client) beginOrphanClose() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.final || c.closed || c.nc.IsClosed() {
		return false
	}
	c.orphans++
	return true
}

// orphanClosed ends an orphan's close counted by beginOrphanClose.
func (c *Client) orphanClosed() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.orphans--; c.orphans == 0 && c.orphansDone != nil {
		close(c.orphansDone)
		c.orphansDone = nil
	}
}

// waitOrphans waits, while ctx allows, for the orphans' closes in progress, then
// marks c final so that no other begins: Close closes the connection next.
func (c *Client) waitOrphans(ctx context.Context) {
	for {
		c.mu.Lock()
		if c.orphans == 0 || ctx.Err() != nil {
			c.final = true
			c.mu.Unlock()
			return
		}
		if c.orphansDone == nil {
			c.orphansDone = make(chan struct{})
		}
		done := c.orphansDone
		c.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
}

// errNotSentAway is the error of a call made while the connection is away: refused by
// untilLost once the SDK's disconnect callback ran, or by nats.go before it did (it
// keeps no reconnect buffer: natsOptions), then wrapping
// nats.ErrReconnectBufExceeded. Nothing was sent, so nothing was applied, unlike a
// request lost in flight ("lost during the request"). With a reconnect buffer of
// the application's own, nats.go refuses a request that would overflow it: not
// sent either.
var errNotSentAway = fmt.Errorf("%w: %w", &wire.Error{Code: wire.CodeUnavailable, Message: "not connected to NATS (reconnecting)"}, ErrNotSent)

// errClosedConn is what a session gets that would be registered on a closed
// connection.
var errClosedConn = &wire.Error{Code: wire.CodeUnavailable, Message: "connection to NATS closed"}

// subscribeError is the error of a subscription NATS refused: on a closed
// connection it matches ErrUnavailable, as a call's does.
func subscribeError(subject string, err error) error {
	if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrConnectionDraining) {
		return fmt.Errorf("client: subscribe %s: %w: %w", subject, errClosedConn, err)
	}
	return fmt.Errorf("client: subscribe %s: %w", subject, err)
}

func (c *Client) remove(s *Session) {
	c.mu.Lock()
	delete(c.sessions, s)
	c.mu.Unlock()
}

// call sends one request in a client span. hdr carries the session headers for
// session-scoped requests. A call in flight when the connection is lost fails at
// once with ErrUnavailable.
//
// The span has the attributes of OTel's RPC conventions the service's server span
// has, with the same values: rpc.system.name nats, rpc.method the subject, and
// rpc.response.status_code ok or the wire code.
func (c *Client) call(ctx context.Context, subject string, hdr nats.Header, req, resp any) error {
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("rpc.system.name", "nats"), attribute.String("rpc.method", subject))}
	if sc, ok := ctx.Value(linkedKey{}).(trace.SpanContext); ok {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
	}
	ctx, span := c.tracer.Start(ctx, subject, opts...)
	defer span.End()

	err := c.callUntilLost(ctx, subject, hdr, req, resp)
	if err != nil {
		spanError(span, err)
		var we *wire.Error
		if errors.As(err, &we) && we.Code != "" {
			span.SetAttributes(attribute.String("rpc.response.status_code", string(we.Code)))
		}
		return err
	}
	span.SetAttributes(attribute.String("rpc.response.status_code", "ok"))
	return nil
}

// linkedKey is the context key of the span context a call's client span links
// (inOwnTrace).
type linkedKey struct{}

// inOwnTrace returns ctx for a call that starts a trace of its own, its client span
// a root that links ctx's span: for the reads of an operation that goes on without
// end (FollowEvents), which would otherwise grow the caller's trace for as long as
// it runs. The parent is taken out of the context, not only ignored by the tracer:
// a tracer that records nothing (the CLI's without an exporter) passes the context's
// span on to the service as it is. A span not sampled is left: nothing is recorded
// in its trace, which does not grow; nor is a context without a span, whose calls
// are roots already.
func inOwnTrace(ctx context.Context) context.Context {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsSampled() {
		return ctx
	}
	return context.WithValue(trace.ContextWithSpanContext(ctx, trace.SpanContext{}), linkedKey{}, sc)
}

func (c *Client) callUntilLost(ctx context.Context, subject string, hdr nats.Header, req, resp any) error {
	ctx, done, err := c.untilLost(ctx)
	if err != nil {
		return err
	}
	defer done()

	err = wire.Call(ctx, c.nc, subject, hdr, req, resp)
	switch {
	case err == nil:
	case errors.Is(err, nats.ErrMaxPayload):
		// Refused before it was sent; the service refuses a slightly smaller one
		// with too_large, and so must this be.
		err = fmt.Errorf("%w: %w", &wire.Error{Code: wire.CodeTooLarge, Message: fmt.Sprintf("the request is larger than the server's max_payload (%d bytes)", c.nc.MaxPayload())}, err)
	case errors.Is(err, nats.ErrReconnectBufExceeded):
		// Before the connection-lost case: the epoch may have ended meanwhile, but
		// this request is known not to have been sent, which "lost during the
		// request" would leave in doubt.
		err = fmt.Errorf("%w: %w", errNotSentAway, err)
	case context.Cause(ctx) == errConnectionLost:
		err = lostDuring("wire: "+subject, err)
	}
	return err
}

// lostDuring is the error of a call in flight that the loss of the connection ended
// (untilLost's context, ended with cause errConnectionLost): it matches
// ErrUnavailable, and not the context.Canceled that ending the call's context
// leaves in err, which would tell a caller matching it that it gave up itself.
// what names the call in the message.
func lostDuring(what string, err error) error {
	lost := &wire.Error{Code: wire.CodeUnavailable, Message: "connection to NATS lost during the request"}
	if errors.Is(err, context.Canceled) {
		return lostInFlight{fmt.Errorf("%w: %s", lost, what)}
	}
	return lostInFlight{fmt.Errorf("%w: %w", lost, err)}
}

// lostInFlight marks the error of a request that was sent and whose answer the loss
// of the connection cut off: the service may have done what it asked.
type lostInFlight struct{ error }

func (e lostInFlight) Unwrap() error { return e.error }

// inDoubt reports whether err is that of a request the service may have carried
// out, its answer lost with the connection.
func inDoubt(err error) bool {
	var lost lostInFlight
	return errors.As(err, &lost)
}

// spanError ends span's operation as failed with err: an error status, the error as
// an event, and its wire code as roster.error.code (as the services' spans have it)
// and as OTel's error.type ("_OTHER" for an error without a code).
func spanError(span trace.Span, err error) {
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
	class := "_OTHER"
	var we *wire.Error
	if errors.As(err, &we) && we.Code != "" {
		class = string(we.Code)
		span.SetAttributes(attribute.String("roster.error.code", class))
	}
	span.SetAttributes(attribute.String("error.type", class))
}

// callDone ends a call untilLost counted in flight (closeWhenIdle).
func (c *Client) callDone() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.calls--; c.calls == 0 && c.idle != nil {
		close(c.idle)
		c.idle = nil
	}
}

// closeWhenIdle closes the connection once no call is in flight, or after wait: a
// session that owns its connection and was closed by another (the registry's
// notice) has calls of its own still waiting for the service's answer —
// session_closed, or what they did before the close — which closing the connection
// at once would turn into unavailable.
func (c *Client) closeWhenIdle(wait time.Duration) {
	c.mu.Lock()
	if c.calls == 0 {
		c.mu.Unlock()
		c.nc.Close()
		return
	}
	if c.idle == nil {
		c.idle = make(chan struct{})
	}
	idle := c.idle
	c.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
	}
	c.nc.Close()
}

// untilLost returns a context that also ends, with cause errConnectionLost, when the
// connection is lost, and the function that releases it. It fails at once while the
// connection is closed or away. Until released, the call counts as in flight
// (closeWhenIdle).
func (c *Client) untilLost(ctx context.Context) (context.Context, func(), error) {
	c.mu.Lock()
	epoch, closed := c.epoch, c.closed
	away := epoch.Err() != nil
	if !closed && !away {
		c.calls++
	}
	c.mu.Unlock()
	if closed {
		return nil, nil, errClosedConn
	}
	if away {
		return nil, nil, errNotSentAway
	}
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(epoch, func() { cancel(errConnectionLost) })
	return ctx, func() { stop(); cancel(nil); c.callDone() }, nil
}
