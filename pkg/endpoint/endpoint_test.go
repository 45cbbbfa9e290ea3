package endpoint_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type echoRequest struct {
	Text  string `json:"text"`
	Count int    `json:"count,omitempty"`
}

func (r *echoRequest) Validate() error {
	if r.Text == "" {
		return errors.New("text is required")
	}
	return nil
}

type echoResponse struct {
	Text   string   `json:"text"`
	Header []string `json:"header,omitempty"`
}

type fixture struct {
	server   *natstest.Server
	client   *nats.Conn
	recorder *tracetest.SpanRecorder
	tp       *sdktrace.TracerProvider
	svc      *endpoint.Service
	svcConn  *nats.Conn
}

func setup(t *testing.T, cfg endpoint.Config, h endpoint.Handler[echoRequest, echoResponse]) *fixture {
	t.Helper()
	return setupLogged(t, cfg, natstest.Logger(t), h)
}

// setupLogged is setup with the service logging to log.
func setupLogged(t *testing.T, cfg endpoint.Config, log *slog.Logger, h endpoint.Handler[echoRequest, echoResponse]) *fixture {
	t.Helper()
	s := natstest.Start(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	if cfg.Name == "" {
		cfg = endpoint.Config{Name: "roster-test", Version: "1.0.0", Prefix: "roster.v1.session", MaxConcurrent: cfg.MaxConcurrent, MaxBody: cfg.MaxBody}
	}
	svcConn := s.ServiceConn(t)
	svc, err := endpoint.New(svcConn, cfg, tp, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })
	if err := endpoint.Add(svc, endpoint.Endpoint{Name: "echo"}, h); err != nil {
		t.Fatal(err)
	}
	// The server must have the subscription before a client asks.
	if err := svcConn.Flush(); err != nil {
		t.Fatal(err)
	}
	return &fixture{server: s, client: s.ClientConn(t), recorder: rec, tp: tp, svc: svc, svcConn: svcConn}
}

func echo(_ context.Context, c *endpoint.Call, req *echoRequest) (*echoResponse, error) {
	var keys []string
	for k := range c.Header {
		keys = append(keys, k)
	}
	return &echoResponse{Text: req.Text, Header: keys}, nil
}

func serverSpan(t *testing.T, rec *tracetest.SpanRecorder) sdktrace.ReadOnlySpan {
	t.Helper()
	var found sdktrace.ReadOnlySpan
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		for _, s := range rec.Ended() {
			if s.SpanKind() == trace.SpanKindServer {
				found = s
				return nil
			}
		}
		return errors.New("no server span ended yet")
	})
	return found
}

func TestTraceContinuesFromGoClient(t *testing.T) {
	f := setup(t, endpoint.Config{}, echo)
	ctx, span := f.tp.Tracer("client").Start(context.Background(), "client op", trace.WithSpanKind(trace.SpanKindClient))
	var resp echoResponse
	err := wire.Call(ctx, f.client, "roster.v1.session.echo", nil, &echoRequest{Text: "hi"}, &resp)
	span.End()
	if err != nil {
		t.Fatal(err)
	}
	if !contains(resp.Header, "traceparent") {
		t.Fatalf("got header keys %v on the wire, want lowercase traceparent", resp.Header)
	}
	srv := serverSpan(t, f.recorder)
	if got, want := srv.Parent().SpanID(), span.SpanContext().SpanID(); got != want {
		t.Fatalf("server span parent: got %s, want the client span %s", got, want)
	}
	if got, want := srv.SpanContext().TraceID(), span.SpanContext().TraceID(); got != want {
		t.Fatalf("server span trace: got %s, want %s", got, want)
	}
	if !srv.Parent().IsRemote() {
		t.Fatal("server span parent is not marked remote")
	}
}

func TestTraceContinuesFromHandWrittenHeader(t *testing.T) {
	f := setup(t, endpoint.Config{}, echo)
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	msg := &nats.Msg{
		Subject: "roster.v1.session.echo",
		Header:  nats.Header{"traceparent": {"00-" + traceID + "-" + parentID + "-01"}},
		Data:    []byte(`{"text":"hi"}`),
	}
	if _, err := f.client.RequestMsg(msg, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	srv := serverSpan(t, f.recorder)
	if got := srv.SpanContext().TraceID().String(); got != traceID {
		t.Fatalf("server span trace: got %s, want %s", got, traceID)
	}
	if got := srv.Parent().SpanID().String(); got != parentID {
		t.Fatalf("server span parent: got %s, want %s", got, parentID)
	}
}

func TestBadRequests(t *testing.T) {
	f := setup(t, endpoint.Config{MaxBody: 1024}, echo)
	tests := []struct {
		name string
		body string
		code wire.Code
		msg  string
	}{
		{"malformed JSON", `{"text":`, wire.CodeBadRequest, "invalid JSON"},
		{"unknown field", `{"text":"a","nope":1}`, wire.CodeBadRequest, "nope"},
		// encoding/json fills a field from a member named in any letter case, which
		// the schemas refuse as an unknown property.
		{"field in another case", `{"Text":"a"}`, wire.CodeBadRequest, `unknown field "Text"`},
		{"member named twice", `{"text":"a","text":"b"}`, wire.CodeBadRequest, `"text" appears twice`},
		{"wrong type", `{"text":5}`, wire.CodeBadRequest, `field "text"`},
		{"trailing data", `{"text":"a"} {}`, wire.CodeBadRequest, "after the JSON value"},
		{"fails validation", `{}`, wire.CodeBadRequest, "text is required"},
		// encoding/json reads bytes that are not UTF-8, and escapes of half a UTF-16
		// surrogate pair, as U+FFFD: "a\xff" and "a\xfe" would name one lock.
		{"not UTF-8", "{\"text\":\"a\xffb\"}", wire.CodeBadRequest, "not UTF-8"},
		{"not UTF-8 in a member's name", "{\"text\":\"a\",\"\xc3\":1}", wire.CodeBadRequest, "not UTF-8"},
		{"lone high surrogate", `{"text":"a\ud800b"}`, wire.CodeBadRequest, "surrogate"},
		{"lone low surrogate", `{"text":"\udc00"}`, wire.CodeBadRequest, "surrogate"},
		{"high surrogate before another escape", `{"text":"\ud83d\n"}`, wire.CodeBadRequest, "surrogate"},
		{"two high surrogates", `{"text":"\ud83d\ud83d"}`, wire.CodeBadRequest, "surrogate"},
		{"too large", `{"text":"` + strings.Repeat("x", 2000) + `"}`, wire.CodeTooLarge, "limit is 1024"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := wire.CallRaw(context.Background(), f.client, "roster.v1.session.echo", nil, []byte(tt.body))
			var we *wire.Error
			if !errors.As(err, &we) {
				t.Fatalf("got %v, want a wire error", err)
			}
			if we.Code != tt.code || !strings.Contains(we.Message, tt.msg) {
				t.Fatalf("got %s %q, want %s containing %q", we.Code, we.Message, tt.code, tt.msg)
			}
		})
	}
}

func TestUnknownErrorsBecomeInternal(t *testing.T) {
	f := setup(t, endpoint.Config{}, func(context.Context, *endpoint.Call, *echoRequest) (*echoResponse, error) {
		return nil, errors.New("disk on fire at /secret/path")
	})
	err := wire.Call(context.Background(), f.client, "roster.v1.session.echo", nil, &echoRequest{Text: "x"}, nil)
	if !errors.Is(err, wire.ErrInternal) {
		t.Fatalf("got %v, want internal", err)
	}
	if strings.Contains(err.Error(), "secret") {
		t.Fatalf("the cause leaked to the client: %v", err)
	}
}

func TestWireErrorsPassThrough(t *testing.T) {
	f := setup(t, endpoint.Config{}, func(context.Context, *endpoint.Call, *echoRequest) (*echoResponse, error) {
		return nil, fmt.Errorf("closing: %w", wire.Errorf(wire.CodeSessionClosed, "session s1 is closed"))
	})
	err := wire.Call(context.Background(), f.client, "roster.v1.session.echo", nil, &echoRequest{Text: "x"}, nil)
	if !errors.Is(err, wire.ErrSessionClosed) {
		t.Fatalf("got %v, want session_closed", err)
	}
	var we *wire.Error
	if errors.As(err, &we); we.Status() != 410 || we.Message != "session s1 is closed" {
		t.Fatalf("got %+v, want status 410 and the message", we)
	}
}

// TestHandlersRunConcurrentlyWithinBound checks that a slow request does not stall
// the endpoint and that no more than MaxConcurrent run at once.
func TestHandlersRunConcurrentlyWithinBound(t *testing.T) {
	const limit = 4
	var running, peak atomic.Int32
	release := make(chan struct{})
	f := setup(t, endpoint.Config{MaxConcurrent: limit}, func(context.Context, *endpoint.Call, *echoRequest) (*echoResponse, error) {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		running.Add(-1)
		return &echoResponse{Text: "ok"}, nil
	})
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			errs <- wire.Call(ctx, f.client, "roster.v1.session.echo", nil, &echoRequest{Text: "x"}, nil)
		}()
	}
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if running.Load() != limit {
			return fmt.Errorf("%d handlers running, want %d", running.Load(), limit)
		}
		return nil
	})
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if p := peak.Load(); p != limit {
		t.Fatalf("got peak concurrency %d, want %d", p, limit)
	}
}

func TestStopFailsNewRequestsClearly(t *testing.T) {
	f := setup(t, endpoint.Config{}, echo)
	if err := f.svc.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	err := wire.Call(context.Background(), f.client, "roster.v1.session.echo", nil, &echoRequest{Text: "x"}, nil)
	if !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("got %v, want unavailable after stop", err)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestDecodeErrorsNameWhatTheBodyHas: a wrong type names the member as the body
// does and the type it must have in JSON's terms. encoding/json names the Go type
// (wire.LockMode, []uint8) and puts the Go name of an embedded struct in the path
// ("Message.payload", a member no request has); a client learns neither from the
// schemas.
func TestDecodeErrorsNameWhatTheBodyHas(t *testing.T) {
	for _, tc := range []struct {
		into       any
		body, want string
	}{
		{&wire.MsgSendRequest{}, `{"path":"a","payload":5}`, `field "payload" must be a base64 string, not number`},
		{&wire.MsgRequestRequest{}, `{"path":["a"]}`, `field "path" must be a string, not array`},
		{&wire.MsgRequestRequest{}, `{"path":"a","timeout_ms":1.5}`, `field "timeout_ms" must be an integer from -9223372036854775808 to 9223372036854775807, not number 1.5`},
		{&wire.LockAcquireRequest{}, `{"name":"x","mode":5}`, `field "mode" must be a string, not number`},
		{&wire.SessionOpenRequest{}, `{"credentials":[]}`, `field "credentials" must be an object, not array`},
		{&wire.SessionOpenRequest{}, `{"permanent":"yes"}`, `field "permanent" must be true or false, not string`},
		{&wire.LockAcquireRequest{}, `{"name":"x","nope":1}`, `invalid JSON body: unknown field "nope"`},
		{&wire.LockAcquireRequest{}, `[]`, `the body must be an object, not array`},
		{&wire.MsgSendRequest{}, `{"path":"a","headers":{"x-a":5}}`, `the values of field "headers" must be a string, not number`},
		{&wire.MsgSendRequest{}, `{"path":"a","headers":[]}`, `field "headers" must be an object, not array`},
	} {
		err := endpoint.Decode([]byte(tc.body), tc.into)
		var we *wire.Error
		if !errors.As(err, &we) || we.Code != wire.CodeBadRequest || !strings.Contains(we.Message, tc.want) {
			t.Errorf("%T %s: got %v, want bad_request with %q", tc.into, tc.body, err, tc.want)
		}
	}
}

// TestSessionHeadersAppearOnce: a request that gives Roster-Session or Roster-Token
// more than once, in one spelling or in several, is bad_request. The endpoint read
// the first value, where another reader of the same message (a proxy, a gateway,
// a library matching names in any case) may take another: which session a request
// acts for must not depend on who reads it, as for a JSON member named twice.
func TestSessionHeadersAppearOnce(t *testing.T) {
	var handled atomic.Int32
	f := setup(t, endpoint.Config{}, func(ctx context.Context, c *endpoint.Call, req *echoRequest) (*echoResponse, error) {
		handled.Add(1)
		return echo(ctx, c, req)
	})
	const id = "5QmZc1h8RqP0aLxV2yWfKd"
	for _, tc := range []struct {
		name   string
		header nats.Header
		want   string
	}{
		{"two sessions", nats.Header{wire.HeaderSession: {id, "7QmZc1h8RqP0aLxV2yWfKd"}}, wire.HeaderSession},
		{"two tokens", nats.Header{wire.HeaderSession: {id}, wire.HeaderToken: {"", "secret"}}, wire.HeaderToken},
		{"two spellings", nats.Header{wire.HeaderSession: {id}, "roster-session": {"7QmZc1h8RqP0aLxV2yWfKd"}}, wire.HeaderSession},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := &nats.Msg{Subject: "roster.v1.session.echo", Header: tc.header, Data: []byte(`{"text":"hi"}`)}
			reply, err := f.client.RequestMsg(msg, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			err = wire.ReplyError(reply)
			var we *wire.Error
			if !errors.As(err, &we) || we.Code != wire.CodeBadRequest || !strings.Contains(we.Message, tc.want) {
				t.Fatalf("got %v, want bad_request naming %s", err, tc.want)
			}
		})
	}
	if n := handled.Load(); n != 0 {
		t.Fatalf("%d of the requests reached the handler", n)
	}
	msg := &nats.Msg{Subject: "roster.v1.session.echo", Header: nats.Header{wire.HeaderSession: {id}, wire.HeaderToken: {"t"}}, Data: []byte(`{"text":"hi"}`)}
	if reply, err := f.client.RequestMsg(msg, 5*time.Second); err != nil || wire.ReplyError(reply) != nil {
		t.Fatalf("one of each: got %v, %v", err, wire.ReplyError(reply))
	}
}
