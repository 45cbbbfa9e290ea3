package client

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// State is the state of a session as this client sees it.
type State = wire.SessionState

// Session states (Diffusion's names).
const (
	StateConnecting = wire.StateConnecting
	StateActive     = wire.StateActive
	StateRecovering = wire.StateRecovering
	StateClosed     = wire.StateClosed
)

// StateChange is passed to state listeners.
type StateChange struct {
	Old, New State
	// Reason is set when New is CLOSED.
	Reason wire.CloseReason
	// Err is the error that caused the change, if any: on a change to RECOVERING
	// it matches ErrUnavailable; on a change to CLOSED, the error that closed the
	// session (ErrUnavailable when the connection closed, ErrSessionNotFound
	// when a resume found the session gone, the close request's error …).
	Err error
}

// Options for opening a session.
type Options struct {
	// Credentials to authenticate the session; nil opens an anonymous session.
	Credentials *wire.Credentials
	// Properties are proposed user properties; the server may veto or rewrite them.
	Properties map[string]string
	// Timeout is the inactivity timeout (0: the server's default, 60 s unless
	// configured), rounded up to whole milliseconds; the server refuses one
	// outside its bounds (1 s to 24 h by default) with ErrBadRequest.
	Timeout time.Duration
	// Permanent asks for a session without inactivity timeout (PERMANENT_SESSION).
	Permanent bool
	// GatewayType and GatewayID mark sessions a gateway opens for its own users
	// ($GatewayType, $GatewayId), both or neither. The connection's own principal
	// (WithCredentials on Connect) needs GATEWAY_SESSION; without it Open fails with
	// ErrForbidden. Credentials are still the user's: they decide the session's
	// principal and roles.
	GatewayType, GatewayID string
	// ClientIP, with GatewayType, is the address of the gateway's user: it becomes
	// $ClientIP, and failed attempts are counted by it instead of by the gateway's
	// address, so that one user's wrong passwords throttle neither the gateway nor
	// its other users.
	ClientIP string
	// HeartbeatInterval is how often the SDK sends keepalives (default: a third of
	// the smaller of the timeout and the registry's reconnect window, at most 5 s
	// and at least 100 ms; it follows the window as the registry last told it, which
	// a restart of Roster with another window changes). One not below the timeout lets the session expire unless
	// the application calls Keepalive itself; one not well below the smaller of the
	// two gets the session's locks reported lost between keepalives (see
	// (*Lock).Lost).
	HeartbeatInterval time.Duration
}

// Anonymous, Password and JWT build credentials.
func Anonymous() *wire.Credentials { return &wire.Credentials{Type: wire.CredentialsAnonymous} }

// Password returns user/password credentials.
func Password(user, password string) *wire.Credentials {
	return &wire.Credentials{Type: wire.CredentialsPassword, Username: user, Password: password}
}

// JWT returns JWT bearer credentials.
func JWT(token string) *wire.Credentials {
	return &wire.Credentials{Type: wire.CredentialsJWT, Token: token}
}

// Session is an open Roster session. Any number of goroutines may use it at once.
// After it is closed — by Close, by the server, or by expiry — every call returns an
// error matching ErrSessionClosed.
type Session struct {
	c         *Client
	id        string
	ownClient bool
	attached  bool // taken with Attach: opened elsewhere
	// elsewhere: bound to another process's connection (Attach, or another client
	// took it over) until a resume from this one binds it here.
	elsewhere atomic.Bool
	// boundRev is the record's revision when the session was last bound here (open
	// or resume): a notice that it moved away at an earlier revision is stale.
	boundRev  atomic.Uint64
	heartbeat time.Duration // the interval the heartbeats start with
	hbAsked   time.Duration // Options.HeartbeatInterval (0: the default, which follows the bound)
	// windowSet tells the heartbeats that the registry told a new reconnect window.
	windowSet chan struct{}

	mu        sync.Mutex
	info      *wire.Session
	token     string
	state     State
	reason    wire.CloseReason
	listeners []*listener
	changed   chan struct{}         // closed at the next change of state (see stateChanged)
	locks     map[string]*Lock      // by name
	waits     map[lockKey]*lockWait // Lock calls' shared requests
	abandoned []abandoned           // lock requests to withdraw once resumed
	handlers  map[*nats.Subscription]context.CancelFunc
	routes    map[*route]struct{} // the registrations deliveries are handed to (fanOut)
	stopHB    chan struct{}
	hbDone    chan struct{}
	// rotating is closed once the ChangePrincipal in flight, if any, has its answer
	// (send); changing lets one ChangePrincipal run at a time.
	rotating chan struct{}
	changing chan struct{}
	// attaching, for a Session Attach made, is closed once the registry has checked
	// it. gone is set when the Session stops being one an Attach may share: closed
	// here, or its own Attach refused (set before attaching is closed).
	attaching chan struct{}
	gone      atomic.Bool
	closeOnce sync.Once
	closing   atomic.Bool // Close is under way
	settling  atomic.Bool // settleLockWork's goroutine runs
	// lockWork counts the Lock calls' shared requests (runWait) until each, if
	// withdrawn, has its withdrawal answered; none starts once stopHB is closed.
	lockWork sync.WaitGroup

	// When the SDK can no longer vouch for the session's locks (doubt.go), under mu.
	window      time.Duration // the registry's reconnect window, as last told
	confirmedAt time.Time     // when the latest request answered ACTIVE was sent (monotonic)
	doubtAt     time.Time     // confirmedAt plus the bound: locks are reported lost then
	doubtTimer  *time.Timer
	unsure      map[string]uint64 // holds reported lost in doubt, to release by token
	lostTokens  map[string]uint64 // per name, the highest token reported lost in doubt
	// keptHolds tells, while the session is RECOVERING, whether the server may keep
	// its connection-scoped holds through it: the registry counted lost a connection
	// that works (connectionCountedLost), not one that closed (connectionLost).
	keptHolds bool
}

// errNoSession answers a reply that should carry a session and does not.
var errNoSession = &wire.Error{Code: wire.CodeInternal, Message: "reply without a session"}

// Open connects to NATS at url and opens a session on that connection. Closing
// the session closes the connection. opts.Credentials authenticate the connection
// too (as WithCredentials would; one given in connectOpts wins), so credentials
// the auth callout refuses fail the dial itself, with an error saying that the
// server refused the connection's credentials. It fails with ErrUnavailable when NATS or
// the registry cannot be reached, ErrUnauthenticated when the credentials are
// refused, ErrForbidden for Permanent without PERMANENT_SESSION, and ErrBadRequest
// for options no session can have. ctx bounds the open request; dialling NATS is
// bounded by the NATS client's own timeout (nats.Timeout, 2 s by default).
func Open(ctx context.Context, url string, opts Options, connectOpts ...ConnectOption) (*Session, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	c, err := Connect(url, append([]ConnectOption{WithCredentials(opts.Credentials)}, connectOpts...)...)
	if err != nil {
		return nil, err
	}
	s, err := c.open(ctx, opts, true)
	if err != nil {
		c.nc.Close()
		return nil, err
	}
	return s, nil
}

// Open opens a session on c's connection. It fails as the package-level Open does,
// and with ErrUnavailable once c is closed.
func (c *Client) Open(ctx context.Context, opts Options) (*Session, error) {
	return c.open(ctx, opts, false)
}

// check refuses options no session can mean, before anything is sent.
func (o Options) check() error {
	bad := func(format string, args ...any) error {
		return &wire.Error{Code: wire.CodeBadRequest, Message: fmt.Sprintf(format, args...)}
	}
	switch {
	case o.Timeout < 0:
		return bad("Options.Timeout %v is negative (0: the server's default)", o.Timeout)
	case o.HeartbeatInterval < 0:
		return bad("Options.HeartbeatInterval %v is negative (0: the SDK's default)", o.HeartbeatInterval)
	}
	return nil
}

func (c *Client) open(ctx context.Context, opts Options, ownClient bool) (*Session, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	req := &wire.SessionOpenRequest{
		Credentials: opts.Credentials,
		Properties:  opts.Properties,
		// Rounded up: a timeout below a millisecond must not become 0, the
		// server's default.
		TimeoutMS:   timeoutMS(opts.Timeout),
		Permanent:   opts.Permanent,
		GatewayType: opts.GatewayType,
		GatewayID:   opts.GatewayID,
		ClientIP:    opts.ClientIP,
	}
	subject := wire.SubjectSessionOpen
	if opts.GatewayType != "" || opts.GatewayID != "" {
		subject = wire.SubjectSessionOpenGateway
		var stop func()
		ctx, stop = c.watchDenied(ctx)
		defer stop()
	}
	var resp wire.SessionOpenResponse
	sent := time.Now()
	if err := c.call(ctx, subject, nil, req, &resp); err != nil {
		if context.Cause(ctx) == errGatewayDenied {
			return nil, fmt.Errorf("%w: %w", errGatewayDenied, err)
		}
		return nil, err
	}
	if resp.Session == nil || resp.Token == "" {
		return nil, &wire.Error{Code: wire.CodeInternal, Message: "open reply without session or token"}
	}
	s := &Session{c: c, id: resp.Session.ID, ownClient: ownClient, info: resp.Session, token: resp.Token, state: StateActive,
		hbAsked: opts.HeartbeatInterval, windowSet: make(chan struct{}, 1),
		stopHB: make(chan struct{}), hbDone: make(chan struct{}), changing: make(chan struct{}, 1)}
	s.boundRev.Store(resp.Session.Revision)
	s.learnWindowLocked(resp.ReconnectWindowMS) // s is not shared yet
	s.heartbeat = heartbeatInterval(opts.HeartbeatInterval, s.bound())
	if !c.add(s) {
		// The session is open on the server, with no connection to serve it.
		c.closeOrphan(ctx, s)
		return nil, errClosedConn
	}
	s.confirmed(sent, resp.ReconnectWindowMS)
	go s.heartbeats()
	return s, nil
}

// unsampled returns a context in a trace that is not sampled, for the SDK's own
// heartbeats: one every few seconds per session, each a trace of its own, would
// bury an application's traces in the SDK's and the registry's spans. The flag
// travels with the request, so that the registry (sampling parent-based) records
// none either.
func unsampled() context.Context {
	var tid trace.TraceID
	var sid trace.SpanID
	binary.LittleEndian.PutUint64(tid[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(tid[8:], rand.Uint64())
	binary.LittleEndian.PutUint64(sid[:], rand.Uint64()|1)
	return trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}))
}

// heartbeatInterval is the interval asked for or, by default, a third of bound — the
// smaller of the session's timeout and the registry's reconnect window — at most
// 5 s and at least 100 ms. Three keepalives then fall in every stretch of bound, so
// that neither the session expires nor its locks are reported lost while the
// keepalives are answered (doubt.go), even with one or two lost.
func heartbeatInterval(asked, bound time.Duration) time.Duration {
	if asked > 0 {
		return asked
	}
	d := 5 * time.Second
	if bound > 0 && bound/3 < d {
		d = bound / 3
	}
	return max(d, 100*time.Millisecond)
}

// bound is boundLocked under s.mu.
func (s *Session) bound() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.boundLocked()
}

// ID returns the session id.
func (s *Session) ID() string { return s.id }

// Principal returns the session's principal ("" for anonymous sessions).
func (s *Session) Principal() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.info.Principal
}

// Roles returns the session's roles.
func (s *Session) Roles() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.info.Roles)
}

// Properties returns the fixed and user properties as last seen by this client
// (Refresh fetches them anew).
func (s *Session) Properties() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := maps.Clone(s.info.Fixed)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, s.info.Properties)
	return out
}

// Info returns a copy of the session as last seen by this client.
func (s *Session) Info() wire.Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return copySession(s.info)
}

// copySession returns a copy of in that shares no map, slice or pointer with it:
// the caller may change it while other goroutines read the session's own.
func copySession(in *wire.Session) wire.Session {
	out := *in
	out.Roles = slices.Clone(in.Roles)
	out.Fixed = maps.Clone(in.Fixed)
	out.Properties = maps.Clone(in.Properties)
	if in.ClosedAt != nil {
		at := *in.ClosedAt
		out.ClosedAt = &at
	}
	return out
}

// State returns the session's state.
func (s *Session) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// stateChanged returns a channel closed at the session's next change of state.
func (s *Session) stateChanged() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return s.changed
}

// signalChangeLocked closes the channel stateChanged handed out.
func (s *Session) signalChangeLocked() {
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
}

// listener is one OnStateChange registration; removal finds it by identity, as
// funcs cannot be compared.
type listener struct{ fn func(StateChange) }

// OnStateChange registers fn to be called on every change of state. fn runs on the
// goroutine that observed the change and must not block. remove unregisters it (a
// second call does nothing); a change whose delivery had begun when remove was called
// may still reach fn, none after.
func (s *Session) OnStateChange(fn func(StateChange)) (remove func()) {
	l := &listener{fn: fn}
	s.mu.Lock()
	s.listeners = append(s.listeners, l)
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		s.listeners = slices.DeleteFunc(s.listeners, func(x *listener) bool { return x == l })
		s.mu.Unlock()
	}
}

// WaitActive waits until the session is ACTIVE: at once when it is, after a resume
// when it is RECOVERING (or still CONNECTING). It fails with ErrSessionClosed when
// the session closes first, with ErrUnavailable when the Client of a session taken
// with Attach is closed first, and with ctx's error when ctx ends first.
func (s *Session) WaitActive(ctx context.Context) error {
	for {
		// Taken before the state is read: a change between the two closes it.
		changed := s.stateChanged()
		s.mu.Lock()
		state := s.state
		var closed error
		if state == StateClosed {
			closed = s.closedErr()
		}
		s.mu.Unlock()
		switch state {
		case StateActive:
			return nil
		case StateClosed:
			return closed
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stopHB:
			// No longer served here (a session taken with Attach whose Client was
			// closed): nothing here will resume it.
			return s.goneErr()
		}
	}
}

// Client returns the client the session was opened on.
func (s *Session) Client() *Client { return s.c }

// headers returns the session headers, or ErrSessionClosed.
func (s *Session) headers() (nats.Header, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == StateClosed {
		return nil, s.closedErr()
	}
	return nats.Header{wire.HeaderSession: {s.id}, wire.HeaderToken: {s.token}}, nil
}

// send sends a session-scoped request with the session's headers. A request refused
// with invalid_token because a ChangePrincipal of this Session rotated the token
// while it was on its way is sent again with the new token: the token is checked
// before anything is done, so the refused request took no effect. Without this,
// every call another goroutine made during a ChangePrincipal could fail with
// ErrInvalidToken, a Close so refused left the session open on the server, and a
// resume so refused closed the session on this side only.
func (s *Session) send(ctx context.Context, subject string, req, resp any) error {
	for {
		hdr, err := s.headers()
		if err != nil {
			return err
		}
		err = s.c.call(ctx, subject, hdr, req, resp)
		if cerr := s.closedDuring(err); cerr != nil {
			return cerr
		}
		if !errors.Is(err, ErrInvalidToken) || !s.rotatedSince(ctx, hdr.Get(wire.HeaderToken)) {
			return err
		}
	}
}

// rotatedSince reports whether this Session's token is no longer used, waiting for
// a ChangePrincipal in flight: the registry may refuse used as soon as it has
// written the new token, before the change's answer reaches this client.
func (s *Session) rotatedSince(ctx context.Context, used string) bool {
	for {
		s.mu.Lock()
		token, rotating := s.token, s.rotating
		s.mu.Unlock()
		if token != used {
			return true
		}
		if rotating == nil {
			return false
		}
		select {
		case <-rotating:
		case <-ctx.Done():
			return false
		}
	}
}

func (s *Session) closedErr() error {
	msg := "session " + s.id + " is closed"
	if s.reason != "" {
		msg += " (" + string(s.reason) + ")"
	}
	return &wire.Error{Code: wire.CodeSessionClosed, Message: msg}
}

// do sends a session-scoped request. A session_closed reply closes the session.
func (s *Session) do(ctx context.Context, subject string, req, resp any) error {
	err := s.send(ctx, subject, req, resp)
	s.closeOnReply(err)
	return err
}

// closedDuring returns err, the error of a call of the session, wrapped in the
// session's closed error when err is unavailable and the session was closed here
// meanwhile: the connection a Close closes (once the calls in flight on it are
// answered, or 5 s have passed) ends the call, and the caller is told the session
// closed, as every later call is. Otherwise it returns nil.
func (s *Session) closedDuring(err error) error {
	if !errors.Is(err, ErrUnavailable) {
		return nil
	}
	if _, closed := s.headers(); closed != nil {
		return fmt.Errorf("%w: %w", closed, err)
	}
	return nil
}

// closeOnReply closes the session on this side when err, the answer to a request
// about the session itself, says the server has closed it.
func (s *Session) closeOnReply(err error) {
	if !errors.Is(err, ErrSessionClosed) && !errors.Is(err, ErrSessionNotFound) {
		return
	}
	// The registry names the reason in a session_closed message; a session it no
	// longer knows at all failed.
	reason := reasonFrom(err)
	if reason == "" && errors.Is(err, ErrSessionClosed) {
		// Another service saw the session closed, without its reason: the lock
		// service answering a waiting acquire, before the close's own answer or
		// notice came. The session's own Close under way sets by_client; otherwise
		// the registry tells.
		if s.closing.Load() || s.State() == StateClosed {
			return
		}
		reason = s.askCloseReason()
	}
	s.setClosed(reasonOr(reason, wire.ClosedFailed), err)
}

// askReasonWait bounds the request that asks the registry why a session closed.
const askReasonWait = 2 * time.Second

// askCloseReason asks the registry why the session is closed: "" when it does not
// say. A get of the own session, which the registry answers session_closed with
// the reason from the record it reads; a keepalive is answered from the instance's
// copy, which in a cluster may not have the close yet, and its ACTIVE left the
// session closed here as failed.
func (s *Session) askCloseReason() wire.CloseReason {
	ctx, cancel := context.WithTimeout(context.Background(), askReasonWait)
	defer cancel()
	return reasonFrom(s.send(ctx, wire.SubjectSessionGet, &wire.SessionGetRequest{}, &wire.SessionGetResponse{}))
}

// doOther sends a session-scoped request that names other sessions (by id or
// filter). A session_closed or session_not_found reply may then be about the
// other session rather than the caller's own: a keepalive tells which, and closes
// this session only if it is the one that is gone.
func (s *Session) doOther(ctx context.Context, subject string, req, resp any) error {
	err := s.send(ctx, subject, req, resp)
	if errors.Is(err, ErrSessionClosed) || errors.Is(err, ErrSessionNotFound) {
		if kerr := s.Keepalive(ctx); errors.Is(kerr, ErrSessionClosed) || errors.Is(kerr, ErrSessionNotFound) {
			return kerr
		}
	}
	return err
}

func reasonFrom(err error) wire.CloseReason {
	var we *wire.Error
	if errors.As(err, &we) {
		for _, r := range []wire.CloseReason{wire.ClosedByClient, wire.ClosedByServer, wire.ClosedExpired, wire.ClosedFailed} {
			if strings.Contains(we.Message, "("+string(r)+")") {
				return r
			}
		}
	}
	return ""
}

// Refresh fetches the session's state and properties from the registry.
func (s *Session) Refresh(ctx context.Context) (wire.Session, error) {
	var resp wire.SessionGetResponse
	sent := time.Now()
	if err := s.do(ctx, wire.SubjectSessionGet, &wire.SessionGetRequest{}, &resp); err != nil {
		return wire.Session{}, err
	}
	if resp.Session == nil {
		return wire.Session{}, errNoSession
	}
	s.learnInfo(resp.Session)
	if resp.Session.State == StateActive {
		s.confirmed(sent, resp.ReconnectWindowMS)
	}
	return copySession(resp.Session), nil
}

// SetProperties sets and removes user properties of the session.
func (s *Session) SetProperties(ctx context.Context, set map[string]string, remove ...string) error {
	var resp wire.SessionUpdateResponse
	if err := s.do(ctx, wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Set: set, Remove: remove}, &resp); err != nil {
		return err
	}
	if resp.Session != nil {
		s.learnInfo(resp.Session)
	}
	return nil
}

// learnInfo takes info, from a reply, as the session's state and properties — unless
// the session has been closed here since the request was sent: the reply's ACTIVE
// record would then stand beside a CLOSED state, Info saying one thing and State
// another.
func (s *Session) learnInfo(info *wire.Session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != StateClosed {
		s.info = info
	}
}

// Keepalive tells the registry the session is active. The SDK sends keepalives by
// itself; call this only to report activity sooner.
func (s *Session) Keepalive(ctx context.Context) error {
	_, err := s.keepalive(ctx)
	return err
}

func (s *Session) keepalive(ctx context.Context) (wire.SessionState, error) {
	var resp wire.SessionKeepaliveResponse
	sent := time.Now()
	err := s.do(ctx, wire.SubjectSessionKeepalive, &wire.SessionKeepaliveRequest{}, &resp)
	if err == nil && resp.State == StateActive {
		s.confirmed(sent, resp.ReconnectWindowMS)
	}
	return resp.State, err
}

// ChangePrincipal re-authenticates the session with new credentials. The session
// keeps its id; its principal, roles and token change. Calls other goroutines make
// meanwhile are sent again with the new token should the registry refuse the old
// one. Changes of one Session are made one at a time, each with the token the one
// before it gave.
func (s *Session) ChangePrincipal(ctx context.Context, creds *wire.Credentials) error {
	select {
	case s.changing <- struct{}{}:
	case <-ctx.Done():
		return ended(ctx, "the change of principal before it")
	}
	defer func() { <-s.changing }()
	rotating := make(chan struct{})
	s.mu.Lock()
	s.rotating = rotating
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.rotating = nil
		s.mu.Unlock()
		close(rotating)
	}()
	var resp wire.SessionChangePrincipalResponse
	// Not send's retry: the only rotation to wait for would be this one.
	hdr, err := s.headers()
	if err == nil {
		err = s.c.call(ctx, wire.SubjectSessionChangePrincipal, hdr, &wire.SessionChangePrincipalRequest{Credentials: creds}, &resp)
		if cerr := s.closedDuring(err); cerr != nil {
			err = cerr
		}
		s.closeOnReply(err)
	}
	if err != nil {
		return err
	}
	if resp.Session == nil || resp.Token == "" {
		return &wire.Error{Code: wire.CodeInternal, Message: "change_principal reply without session or token"}
	}
	s.mu.Lock()
	s.token = resp.Token
	if s.state != StateClosed { // as learnInfo
		s.info = resp.Session
	}
	s.mu.Unlock()
	return nil
}

// Close closes the session. It is idempotent: closing a closed session returns nil.
// The session is closed on this side whatever the server answers: heartbeats and
// handlers stop, and a connection Open made is closed in the background, once the
// calls other goroutines still have in flight on it are answered (at most 5 s
// later), so its goroutines may outlive Close by that long; a call still
// unanswered then fails with an error matching ErrSessionClosed (and
// ErrUnavailable: it may have taken effect). While the connection
// is away (reconnecting), Close waits for it to be back and then sends the close:
// for closeAwayWait (5 s) at most, and not past ctx's end. When the close
// request fails all the same (the server is unreachable, say), Close returns that
// error and the server ends the session by its inactivity timeout, or, once it
// counts the connection lost, at the end of its reconnect window (reason failed),
// holding its locks until then. Handlers still running when Close returns have
// their context ended and are not waited for: the function Handle returned waits
// for them. Requests still waiting for a handler are answered gone (see Handle).
func (s *Session) Close(ctx context.Context) error {
	wait, cancel := awayWait(ctx)
	defer cancel()
	return s.close(ctx, wait)
}

// close is Close, waiting for a connection that is away while wait allows.
func (s *Session) close(ctx, wait context.Context) error {
	if _, err := s.headers(); err != nil {
		s.finish()
		return nil
	}
	// The registry tells the connection of the close before it replies: the notice
	// must not close the session (and a connection Open made) under this call.
	s.closing.Store(true)
	err := s.sendClose(ctx, wait)
	if errors.Is(err, ErrSessionClosed) || errors.Is(err, ErrSessionNotFound) {
		err = nil
	}
	s.setClosed(wire.ClosedByClient, err)
	return err
}

// closeAwayWait bounds how long Close waits for a connection that is away to be
// back: a blip (nats.go reconnects every 250 ms) is over well within it, and a
// program closing its sessions as it exits is not held up for long by a server
// that is gone — past it, the server's reconnect window (30 s) ends the session
// soon enough.
const closeAwayWait = 5 * time.Second

// awayWait returns how long closes made with ctx wait for a connection that is away:
// closeAwayWait, or less when ctx ends sooner. Client.Close takes it once for all
// its sessions, so that a connection that never comes back costs it that once.
func awayWait(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, closeAwayWait)
}

// sendClose sends the session's close, sending it again once the connection is back
// (while wait allows) when it could not be sent because the connection was away.
// Before, the close was not sent at all, the session was closed on this side only,
// and the server kept it (RECOVERING, with its locks) until its reconnect window
// ended; a second Close, finding it closed here, sent nothing either.
func (s *Session) sendClose(ctx, wait context.Context) error {
	for {
		err := s.send(ctx, wire.SubjectSessionClose, &wire.SessionCloseRequest{}, &wire.SessionCloseResponse{})
		if !errors.Is(err, ErrNotSent) || !s.c.waitBack(wait) {
			return err
		}
	}
}

// setClosed moves the session to CLOSED once and stops its background work.
func (s *Session) setClosed(reason wire.CloseReason, cause error) {
	s.mu.Lock()
	if s.state == StateClosed {
		s.mu.Unlock()
		return
	}
	old := s.state
	s.state, s.reason = StateClosed, reason
	s.gone.Store(true) // before the listeners run, which may Attach the session anew
	s.signalChangeLocked()
	info := *s.info
	info.State, info.CloseReason = StateClosed, reason
	s.info = &info
	listeners := slices.Clone(s.listeners)
	closedErr := s.closedErr()
	s.stopDoubtLocked() // the server released every lock of the session
	s.mu.Unlock()
	s.loseLocks(false, closedErr)
	for _, l := range listeners {
		l.fn(StateChange{Old: old, New: StateClosed, Reason: reason, Err: cause})
	}
	s.finish()
}

// finish stops the heartbeat and releases the client.
func (s *Session) finish() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		close(s.stopHB) // under s.mu, where Lock starts a request (lockWork)
		s.stopDoubtLocked()
		subs := s.handlers
		s.handlers, s.routes = nil, nil
		s.mu.Unlock()
		s.c.remove(s)
		for sub, cancel := range subs {
			_ = sub.Unsubscribe()
			cancel()
		}
		if s.ownClient {
			go s.c.closeWhenIdle(5 * time.Second)
		}
	})
}

func (s *Session) transition(to State, cause error) {
	s.mu.Lock()
	if s.state == StateClosed || s.state == to {
		s.mu.Unlock()
		return
	}
	old := s.state
	s.state = to
	s.signalChangeLocked()
	listeners := slices.Clone(s.listeners)
	s.mu.Unlock()
	for _, l := range listeners {
		l.fn(StateChange{Old: old, New: to, Err: cause})
	}
}

func (s *Session) connectionLost() {
	// The state first: a grant tracked after it is lost at once (trackLockLocked),
	// one tracked before is among the locks loseLocks finds. The connection the
	// holds were taken on is gone, and the server released them with it.
	s.setKeptHolds(false)
	s.transition(StateRecovering, errConnectionLost)
	s.loseLocks(true, errConnectionLost)
}

// setKeptHolds says, before the session moves to RECOVERING, whether the server may
// keep the connection-scoped holds through it (keptHolds).
func (s *Session) setKeptHolds(kept bool) {
	s.mu.Lock()
	s.keptHolds = kept
	s.mu.Unlock()
}

// connectionCountedLost handles a keepalive answered RECOVERING while this client's
// connection works: the registry counted the connection the session is bound to
// lost (its server taken for gone, say), and the session is about to be resumed
// here — on that very connection, when it is this client's. The lock service
// releases the connection-scoped holds when it sees the session RECOVERING; one
// that did not (no instance ran then, or its write failed and its retry saw the
// session ACTIVE again on the connection the hold was taken on) keeps them for the
// session. Reported lost here, nobody would use or release them, and every other
// session would wait for them until this one ended: they are released by their
// tokens once the session is confirmed (releaseUnsure), as holds reported lost in
// doubt are. A release the server already made is answered lock_not_held. A
// connection-scoped grant whose reply is handled once the session is RECOVERING so
// is reported lost at once (trackLockLocked) and noted for release the same way
// (keptHolds).
func (s *Session) connectionCountedLost() {
	s.setKeptHolds(true)
	s.transition(StateRecovering, errConnectionLost)
	s.dropLocks(true, true, errConnectionLost)
}

// errSessionMoved is why a session's connection-scoped locks are lost when another
// client resumes the session on its own connection.
var errSessionMoved = &wire.Error{Code: wire.CodeUnavailable, Message: "the session was resumed on another client's connection"}

// movedAway handles the registry's notice that another client resumed the session
// at revision rev: unless this client has bound it again since, deliveries no longer
// come here (Handle binds it back) and the connection-scoped locks taken here are
// gone.
func (s *Session) movedAway(rev uint64) {
	if rev <= s.boundRev.Load() {
		return
	}
	s.elsewhere.Store(true)
	s.loseLocks(true, errSessionMoved)
}

// resume binds the session to the new connection after a reconnect.
func (s *Session) resume() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.bindHere(ctx); err != nil && s.State() != StateClosed {
		// The service may be unreachable for a moment: the heartbeat retries.
		s.c.log.Warn("roster: resume failed; will retry", "session", s.id, "err", err)
	}
}

// bindHere resumes the session on this client's connection: the registry binds it,
// and its deliveries, here. A session the registry no longer has is closed here.
func (s *Session) bindHere(ctx context.Context) error {
	var resp wire.SessionResumeResponse
	sent := time.Now()
	err := s.do(ctx, wire.SubjectSessionResume, &wire.SessionResumeRequest{}, &resp)
	switch {
	case err == nil:
		if resp.Session != nil {
			s.learnInfo(resp.Session)
			s.boundRev.Store(resp.Session.Revision)
			if resp.Session.State == StateActive {
				s.confirmed(sent, resp.ReconnectWindowMS)
			}
		}
		s.elsewhere.Store(false)
		s.transition(StateActive, nil)
		s.settleLockWork() // the session lived: the holds reported lost are still its
	case errors.Is(err, ErrSessionClosed), errors.Is(err, ErrSessionNotFound), errors.Is(err, ErrInvalidToken):
		s.setClosed(reasonOr(reasonFrom(err), wire.ClosedFailed), err)
	}
	return err
}

// settleLockWork withdraws the lock requests given up while the lock service was
// away and releases the holds reported lost while the session could not be
// confirmed (releaseUnsure), now that the session is confirmed, on a goroutine of its
// own, one at a time: a lock service slow to answer (up to abandonTimeout, 5 s, a
// request) held up the heartbeat goroutine that made them, whose next keepalive was
// due a third of the session's bound later, and a session with a short timeout
// expired for it. What is left is tried again at the next confirmation.
func (s *Session) settleLockWork() {
	if !s.settling.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer s.settling.Store(false)
		s.abandonPending(context.Background())
		s.releaseUnsure()
	}()
}

func reasonOr(r, def wire.CloseReason) wire.CloseReason {
	if r == "" {
		return def
	}
	return r
}

// heartbeats sends keepalives until the session closes, and retries a resume while
// the session is RECOVERING.
func (s *Session) heartbeats() {
	defer close(s.hbDone)
	every := s.heartbeat
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stopHB:
			return
		case <-s.windowSet:
			// The default interval is a third of the bound, which the window is part
			// of: kept at the old one past a smaller window (Roster restarted with
			// another --reconnect-window), the keepalives came too seldom, and every
			// lock of the session was reported lost between two of them.
			if d := heartbeatInterval(s.hbAsked, s.bound()); d != every {
				every = d
				t.Reset(d)
			}
			continue
		case <-t.C:
		}
		if s.State() == StateRecovering {
			if s.c.nc.IsConnected() {
				s.resume()
			}
			continue
		}
		ctx, cancel := context.WithTimeout(unsampled(), every)
		state, err := s.keepalive(ctx)
		cancel()
		if err == nil && state == StateRecovering && s.c.nc.IsConnected() {
			// The registry counts the session's connection as lost while this one
			// works — it learned of a loss this client did not see, or the session
			// is bound to another process's connection (Attach): take it over.
			s.connectionCountedLost()
			s.resume()
			continue
		}
		if err == nil {
			s.settleLockWork()
		}
		if err != nil && !errors.Is(err, ErrSessionClosed) {
			s.c.log.Debug("roster: keepalive failed", "session", s.id, "err", err)
		}
	}
}

// Attach returns a Session for a session opened elsewhere (another process, a CLI
// run), given its id and token. It checks them with the registry. Closing c
// (Client.Close) or its connection leaves such a session open; the Session's Close
// closes it.
//
// A Client has one Session per session, which any number of goroutines share: Attach
// of a session c already has — opened on c, or attached before, also by Attach
// calls running at once — returns that *Session, once the registry has accepted the
// token given (a token newer than the Session's, rotated by another process's
// ChangePrincipal, replaces it); opts are then not applied. A Session closed here
// is not given, even while the server still has the session: Attach makes a new one. A second Session for the
// session on one connection would split its deliveries: the session's
// subscriptions there are one queue group, and each delivery would reach the
// handlers of only one of the two. Whoever holds the *Session may close it, for
// every holder (and a session opened on c stays one that Client.Close closes).
//
// The session stays bound to the connection that opened it, which receives its
// deliveries, until this client takes it over: Handle does, and so does a resume
// after this client's connection comes back or when the registry counts the
// session's connection as lost. The process that opened it then receives nothing
// more for it, and the connection-scoped locks taken on its connection are released.
func (c *Client) Attach(ctx context.Context, id, token string, opts Options) (*Session, error) {
	if opts.HeartbeatInterval < 0 {
		return nil, &wire.Error{Code: wire.CodeBadRequest, Message: fmt.Sprintf("Options.HeartbeatInterval %v is negative (0: the SDK's default)", opts.HeartbeatInterval)}
	}
	for {
		s := &Session{c: c, id: id, attached: true, info: &wire.Session{ID: id}, token: token, state: StateActive,
			hbAsked: opts.HeartbeatInterval, windowSet: make(chan struct{}, 1),
			stopHB: make(chan struct{}), hbDone: make(chan struct{}), changing: make(chan struct{}, 1),
			attaching: make(chan struct{})}
		s.elsewhere.Store(true)
		have, ok := c.addOnce(s)
		if !ok {
			return nil, errClosedConn
		}
		if have == nil {
			if err := s.attach(ctx, opts); err != nil {
				return nil, err
			}
			return s, nil
		}
		if shared, err := have.share(ctx, token); !errors.Is(err, errAttachFailed) {
			return shared, err
		}
		// The Attach that registered have failed meanwhile: it is gone.
	}
}

// attach checks a Session Attach registered with the registry and starts its
// heartbeats. On failure the Session is not served, and Attach calls waiting for it
// (share) try anew.
func (s *Session) attach(ctx context.Context, opts Options) error {
	defer close(s.attaching)
	if _, err := s.Refresh(ctx); err != nil {
		s.gone.Store(true)
		close(s.hbDone) // no heartbeats started
		s.finish()
		return err
	}
	s.heartbeat = heartbeatInterval(opts.HeartbeatInterval, s.bound())
	go s.heartbeats()
	return nil
}

// ended is the error of a call whose ctx ended while it waited for another call of
// the session (waited for) before sending anything: at the deadline it matches
// ErrTimeout, as a request's does; cancelled, it is context.Canceled.
func ended(ctx context.Context, waited string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", &wire.Error{Code: wire.CodeTimeout, Message: "the deadline passed while waiting for " + waited}, ctx.Err())
	}
	return ctx.Err()
}

// errAttachFailed is share's answer when the Session it was asked for was refused
// by its own Attach, or closed here.
var errAttachFailed = errors.New("client: the Attach of the session failed")

// share returns s to an Attach of its session given token, once the registry
// accepts token: an Attach with a wrong token gets nothing the Client has. When the
// Attach that registered s is still checking it, share waits for it first.
func (s *Session) share(ctx context.Context, token string) (*Session, error) {
	if s.attaching != nil {
		select {
		case <-s.attaching:
		case <-ctx.Done():
			return nil, ended(ctx, "the Attach of the session running beside it")
		}
		if s.gone.Load() {
			return nil, errAttachFailed
		}
	}
	held := s.Token()
	var resp wire.SessionGetResponse
	hdr := nats.Header{wire.HeaderSession: {s.id}, wire.HeaderToken: {token}}
	if err := s.c.call(ctx, wire.SubjectSessionGet, hdr, &wire.SessionGetRequest{}, &resp); err != nil {
		return nil, err
	}
	if s.gone.Load() {
		// Closed here meanwhile, with the session open on the server: a new
		// Session serves it.
		return nil, errAttachFailed
	}
	if token != held && resp.Session != nil {
		// The registry accepts token, and so no longer the one s holds: another
		// process holding the session changed its principal.
		s.mu.Lock()
		if s.token == held && s.state != StateClosed {
			s.info, s.token = resp.Session, token
		}
		s.mu.Unlock()
	}
	return s, nil
}

// Token returns the session's secret token, for handing the session to another
// process (see Attach). Treat it like a password.
func (s *Session) Token() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.token
}
