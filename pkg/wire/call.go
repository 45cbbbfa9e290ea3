package wire

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
)

// Propagator is the trace-context format Roster puts on the wire: W3C trace context
// and baggage.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(
	propagation.TraceContext{}, propagation.Baggage{})

// Inject writes the trace context of ctx into h.
func Inject(ctx context.Context, h nats.Header) {
	Propagator.Inject(ctx, HeaderCarrier(h))
}

// HeaderTraceParent is the W3C trace context header.
const HeaderTraceParent = "traceparent"

// TraceParent returns the W3C traceparent of ctx's span, or "" when it has none: a
// trace context kept in a record, to be continued by whatever acts on it later.
func TraceParent(ctx context.Context) string {
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c[HeaderTraceParent]
}

// Extract returns ctx with the remote trace context found in h, if any.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if h == nil {
		return ctx
	}
	return Propagator.Extract(ctx, HeaderCarrier(h))
}

// Call sends req as JSON to subject and decodes the reply into resp (which may be
// nil). A nil req, a nil pointer included, is sent as an empty body: the services
// refuse a body of null. hdr, if not nil, is sent as the request headers; the trace
// context of ctx is added to it, and the time left before ctx's deadline, if it has
// one (SetTimeout), so that the service gives up when the caller does. An error reply is returned as *Error; a request
// nobody answers is ErrUnavailable, and a context that ends first returns an error
// wrapping ctx.Err().
func Call(ctx context.Context, nc *nats.Conn, subject string, hdr nats.Header, req, resp any) error {
	var data []byte
	if req != nil {
		var err error
		if data, err = json.Marshal(req); err != nil {
			return fmt.Errorf("wire: encode %s request: %w", subject, err)
		}
		if string(data) == "null" {
			data = nil
		}
	}
	reply, err := CallRaw(ctx, nc, subject, hdr, data)
	if err != nil {
		return err
	}
	if resp == nil || len(reply.Data) == 0 {
		return nil
	}
	if err := json.Unmarshal(reply.Data, resp); err != nil {
		return fmt.Errorf("wire: decode %s reply: %w", subject, err)
	}
	return nil
}

// CallRaw is Call for callers that encode and decode bodies themselves.
func CallRaw(ctx context.Context, nc *nats.Conn, subject string, hdr nats.Header, data []byte) (*nats.Msg, error) {
	if hdr == nil {
		hdr = nats.Header{}
	}
	Inject(ctx, hdr)
	SetTimeout(ctx, hdr)
	msg := &nats.Msg{Subject: subject, Header: hdr, Data: data}
	reply, err := nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return nil, requestError(subject, err)
	}
	if err := ReplyError(reply); err != nil {
		return nil, err
	}
	return reply, nil
}

// ReplyError returns the *Error carried by a micro error reply, or nil. nats.Conn's
// Request returns a nil error for such replies: the headers must be checked.
func ReplyError(reply *nats.Msg) error {
	if reply == nil || reply.Header == nil {
		return nil
	}
	status := reply.Header.Get(HeaderErrorCode)
	if status == "" {
		return nil
	}
	return DecodeError(status, reply.Header.Get(HeaderError), reply.Data)
}

func requestError(subject string, err error) error {
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return &Error{Code: CodeUnavailable, Message: "no service answers on " + subject}
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionDraining):
		return fmt.Errorf("wire: %s: %w: %w", subject, &Error{Code: CodeUnavailable, Message: "connection to NATS closed"}, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return fmt.Errorf("wire: %s: %w: %w", subject, &Error{Code: CodeTimeout, Message: "no reply before the deadline"}, err)
	default:
		return fmt.Errorf("wire: %s: %w", subject, err)
	}
}

// SetTimeout writes into h, as HeaderTimeout, the time left before ctx's deadline
// in whole milliseconds, rounded up: the service counts it from the request's
// arrival, which is after the sending, so that it never gives up before the caller
// does. It writes nothing when ctx has no deadline (the service then sets none).
func SetTimeout(ctx context.Context, h nats.Header) {
	d, ok := ctx.Deadline()
	if !ok {
		return
	}
	var ms int64
	if left := time.Until(d); left > 0 {
		ms = int64((left + time.Millisecond - 1) / time.Millisecond)
	}
	h[HeaderTimeout] = []string{strconv.FormatInt(ms, 10)}
}

// MaxTimeout bounds the time a request to a service may give itself
// (HeaderTimeout); a larger value is taken as MaxTimeout. Clients reach the
// services through a service import that drops a reply later than its response
// threshold, 2 minutes by default: work a service did past it would answer nobody.
const MaxTimeout = 2 * time.Minute

// maxTimeoutDigits is the longest value ParseTimeout converts; a longer run of
// digits is more than MaxTimeout, whatever it says.
const maxTimeoutDigits = 18

// ParseTimeout reads a HeaderTimeout value given on a request to a service: a
// whole number of milliseconds, 0 or more, in decimal digits and nothing else.
// Anything else is bad_request. A value over MaxTimeout is MaxTimeout; 0 means the
// caller has no time left.
func ParseTimeout(v string) (time.Duration, error) {
	if v == "" {
		return 0, timeoutError(v)
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, timeoutError(v)
		}
	}
	if len(v) > maxTimeoutDigits {
		return MaxTimeout, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, timeoutError(v)
	}
	// Compared in milliseconds: converted first, 2^54 ms would overflow a Duration.
	if ms > MaxTimeout.Milliseconds() {
		return MaxTimeout, nil
	}
	return time.Duration(ms) * time.Millisecond, nil
}

func timeoutError(v string) error {
	// The value is the client's and may be long: the message quotes its start.
	if len(v) > 32 {
		v = v[:32] + "…"
	}
	return Errorf(CodeBadRequest, "the %s header must be a whole number of milliseconds (0 or more, digits only), not %q", HeaderTimeout, v)
}
