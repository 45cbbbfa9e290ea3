package messaging

import (
	"context"
	"errors"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/filter"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// sender is the session a message comes from.
type sender struct {
	id          string
	principal   string
	deliveryKey string
	roles       []string
}

// caller authenticates the session named by the request's headers, and counts the
// request as its activity.
func (s *Service) caller(c *endpoint.Call) (*sender, error) {
	if c.SessionID == "" {
		return nil, wire.Errorf(wire.CodeUnauthenticated, "the %s and %s headers must name the sending session", wire.HeaderSession, wire.HeaderToken)
	}
	rec, err := s.view.Authenticate(c.SessionID, c.Token)
	if err != nil {
		return nil, err
	}
	s.view.Touch(rec.ID)
	return senderOf(rec), nil
}

func senderOf(rec *sessions.Record) *sender {
	return &sender{id: rec.ID, principal: rec.Principal, deliveryKey: rec.DeliverKey, roles: rec.Roles}
}

// fanOut is one send or request being delivered: its targets, delivery and span.
type fanOut struct {
	targets []target
	d       *delivery
	header  nats.Header
	span    trace.Span
}

// prepare checks the permission, selects the targets and builds the delivery, inside
// a span that the caller ends. The span's context travels in the delivery headers.
//
// The span is the producer span of OTel's messaging conventions (operation type
// send, named by op; the path is the destination), the parent of the receivers'
// consumer spans (pkg/client).
func (s *Service) prepare(ctx context.Context, op string, from *sender, m *wire.Message) (context.Context, *fanOut, error) {
	ctx, span := s.svc.Tracer().Start(ctx, "msg."+op+" fan-out", trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		attribute.String("messaging.system", "nats"),
		attribute.String("messaging.operation.type", "send"),
		attribute.String("messaging.operation.name", op),
		attribute.String("messaging.destination.name", m.Path),
		attribute.String("roster.path", m.Path),
		attribute.String("roster.sender", from.id),
	))
	if m.MessageID != "" {
		span.SetAttributes(attribute.String("messaging.message.id", m.MessageID), attribute.String("roster.message_id", m.MessageID))
	}
	fail := func(err error) (context.Context, *fanOut, error) {
		endpoint.SpanError(span, err)
		span.End()
		return ctx, nil, err
	}
	perm := policy.SendToSession
	if m.Filter != "" {
		perm = policy.SendToFilter
	}
	if !s.pol.Allowed(from.roles, perm, m.Path) {
		return fail(wire.Errorf(wire.CodeForbidden, "%s on path %q is not granted to the sending session", perm, m.Path))
	}
	d := &delivery{
		path:        m.Path,
		pathTokens:  wire.PathTokens(m.Path),
		contentType: m.ContentType,
		sender:      from.id,
		messageID:   m.MessageID,
		payload:     m.Payload,
		headers:     m.Headers,
	}
	h := d.header(ctx)
	if err := checkSize(h, m.Payload, s.cfg.MaxPayload-s.fan.requestOverhead()); err != nil {
		return fail(err)
	}
	var targets []target
	if m.SessionID != "" {
		span.SetAttributes(attribute.String("roster.target_session", m.SessionID))
		t, err := s.target(m.SessionID)
		if err != nil {
			return fail(err)
		}
		targets = []target{t}
	} else {
		f, err := filter.CompileContext(ctx, m.Filter)
		if err != nil {
			if ierr := endpoint.Interrupted(ctx, "the messaging service is stopping"); ierr != nil {
				return fail(ierr)
			}
			return fail(filterError(err))
		}
		var candidates int
		var indexUsed bool
		targets, candidates, indexUsed, err = s.ix.selectFilter(ctx, f)
		if err != nil {
			return fail(err)
		}
		span.SetAttributes(
			// Its shape only: the values it looks for are those of sessions'
			// properties, which are not the trace's to keep.
			attribute.String("roster.filter", shortFilter(f.Redacted())),
			attribute.Int("roster.candidates", candidates),
			attribute.Bool("roster.index_used", indexUsed),
		)
	}
	span.SetAttributes(attribute.Int("roster.matched", len(targets)), attribute.Int("messaging.batch.message_count", len(targets)))
	// A sender whose deadline passed while its targets were looked up has been told
	// timeout and may send again: delivered now, the message would reach the
	// receivers after its sender was told it failed, and twice if it sends again
	// (once without a message id to drop the copy by). Nothing has gone out yet;
	// from the publish on, the send is seen through. The lookup of a session the
	// view does not hold reads the bucket for up to 2 s, whatever the deadline.
	if err := endpoint.Interrupted(ctx, "the messaging service is stopping"); err != nil {
		return fail(err)
	}
	return ctx, &fanOut{targets: targets, d: d, header: h, span: span}, nil
}

// target resolves one session id to its delivery target. A session the view has
// not seen yet (opened a moment ago) is read from the bucket, which also adds it to
// the index.
func (s *Service) target(id string) (target, error) {
	rec, ok, err := s.view.Find(id)
	switch {
	case err != nil:
		return target{}, err
	case !ok:
		return target{}, wire.Errorf(wire.CodeSessionNotFound, "no session %q", id)
	case rec.Closed():
		return target{}, rec.ClosedError()
	}
	t, ok := s.ix.get(id)
	if !ok { // closed between the two looks
		return target{}, wire.Errorf(wire.CodeSessionClosed, "session %s is closed", id)
	}
	return t, nil
}

func filterError(err error) error {
	var se *filter.SyntaxError
	if errors.As(err, &se) {
		return wire.Errorf(wire.CodeInvalidFilter, "at offset %d: expected %s, found %s", se.Pos, se.Expected, se.Found)
	}
	return wire.Errorf(wire.CodeInvalidFilter, "%v", err)
}

// send delivers m to its target session or to every live session its filter matches.
func (s *Service) send(ctx context.Context, from *sender, m *wire.Message) (*wire.MsgSendResponse, error) {
	ctx, fo, err := s.prepare(ctx, "send", from, m)
	if err != nil {
		return nil, err
	}
	defer fo.span.End()
	// Once the deliveries go out, the send is seen through: its deadline passing
	// would only fail the flush and answer an error for deliveries that were made.
	pctx, done := endpoint.WithoutDeadline(ctx)
	defer done()
	n, err := s.fan.publish(pctx, fo.d, fo.header, fo.targets)
	fo.span.SetAttributes(attribute.Int("roster.delivered", n))
	s.metrics.count(ctx, "send", m.Filter != "", n)
	if err != nil {
		endpoint.SpanError(fo.span, err)
		return nil, err
	}
	return &wire.MsgSendResponse{Delivered: n}, nil
}

// request sends req to its targets and gathers one result per target. With a stream
// id the results stream to the sender and request returns at once with the expected
// count; otherwise it waits for every result and returns them all.
func (s *Service) request(ctx context.Context, from *sender, req *wire.MsgRequestRequest, reply string) (*wire.MsgRequestResponse, error) {
	if err := s.takeSender(from); err != nil {
		return nil, err
	}
	detached := false
	defer func() {
		if !detached {
			s.releaseSender(from)
		}
	}()
	ctx, fo, err := s.prepare(ctx, "request", from, &req.Message)
	if err != nil {
		return nil, err
	}
	timeout := time.Duration(req.TimeoutMS) * time.Millisecond
	if timeout == 0 {
		timeout = wire.DefaultRequestTimeoutMS * time.Millisecond
	}
	var answerBy time.Time
	if left, ok := endpoint.Remaining(ctx); ok && req.StreamID == "" {
		// The results are the reply: gathered for no longer than the requester
		// waits for it, they reach it (those not in yet answered timeout), and the
		// receivers are told the time there is. Counted from here, not from the
		// publishes: a long fan-out leaves its last receivers less.
		answerBy = time.Now().Add(endpoint.HoldWithin(ctx, left))
	}
	expected := len(fo.targets)
	// The sessions asked: neither those refused for requests in flight nor those
	// the publish failed for.
	filtered := req.Filter != "" // not req: its payload is not held while the results come in
	asked := func(n int) {
		fo.span.SetAttributes(attribute.Int("roster.delivered", n))
		s.metrics.count(ctx, "request", filtered, n)
	}
	// The results are gathered after the handler returns (or streamed), so that a
	// request waiting for its receivers holds no handler slot, until the end of the
	// stop's drain at the latest (Run).
	bg := trace.ContextWithSpan(s.gathers, fo.span)
	if req.StreamID == "" {
		select {
		case s.requests <- struct{}{}:
		default:
			err := wire.Errorf(wire.CodeLimitExceeded, "%d requests are in progress on this instance, the limit; retry", s.cfg.MaxRequests)
			endpoint.SpanError(fo.span, err)
			fo.span.End()
			return nil, err
		}
		s.wg.Add(1)
		detached = true
		go func() {
			defer func() { <-s.requests }()
			defer s.releaseSender(from)
			defer s.wg.Done()
			defer fo.span.End()
			results, size := s.fan.request(bg, fo.d, fo.header, fo.targets, timeout, answerBy, nil, s.cfg.MaxPayload, asked)
			var err error
			if size > s.cfg.MaxPayload {
				err = wire.Errorf(wire.CodeTooLarge, "the %d results are about %d bytes, more than one reply may carry (%d); ask with stream_id to stream them", len(results), size, s.cfg.MaxPayload)
				endpoint.SpanError(fo.span, err)
			}
			if reply == "" {
				return
			}
			if err != nil {
				err = endpoint.ReplyError(s.nc, reply, err)
			} else {
				err = endpoint.Reply(s.nc, reply, &wire.MsgRequestResponse{Expected: expected, Results: results})
			}
			if err != nil {
				s.log.Warn("answering a request failed", "err", err)
			}
		}()
		return nil, endpoint.ErrReplyLater
	}
	select {
	case s.streams <- struct{}{}:
	default:
		err := wire.Errorf(wire.CodeLimitExceeded, "%d streamed requests are in progress on this instance, the limit; retry, or ask without stream_id", s.cfg.MaxStreams)
		endpoint.SpanError(fo.span, err)
		fo.span.End()
		return nil, err
	}
	st := newStreamer(ctx, s.nc, s.cfg.MaxPayload, wire.ResultSubject(from.deliveryKey, from.id, req.StreamID))
	st.start(expected)
	// The results outlive this handler; they end with the stop's drain at the latest.
	s.wg.Add(1)
	detached = true
	go func() {
		defer func() { <-s.streams }()
		defer s.releaseSender(from)
		defer s.wg.Done()
		defer fo.span.End()
		s.fan.request(bg, fo.d, fo.header, fo.targets, timeout, time.Time{}, st.result, 0, asked)
		st.end(bg, expected)
	}()
	return &wire.MsgRequestResponse{Expected: expected}, nil
}

// takeSender counts a request of from in progress, unless its session has
// MaxSenderRequests already or the sessions of its principal MaxPrincipalRequests
// (limit_exceeded).
func (s *Service) takeSender(from *sender) error {
	s.sendersMu.Lock()
	defer s.sendersMu.Unlock()
	if s.senders[from.id] >= s.cfg.MaxSenderRequests {
		return wire.Errorf(wire.CodeLimitExceeded, "the session already has %d requests in progress on this instance, the limit; wait for one to end", s.cfg.MaxSenderRequests)
	}
	if s.principals[from.principal] >= s.cfg.MaxPrincipalRequests {
		return wire.Errorf(wire.CodeLimitExceeded, "the sessions of the principal already have %d requests in progress on this instance, the limit; wait for one to end", s.cfg.MaxPrincipalRequests)
	}
	s.senders[from.id]++
	s.principals[from.principal]++
	return nil
}

// releaseSender ends a request of from counted by takeSender.
func (s *Service) releaseSender(from *sender) {
	s.sendersMu.Lock()
	defer s.sendersMu.Unlock()
	if s.senders[from.id]--; s.senders[from.id] <= 0 {
		delete(s.senders, from.id)
	}
	if s.principals[from.principal]--; s.principals[from.principal] <= 0 {
		delete(s.principals, from.principal)
	}
}

// requestOverhead is the room a request delivery needs beyond a send's: its reply
// subject and request id header.
func (f *fanout) requestOverhead() int {
	return len(f.inbox) + 2*24 + len(wire.HeaderRequestID) + 4 + len(strconv.Itoa(0))
}

// resultsOverhead is what the reply adds to its results (braces, expected, field
// names), generously.
const resultsOverhead = 64

// resultSize is the JSON size of one result in a reply, generously for its fixed
// part and exactly for what varies: the base64 payload and the strings a receiver
// chose, escaped as encoding/json escapes them ("<" takes 6 bytes).
func resultSize(r *wire.MsgResult) int {
	n := 96 + len(r.SessionID) + jsonStringLen(r.ContentType) + (len(r.Payload)+2)/3*4
	if r.Error != nil {
		n += 48 + jsonStringLen(r.Error.Message)
	}
	return n
}

// jsonStringLen is the length of s inside a JSON string as encoding/json writes it.
func jsonStringLen(s string) int {
	n := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t':
				n += 2
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			n += 6 // \ufffd
		case r == '\u2028' || r == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
}

// maxFilterAttribute bounds the roster.filter attribute of a fan-out span, in
// bytes. The redacted form of a filter of filter.MaxLength bytes can be 27 KB, and
// a span keeps it until it is exported: a batch of such spans (the SDK exports 512
// at a time) is larger than an OTLP collector takes in one gRPC message (4 MiB by
// default), and is refused whole. The start of a filter is what tells one from
// another in a trace.
const maxFilterAttribute = 1 << 10

// shortFilter returns redacted, cut at a rune boundary and ended with "…" if it
// is longer than maxFilterAttribute.
func shortFilter(redacted string) string {
	if len(redacted) <= maxFilterAttribute {
		return redacted
	}
	cut := maxFilterAttribute - len("…")
	for cut > 0 && !utf8.RuneStart(redacted[cut]) {
		cut--
	}
	return redacted[:cut] + "…"
}
