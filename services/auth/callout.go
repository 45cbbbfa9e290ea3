package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// CalloutSubject is where the NATS server asks, in the callout account, whether a
// connection may connect.
const CalloutSubject = "$SYS.REQ.USER.AUTH"

// calloutQueue is the queue group auth instances answer the callout in.
const calloutQueue = "roster-auth"

// CalloutConfig configures the NATS auth callout.
type CalloutConfig struct {
	// Issuer is the account key pair whose public key the server configuration names
	// as auth_callout.issuer. It signs the responses and the user JWTs.
	Issuer nkeys.KeyPair
	// Account is the account admitted connections are placed in (CLIENTS).
	Account string
}

func (c *CalloutConfig) check() error {
	if c.Issuer == nil || c.Account == "" {
		return errors.New("auth: callout: issuer key and account are required")
	}
	pub, err := c.Issuer.PublicKey()
	if err != nil || !nkeys.IsValidPublicAccountKey(pub) {
		return errors.New("auth: callout: issuer must be an account key")
	}
	return nil
}

// RequestSubjects are the subjects every admitted connection may publish to: the
// request subjects the clients account imports from the services.
var RequestSubjects = []string{
	wire.AuthPrefix + ".>",
	wire.SessionPrefix + ".>",
	wire.LockPrefix + ".>",
	wire.MessagingPrefix + ".>",
}

// forbidden are denied to every connection, whatever else is allowed: JetStream,
// KV, object store and system subjects.
var forbidden = []string{"$JS.>", "$KV.>", "$O.>", "$SYS.>"}

// Permissions returns the NATS permissions of a connection with key (empty: none)
// whose principal has roles, under pol.
func Permissions(key string, pol *policy.Policy, roles []string) jwt.Permissions {
	var p jwt.Permissions
	var c policy.Connections
	if pol != nil {
		c = pol.Connections
	}
	p.Pub.Allow.Add(RequestSubjects...)
	p.Pub.Deny.Add(forbidden...)
	p.Sub.Deny.Add(forbidden...)
	// Opening sessions on a gateway's behalf is the connection's right, and only
	// the callout knows who the connection is: NATS enforces it.
	if !pol.Allowed(roles, policy.GatewaySession, "") {
		p.Pub.Deny.Add(wire.SubjectSessionOpenGateway)
	}
	if key != "" {
		p.Sub.Allow.Add(wire.ConnectionInbox(key)+".>", wire.ConnectionDeliverPrefix(key)+".>")
	}
	if c.SharedInbox {
		p.Sub.Allow.Add("_INBOX.>")
	} else {
		p.Sub.Deny.Add("_INBOX.>")
	}
	if c.ServiceDiscovery {
		p.Pub.Allow.Add("$SRV.>")
	}
	if len(p.Sub.Allow) == 0 {
		// An empty allow list would allow everything not denied.
		p.Sub.Deny.Add(">")
	}
	// Deliveries may be requests: let the connection answer them, once, soon.
	p.Resp = &jwt.ResponsePermission{MaxMsgs: 1, Expires: time.Minute}
	return p
}

// calloutBacklog bounds the callout requests taken from NATS that wait for a slot
// (calloutQ). Past it a request is left unanswered: the server refuses its client
// at its auth timeout, as it would have after the request waited its turn.
const calloutBacklog = 4096

// calloutMsg is a callout request and when this instance took it from NATS.
type calloutMsg struct {
	m  *nats.Msg
	at time.Time
}

// serveCallout subscribes to the callout subject. Each request is answered on its
// own goroutine (bcrypt is slow on purpose), at most cap(calloutQ) at once. The
// subscription's callback only stamps a request and queues it (calloutBacklog):
// when it waited for a slot itself, the requests behind it waited in the NATS
// client's buffer, where nothing measured their wait, and each was checked — bcrypt
// and all — when its turn came, long after the server had stopped waiting and
// refused its client. Under a burst of connections (every client of a restarted
// server at once) the service so spent its slots on answers nobody read, fell
// behind, and stayed behind. A request whose server stopped waiting before it got a
// slot is now dropped unchecked (dispatchCallouts).
func (s *Service) serveCallout() error {
	if !s.track() {
		return errors.New("auth: the service is stopping")
	}
	in := make(chan calloutMsg, calloutBacklog)
	sub, err := s.nc.QueueSubscribe(CalloutSubject, calloutQueue, func(m *nats.Msg) {
		select {
		case in <- calloutMsg{m: m, at: s.cfg.Now()}:
		default:
			s.calloutsDropped.Warn("backlog", calloutBacklog)
		}
	})
	if err != nil {
		s.wg.Done()
		return fmt.Errorf("auth: callout subscribe: %w", err)
	}
	s.callout = sub
	go s.dispatchCallouts(in)
	return nil
}

// dispatchCallouts answers the queued callout requests, each once a slot is free.
func (s *Service) dispatchCallouts(in <-chan calloutMsg) {
	defer s.wg.Done()
	for {
		var r calloutMsg
		select {
		case r = <-in:
		case <-s.bg.Done():
			return
		}
		select {
		case s.calloutQ <- struct{}{}:
		case <-s.bg.Done():
			return
		}
		if !s.track() {
			<-s.calloutQ
			return
		}
		go func() {
			defer func() { <-s.calloutQ; s.wg.Done() }()
			resp, err := s.answerCalloutMsg(s.bg, r.m, r.at)
			switch {
			case errors.Is(err, errCalloutExpired):
				s.attempts.expired(s.bg, "callout")
				s.calloutsDropped.Warn("waited", s.cfg.Now().Sub(r.at).Round(time.Millisecond))
			case err != nil:
				// Unanswerable (not a valid request): the server times out and refuses.
				s.log.Warn("auth callout request rejected", "err", err)
			default:
				if err := r.m.Respond([]byte(resp)); err != nil {
					s.log.Warn("auth callout reply failed", "err", err)
				}
			}
		}()
	}
}

// errCalloutExpired is answerCallout's error for a request whose server stopped
// waiting for the answer before it could be checked.
var errCalloutExpired = errors.New("auth: the server stopped waiting for the callout answer before a slot was free")

// serverXKeyHeader names the server's curve key on a callout request the server
// encrypted, as it does when auth_callout sets xkey.
const serverXKeyHeader = "Nats-Server-Xkey"

// answerCalloutMsg answers the callout request m. An encrypted request is refused
// with an error that says why: it cannot be read, and the server then refuses every
// connection, which only removing xkey from its configuration changes.
func (s *Service) answerCalloutMsg(ctx context.Context, m *nats.Msg, at time.Time) (string, error) {
	if m.Header.Get(serverXKeyHeader) != "" {
		return "", errors.New("the server encrypts callout requests (auth_callout xkey), which this auth service cannot read: every connection is refused until xkey is removed from the server configuration")
	}
	return s.answerCallout(ctx, m.Data, at)
}

// answerCallout decides a callout request, taken from NATS at at, and returns the
// signed response. An error means the request itself was unusable, or
// errCalloutExpired that the server stopped waiting for the answer before now.
//
// It runs in a server span, as an endpoint's request does, in a trace of its own:
// a CONNECT carries no trace context. The span names no credentials: a refusal's
// wire code (endpoint.SpanError) and the client's address only.
func (s *Service) answerCallout(ctx context.Context, data []byte, at time.Time) (_ string, err error) {
	ctx, span := s.tracer.Start(ctx, CalloutSubject, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
		attribute.String("rpc.system.name", "nats"),
		attribute.String("rpc.method", CalloutSubject),
	))
	defer span.End()
	defer func() {
		if errors.Is(err, errCalloutExpired) {
			span.SetAttributes(attribute.String("error.type", "expired"))
			span.SetStatus(codes.Error, "the server stopped waiting")
		} else if err != nil {
			// Not the client's doing: the server sent what this instance cannot read.
			span.SetAttributes(attribute.String("error.type", "_OTHER"))
			span.SetStatus(codes.Error, "unusable callout request")
		}
	}()
	if len(data) > 64<<10 {
		return "", errors.New("request too large")
	}
	req, err := jwt.DecodeAuthorizationRequestClaims(string(data))
	if err != nil {
		return "", fmt.Errorf("decode request: %w", err)
	}
	if !nkeys.IsValidPublicUserKey(req.UserNkey) || req.Server.ID == "" {
		return "", errors.New("request names no user or server")
	}
	if wait := serverWait(req); wait > 0 {
		// The server refuses the client when it has waited this long, counted here
		// from when the request was taken from NATS: an attempt checked after that,
		// or still waiting for the throttle then, would hold a slot for an answer
		// nobody reads.
		end := at.Add(wait)
		if !s.cfg.Now().Before(end) {
			return "", errCalloutExpired
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, end)
		defer cancel()
	}
	span.SetAttributes(attribute.String("client.address", hostIP(req.ClientInformation.Host)))
	userJWT, expires, refused := s.admitConnection(ctx, req)
	resp := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	resp.Audience = req.Server.ID
	resp.Expires = s.cfg.Now().Add(time.Minute).Unix()
	status := "ok"
	if refused != nil {
		status = string(wire.CodeOf(refused))
		endpoint.SpanError(span, refused)
		resp.Error = calloutError(refused)
		if resp.Error == calloutInternal {
			// The server hears only that much; the cause is for the operator.
			s.log.ErrorContext(ctx, "auth callout failed", "client_ip", req.ClientInformation.Host,
				"server", req.Server.Name, "err", refused)
		}
	} else {
		resp.Jwt = userJWT
	}
	span.SetAttributes(attribute.String("rpc.response.status_code", status))
	out, encErr := resp.Encode(s.cfg.Callout.Issuer)
	if encErr != nil {
		return "", fmt.Errorf("encode response: %w", encErr)
	}
	if refused == nil {
		s.log.DebugContext(ctx, "connection admitted", "client_ip", req.ClientInformation.Host,
			"server", req.Server.Name, "expires", expires)
	}
	return out, nil
}

// serverWait is how long the server waits for the answer to req (its auth timeout):
// the request's lifetime by the server's clock, so that a clock difference between
// the server and this instance does not matter. Zero if the request does not say.
func serverWait(req *jwt.AuthorizationRequestClaims) time.Duration {
	if req.IssuedAt <= 0 || req.Expires <= req.IssuedAt {
		return 0
	}
	return time.Duration(req.Expires-req.IssuedAt) * time.Second
}

// calloutInternal is what the server is told of an error that is not a registered
// code.
const calloutInternal = "internal error"

func calloutError(err error) string {
	var we *wire.Error
	if errors.As(err, &we) && we.Code.Known() && we.Code != wire.CodeInternal {
		return we.Error()
	}
	return calloutInternal
}

// maxConnectionLife is the furthest ahead a connection's expiry is set. NATS times
// it as a time.Duration of the seconds left, at most ~292 years: a token expiring
// further off (9999-12-31, a common "never") overflowed it, negative, and NATS
// closed the connection as expired the moment it was admitted.
const maxConnectionLife = 100 * 365 * 24 * time.Hour

// admitConnection authenticates the connection's credentials and issues its user
// JWT: placed in the clients account, with the per-connection permissions, expiring
// with the credentials.
func (s *Service) admitConnection(ctx context.Context, req *jwt.AuthorizationRequestClaims) (string, time.Time, error) {
	o := req.ConnectOptions
	if o.JWT != "" {
		return "", time.Time{}, wire.Errorf(wire.CodeUnauthenticated, "NATS user JWTs are not accepted; send a bearer token as the token")
	}
	key, err := connectionKey(req)
	if err != nil {
		return "", time.Time{}, err
	}
	creds := &wire.Credentials{Username: o.Username, Password: o.Password, Token: o.Token}
	a, err := s.authenticate(ctx, creds, nil, hostIP(req.ClientInformation.Host))
	s.attempts.record(ctx, "callout", err)
	if err != nil {
		return "", time.Time{}, err
	}
	uc := jwt.NewUserClaims(req.UserNkey)
	uc.Audience = s.cfg.Callout.Account
	uc.Name = key
	if key == "" {
		uc.Name = wire.NoConnectionKey
	}
	pol := s.policy.Load()
	uc.Permissions = Permissions(key, pol, a.Roles)
	if !a.Expires.IsZero() {
		uc.Expires = min(a.Expires.Unix(), s.cfg.Now().Add(maxConnectionLife).Unix())
	}
	token, err := uc.Encode(s.cfg.Callout.Issuer)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("auth: encode user JWT: %w", err)
	}
	// What of it a policy change may withdraw, remembered before the answer goes
	// (revoke.go).
	if !s.admitted.remember(req.Server.ID, req.ClientInformation.ID, grantsOf(pol, a.Authenticator == Anonymous().Name(), a.Roles)) {
		s.log.Warn("this instance remembers too many admitted connections: those admitted from now on keep what a policy change withdraws until they reconnect", "max", maxAdmitted)
	}
	return token, a.Expires, nil
}

// connectionKey returns the user nkey the client connected with, after checking
// that the client signed the server's nonce with it; empty if it sent none.
func connectionKey(req *jwt.AuthorizationRequestClaims) (string, error) {
	o := req.ConnectOptions
	if o.Nkey == "" {
		return "", nil
	}
	bad := wire.Errorf(wire.CodeUnauthenticated, "connection key not proven")
	if !nkeys.IsValidPublicUserKey(o.Nkey) || o.SignedNonce == "" || req.ClientInformation.Nonce == "" {
		return "", bad
	}
	sig, err := base64.RawURLEncoding.DecodeString(o.SignedNonce)
	if err != nil {
		if sig, err = base64.StdEncoding.DecodeString(o.SignedNonce); err != nil {
			return "", bad
		}
	}
	kp, err := nkeys.FromPublicKey(o.Nkey)
	if err != nil {
		return "", bad
	}
	if kp.Verify([]byte(req.ClientInformation.Nonce), sig) != nil {
		return "", bad
	}
	return o.Nkey, nil
}

// hostIP strips a port if the server reported one.
func hostIP(h string) string {
	ri := &wire.RequestInfo{Host: h}
	return ri.ClientIP()
}
