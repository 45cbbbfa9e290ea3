package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// Target names the receivers of a message: one session or every session matching a
// filter.
type Target struct {
	SessionID string
	Filter    string
}

// ToSession addresses one session (SEND_TO_SESSION on the path).
func ToSession(id string) Target { return Target{SessionID: id} }

// ToFilter addresses every session matching a filter (SEND_TO_FILTER on the path).
func ToFilter(filter string) Target { return Target{Filter: filter} }

// MessageOption sets optional parts of a message.
type MessageOption func(*wire.Message)

// ContentType sets the media type of the payload (default application/octet-stream).
func ContentType(ct string) MessageOption { return func(m *wire.Message) { m.ContentType = ct } }

// Header adds an application header to every delivery.
func Header(key, value string) MessageOption {
	return func(m *wire.Message) {
		if m.Headers == nil {
			m.Headers = map[string]string{}
		}
		m.Headers[key] = value
	}
}

func message(to Target, path string, payload []byte, opts []MessageOption) wire.Message {
	m := wire.Message{SessionID: to.SessionID, Filter: to.Filter, Path: path, Payload: payload}
	for _, o := range opts {
		o(&m)
	}
	return m
}

// Send delivers payload on path to the target and returns how many sessions it was
// delivered to. Delivery is fire-and-forget: a session without a handler for the
// path counts as delivered.
func (s *Session) Send(ctx context.Context, to Target, path string, payload []byte, opts ...MessageOption) (int, error) {
	var resp wire.MsgSendResponse
	if err := s.doOther(ctx, wire.SubjectMsgSend, &wire.MsgSendRequest{Message: message(to, path, payload, opts)}, &resp); err != nil {
		return 0, err
	}
	return resp.Delivered, nil
}

// Results are the outcome of a request: one result per matched session.
type Results struct {
	// Expected is how many sessions the request went to.
	Expected int
	Results  []wire.MsgResult
}

// Request sends payload on path to the target and waits up to timeout for every
// matched session to answer. Each session has one result: ok with its payload, the
// error it answered with, timeout, gone (no handler or no connection), or
// limit_exceeded (too many requests in flight to it). A timeout of 0 is the
// service's default (5 s); above a minute the service refuses it, and a negative
// one is refused before anything is sent, both with ErrBadRequest.
func (s *Session) Request(ctx context.Context, to Target, path string, payload []byte, timeout time.Duration, opts ...MessageOption) (*Results, error) {
	if _, err := s.headers(); err != nil {
		return nil, err // closed: that first, as every call says
	}
	if err := checkRequestTimeout(timeout); err != nil {
		return nil, err
	}
	req := &wire.MsgRequestRequest{Message: message(to, path, payload, opts), TimeoutMS: timeoutMS(timeout)}
	var resp wire.MsgRequestResponse
	ctx, cancel := context.WithTimeout(ctx, timeout+10*time.Second)
	defer cancel()
	if err := s.doOther(ctx, wire.SubjectMsgRequest, req, &resp); err != nil {
		return nil, err
	}
	return &Results{Expected: resp.Expected, Results: resp.Results}, nil
}

// checkRequestTimeout refuses a negative request timeout: the service would take
// it for its default, and the SDK's own bound on the call would already be over.
func checkRequestTimeout(d time.Duration) error {
	if d < 0 {
		return &wire.Error{Code: wire.CodeBadRequest, Message: fmt.Sprintf("request timeout %v is negative (0: the service's default)", d)}
	}
	return nil
}

// timeoutMS rounds a positive timeout up to whole milliseconds: 0 would ask the
// service for its default (5 s).
func timeoutMS(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// RequestStream is Request with results delivered to fn as they arrive, on the
// caller's goroutine. It returns the number of sessions expected once every result
// has arrived (or ctx ends: the results not yet seen are then missing, and the error
// says so; it matches ErrTimeout at ctx's deadline, and ErrUnavailable when the
// connection is lost meanwhile). fn must not be nil.
func (s *Session) RequestStream(ctx context.Context, to Target, path string, payload []byte, timeout time.Duration, fn func(wire.MsgResult), opts ...MessageOption) (int, error) {
	// A closed session says so before anything touches the connection, which a
	// session opened with Open closes with it.
	if _, err := s.headers(); err != nil {
		return 0, err
	}
	if err := checkRequestTimeout(timeout); err != nil {
		return 0, err
	}
	if fn == nil {
		return 0, &wire.Error{Code: wire.CodeBadRequest, Message: "RequestStream needs a function for the results"}
	}
	// The service ends the stream within the timeout (its default when 0); bound
	// the wait for the case it cannot (the instance died mid-stream).
	wait := timeout
	if wait <= 0 {
		wait = wire.DefaultRequestTimeoutMS * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(ctx, wait+10*time.Second)
	defer cancel()
	// Results stop coming when the connection is lost: fail then, as every call in
	// flight does, rather than wait out the bound.
	ctx, done, err := s.c.untilLost(ctx)
	if err != nil {
		return 0, err
	}
	defer done() // in flight until the last result (closeWhenIdle)
	streamID := nuid.Next()
	sub, err := s.c.nc.SubscribeSync(wire.ResultSubject(s.c.key, s.ID(), streamID))
	if err != nil {
		return 0, fmt.Errorf("client: subscribe to results: %w", err)
	}
	defer sub.Unsubscribe()
	req := &wire.MsgRequestRequest{Message: message(to, path, payload, opts), TimeoutMS: timeoutMS(timeout), StreamID: streamID}
	var resp wire.MsgRequestResponse
	if err := s.doOther(ctx, wire.SubjectMsgRequest, req, &resp); err != nil {
		return 0, err
	}
	seen := 0
	for seen < resp.Expected {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			switch {
			case context.Cause(ctx) == errConnectionLost:
				err = fmt.Errorf("%w: %w", &wire.Error{Code: wire.CodeUnavailable, Message: "connection to NATS lost during the request"}, err)
			case errors.Is(err, context.DeadlineExceeded):
				err = fmt.Errorf("%w: %w", &wire.Error{Code: wire.CodeTimeout, Message: "results missing at the deadline"}, err)
			}
			return resp.Expected, fmt.Errorf("client: %d of %d results received: %w", seen, resp.Expected, err)
		}
		var item wire.MsgStreamItem
		if err := json.Unmarshal(m.Data, &item); err != nil {
			return resp.Expected, fmt.Errorf("client: bad result message: %w", err)
		}
		switch item.Kind {
		case wire.StreamResult:
			if item.Result != nil {
				seen++
				fn(*item.Result)
			}
		case wire.StreamEnd:
			if seen < resp.Expected {
				return resp.Expected, fmt.Errorf("client: stream ended after %d of %d results", seen, resp.Expected)
			}
		}
	}
	return resp.Expected, nil
}

// Message is a delivery to this session.
type Message struct {
	// Path is the path the message was sent on.
	Path string
	// Sender is the session id of the sender.
	Sender      string
	ContentType string
	Payload     []byte
	// Headers are the application headers the sender added.
	Headers map[string]string
	// IsRequest says whether the sender waits for an answer.
	IsRequest bool
}

// Handler handles deliveries on a path. For a request, its return value is the
// answer: the payload, or an error (a *wire.Error keeps its code; any other error is
// sent as internal with its message). For a send, the return value is ignored.
type Handler func(ctx context.Context, m *Message) ([]byte, error)

// maxHandlers bounds the handlers running at once per Handle call, matching the
// server's default limit of requests in flight per session.
const maxHandlers = 255

// Handle registers h for deliveries on path ("chat/room1"), or on every path when
// path is "*". Registrations that overlap ("*" and a path, or one path twice) each
// get the delivery, and a request is answered by whichever answers first. Handlers
// run concurrently, at most 255 at a time per registration.
// The trace context of the sender's fan-out continues in ctx, which ends when the
// registration is removed or the session closes. The returned function removes the
// registration and waits for the handlers still running; deliveries still waiting for
// one of the 255 slots are dropped, and no handler starts once it has returned.
// h must not be nil (ErrBadRequest); an invalid path is ErrInvalidName, and a
// closed session ErrSessionClosed.
func (s *Session) Handle(path string, h Handler) (func() error, error) {
	if _, err := s.headers(); err != nil {
		return nil, err
	}
	if h == nil {
		// Refused now: the first delivery would panic in the SDK's goroutine.
		return nil, &wire.Error{Code: wire.CodeBadRequest, Message: "Handle needs a handler"}
	}
	var subject string
	if path == "*" {
		subject = wire.SessionDeliverPrefix(s.c.key, s.ID()) + ".>"
	} else {
		if err := wire.ValidatePath(path); err != nil {
			return nil, err
		}
		subject = wire.DeliverSubject(s.c.key, s.ID(), path)
	}
	sem := make(chan struct{}, maxHandlers)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		removed bool // set before the removal waits: no handler starts after
	)
	hctx, cancel := context.WithCancel(context.Background())
	sub, err := s.c.nc.Subscribe(subject, func(m *nats.Msg) {
		_, _, p, err := wire.ParseDeliverSubject(m.Subject)
		if err != nil || m.Header.Get(wire.HeaderSender) == "" {
			// Results of a streamed request, or not a delivery: a service's reply to
			// a request whose reply subject another client chose (wire.HeaderSender).
			return
		}
		mu.Lock()
		if removed {
			mu.Unlock()
			return
		}
		wg.Add(1)
		mu.Unlock()
		select {
		case sem <- struct{}{}:
		case <-hctx.Done():
			wg.Done()
			return
		}
		if hctx.Err() != nil { // removed while this waited for a free handler
			<-sem
			wg.Done()
			return
		}
		go func() {
			defer func() { <-sem; wg.Done() }()
			s.deliver(hctx, p, m, h)
		}()
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("client: subscribe %s: %w", subject, err)
	}
	// Flushed, the subscription is in place when Handle returns; while the
	// connection is away it is sent when the connection comes back.
	if s.c.nc.IsConnected() {
		if err := s.c.nc.Flush(); err != nil && s.c.nc.IsConnected() {
			cancel()
			_ = sub.Unsubscribe()
			return nil, fmt.Errorf("client: subscribe %s: %w", subject, err)
		}
	}
	s.mu.Lock()
	if s.state == StateClosed {
		s.mu.Unlock()
		cancel()
		_ = sub.Unsubscribe()
		return nil, s.closedErr()
	}
	if s.handlers == nil {
		s.handlers = map[*nats.Subscription]context.CancelFunc{}
	}
	s.handlers[sub] = cancel
	s.mu.Unlock()
	return func() error {
		s.mu.Lock()
		delete(s.handlers, sub)
		s.mu.Unlock()
		err := sub.Unsubscribe()
		if err == nil && s.c.nc.IsConnected() {
			// Once this returns the server no longer routes the path here, so
			// that requests find no responder rather than a silent client.
			err = s.c.nc.Flush()
		}
		if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) || errors.Is(err, nats.ErrConnectionReconnecting) {
			err = nil // the server forgets the subscription with the connection
		}
		mu.Lock()
		removed = true
		mu.Unlock()
		cancel()
		wg.Wait()
		return err
	}, nil
}

func (s *Session) deliver(ctx context.Context, path string, m *nats.Msg, h Handler) {
	ctx = wire.Extract(ctx, m.Header)
	ctx, span := s.c.tracer.Start(ctx, "receive "+path, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("roster.path", path), attribute.String("roster.session_id", s.ID())))
	defer span.End()
	msg := &Message{
		Path:        path,
		Sender:      m.Header.Get(wire.HeaderSender),
		ContentType: m.Header.Get(wire.HeaderContentType),
		Payload:     m.Data,
		IsRequest:   m.Reply != "",
		Headers:     appHeaders(m.Header),
	}
	out, err := h(ctx, msg)
	var we *wire.Error
	if err != nil {
		if !errors.As(err, &we) || !we.Code.Known() {
			we = &wire.Error{Code: wire.CodeInternal, Message: err.Error()}
		}
		spanError(span, we)
	}
	if m.Reply == "" {
		return
	}
	reply := &nats.Msg{Subject: m.Reply, Data: out, Header: nats.Header{}}
	if err != nil {
		status, message, body := wire.EncodeError(we)
		reply.Header.Set(wire.HeaderErrorCode, status)
		reply.Header.Set(wire.HeaderError, message)
		reply.Data = body
	}
	if rerr := s.c.nc.PublishMsg(reply); rerr != nil {
		span.RecordError(rerr)
	}
}

func appHeaders(h nats.Header) map[string]string {
	out := map[string]string{}
	for k, v := range h {
		if len(v) == 0 || reservedHeader(k) {
			continue
		}
		out[k] = v[0]
	}
	return out
}

func reservedHeader(k string) bool {
	switch {
	case len(k) >= 7 && strings.EqualFold(k[:7], "roster-"),
		len(k) >= 5 && strings.EqualFold(k[:5], "nats-"),
		strings.EqualFold(k, "traceparent"), strings.EqualFold(k, "tracestate"), strings.EqualFold(k, "baggage"),
		strings.EqualFold(k, "content-type"), strings.EqualFold(k, "status"), strings.EqualFold(k, "description"):
		return true
	}
	return false
}
