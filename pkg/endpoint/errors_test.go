package endpoint_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/telemetry"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestInternalErrorsKeepTheirMessageInTheLog: an internal error is answered with the
// generic message whatever message it was given — the code's contract is that the
// cause is logged, never sent — and the message is logged. Before, an internal
// *wire.Error went out as it was (the registry's "authenticator set fixed property
// …" named the server's configuration to the client). Held requests answered with
// ReplyError follow the same rule.
func TestInternalErrorsKeepTheirMessageInTheLog(t *testing.T) {
	var logs natstest.Buffer
	var held = make(chan string, 1)
	f := setupLogged(t, endpoint.Config{}, logs.Logger(), func(_ context.Context, c *endpoint.Call, req *echoRequest) (*echoResponse, error) {
		if req.Text == "later" {
			held <- c.Reply
			return nil, endpoint.ErrReplyLater
		}
		return nil, fmt.Errorf("fixing: %w", wire.Errorf(wire.CodeInternal, "secret detail at /etc/roster"))
	})
	err := wire.Call(context.Background(), f.client, "roster.v1.session.echo", nil, &echoRequest{Text: "x"}, nil)
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeInternal || strings.Contains(we.Message, "secret") {
		t.Fatalf("got %#v, want internal with no detail", err)
	}
	if !strings.Contains(logs.String(), "secret detail at /etc/roster") {
		t.Fatalf("the internal error's message is not logged:\n%s", logs.String())
	}
	done := make(chan error, 1)
	go func() {
		done <- wire.Call(context.Background(), f.client, "roster.v1.session.echo", nil, &echoRequest{Text: "later"}, nil)
	}()
	if err := endpoint.ReplyError(f.server.ServiceConn(t), <-held, wire.Errorf(wire.CodeInternal, "held: secret detail")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.As(err, &we) || we.Code != wire.CodeInternal || strings.Contains(we.Message, "secret") {
		t.Fatalf("held request: got %#v, want internal with no detail", err)
	}
}

// TestCausesOfWireErrorsAreLogged: an error that carries a cause beside its wire
// error (a storage failure joined to unavailable, as the registry's and the session
// view's are) is answered with the wire error alone, and the cause is logged once —
// as the registry's unavailable() says, "the cause is logged by the endpoint".
// Before, only errors answered internal were logged, so a storage failure left no
// trace of what failed. A wire error that is merely wrapped (a caller's mistake with
// context) logs nothing.
func TestCausesOfWireErrorsAreLogged(t *testing.T) {
	var logs natstest.Buffer
	f := setupLogged(t, endpoint.Config{}, logs.Logger(), func(_ context.Context, _ *endpoint.Call, req *echoRequest) (*echoResponse, error) {
		if req.Text == "storage" {
			return nil, fmt.Errorf("read session: %w", errors.Join(wire.Errorf(wire.CodeUnavailable, "session storage is not available"), errors.New("nats: disk on fire")))
		}
		return nil, fmt.Errorf("closing: %w", wire.Errorf(wire.CodeSessionClosed, "session s1 is closed"))
	})
	err := wire.Call(context.Background(), f.client, "roster.v1.session.echo", nil, &echoRequest{Text: "storage"}, nil)
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeUnavailable || we.Message != "session storage is not available" {
		t.Fatalf("got %#v, want the unavailable error alone", err)
	}
	if n := strings.Count(logs.String(), "disk on fire"); n != 1 {
		t.Fatalf("the cause is logged %d times, want once:\n%s", n, logs.String())
	}
	if err := wire.Call(context.Background(), f.client, "roster.v1.session.echo", nil, &echoRequest{Text: "closed"}, nil); !errors.Is(err, wire.ErrSessionClosed) {
		t.Fatalf("got %v, want session_closed", err)
	}
	if strings.Contains(logs.String(), "s1 is closed") {
		t.Fatalf("a caller's error without a cause is logged:\n%s", logs.String())
	}
}

// TestRepliesTooLargeForNATSAreAnswered: a reply the connection's max_payload
// refuses still answers the request — a result as internal (logged), an error with
// its code and its message cut to what the header carries. Before, the publish
// failed, the endpoint logged it, and the client waited out its timeout for an
// answer that never came (an error echoing a Roster-Session header as long as a
// message, as the services' session_not_found does, was one).
func TestRepliesTooLargeForNATSAreAnswered(t *testing.T) {
	var logs natstest.Buffer
	var max int
	f := setupLogged(t, endpoint.Config{}, logs.Logger(), func(_ context.Context, _ *endpoint.Call, req *echoRequest) (*echoResponse, error) {
		if req.Text == "error" {
			return nil, wire.Errorf(wire.CodeSessionNotFound, "no session %q", strings.Repeat("x", max))
		}
		return &echoResponse{Text: strings.Repeat("x", max)}, nil
	})
	max = int(f.client.MaxPayload())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := wire.Call(ctx, f.client, "roster.v1.session.echo", nil, &echoRequest{Text: "result"}, nil)
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeInternal {
		t.Fatalf("a result too large: got %v, want internal", err)
	}
	// The failed publish is logged once the internal answer has gone out: the
	// client can have it first.
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "max_payload") {
			return fmt.Errorf("the reply's size is not logged:\n%s", logs.String())
		}
		return nil
	})
	err = wire.Call(ctx, f.client, "roster.v1.session.echo", nil, &echoRequest{Text: "error"}, nil)
	if !errors.As(err, &we) || we.Code != wire.CodeSessionNotFound || !strings.HasPrefix(we.Message, `no session "xxx`) || len(we.Message) > 2048 {
		t.Fatalf("an error too large: got %.100v, want session_not_found with its message cut", err)
	}
}

// TestHealthOverTheWireSaysNoMoreThanErrorsDo: the health endpoint, which any
// client may ask, reports a failing check by its wire error's message, and one
// failing with any other error as "failing", as the endpoint answers such an error
// internal; the process's own health (its HTTP probes) keeps the cause. Before, the
// endpoint sent the check's Go error text.
func TestHealthOverTheWireSaysNoMoreThanErrorsDo(t *testing.T) {
	f := setup(t, endpoint.Config{}, echo)
	f.svc.AddCheck("store", func(context.Context) error { return errors.New("dial tcp 10.0.0.5:4222: connection refused") })
	f.svc.AddCheck("loading", func(context.Context) error { return wire.Errorf(wire.CodeUnavailable, "loading sessions") })
	f.svc.AddCheck("fine", func(context.Context) error { return nil })
	var h endpoint.Health
	if err := wire.Call(context.Background(), f.client, "roster.v1.session.health", nil, nil, &h); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"store": "failing", "loading": "loading sessions", "fine": "ok"}
	if h.Ready || !maps.Equal(h.Checks, want) {
		t.Fatalf("over the wire: ready %v, checks %v; want not ready, %v", h.Ready, h.Checks, want)
	}
	if local := f.svc.Health(context.Background()); !strings.Contains(local.Checks["store"], "connection refused") {
		t.Fatalf("the process's own health lost the cause: %v", local.Checks)
	}
}

// TestRequestFailureLogNamesItsTrace: with the process's log handler
// (telemetry.LogHandler), the line a failed request logs names the trace the client
// started and the server span of the request, so the line and the trace lead to
// each other.
func TestRequestFailureLogNamesItsTrace(t *testing.T) {
	var logs natstest.Buffer
	log := slog.New(telemetry.LogHandler(slog.NewJSONHandler(&logs, nil)))
	f := setupLogged(t, endpoint.Config{}, log, func(context.Context, *endpoint.Call, *echoRequest) (*echoResponse, error) {
		return nil, wire.Errorf(wire.CodeInternal, "store on fire")
	})
	client := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{0xab, 1}, SpanID: trace.SpanID{0xcd, 2}, TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithSpanContext(context.Background(), client)
	if err := wire.Call(ctx, f.client, "roster.v1.session.echo", nil, &echoRequest{Text: "x"}, nil); !errors.Is(err, wire.ErrInternal) {
		t.Fatalf("got %v, want internal", err)
	}
	var line struct{ Msg, TraceID, SpanID string }
	for l := range strings.Lines(logs.String()) {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "request failed" {
			line.Msg, _ = m["msg"].(string)
			line.TraceID, _ = m["trace_id"].(string)
			line.SpanID, _ = m["span_id"].(string)
		}
	}
	if line.Msg == "" {
		t.Fatalf("no request failed line:\n%s", logs.String())
	}
	if line.TraceID != client.TraceID().String() {
		t.Fatalf("the line names trace %q, want the client's %s:\n%s", line.TraceID, client.TraceID(), logs.String())
	}
	var server string
	for _, s := range f.recorder.Ended() {
		if s.SpanKind() == trace.SpanKindServer {
			server = s.SpanContext().SpanID().String()
		}
	}
	if server == "" || line.SpanID != server {
		t.Fatalf("the line names span %q, want the server span %q", line.SpanID, server)
	}
}
