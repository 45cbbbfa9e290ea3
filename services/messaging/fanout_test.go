package messaging

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestNotDeliveredSaysNoNATSErrorText: a request whose publish to a receiver fails
// (here: the service's connection is closed) gives that receiver an unavailable
// result in Roster's words; the NATS client's error text ("nats: connection
// closed") is not sent to the requester but logged, once.
func TestNotDeliveredSaysNoNATSErrorText(t *testing.T) {
	srv := natstest.Start(t)
	nc := srv.ServiceConn(t)
	var logged bytes.Buffer
	f, err := newFanout(nc, DefaultMaxInFlight, noop.NewTracerProvider().Tracer(""), slog.New(slog.NewTextHandler(&logged, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	nc.Close()

	ctx := context.Background()
	d := &delivery{path: "chat/x", pathTokens: "chat.x", sender: "s1", payload: []byte("hi")}
	targets := []target{{id: "r1", deliveryKey: "k1"}, {id: "r2", deliveryKey: "k2"}}
	results, _ := f.request(ctx, d, d.header(ctx), targets, time.Minute, time.Time{}, nil, 1<<20, func(int) {})
	if len(results) != 2 {
		t.Fatalf("results: %+v", results)
	}
	for _, r := range results {
		checkNotDelivered(t, r)
	}
	if got := logged.String(); strings.Count(got, "request not delivered") != 1 || !strings.Contains(got, "receivers=2") || !strings.Contains(got, "nats: connection closed") {
		t.Fatalf("log, want one line with the count and the NATS error:\n%s", got)
	}
}

func checkNotDelivered(t *testing.T, r wire.MsgResult) {
	t.Helper()
	if r.Status != wire.StatusError || r.Error == nil || r.Error.Code != wire.CodeUnavailable {
		t.Fatalf("result %+v (error %+v), want error/unavailable", r, r.Error)
	}
	if strings.Contains(r.Error.Message, "nats:") || strings.Contains(r.Error.Message, "connection closed") {
		t.Fatalf("the result says the NATS client's error: %q", r.Error.Message)
	}
	if r.Error.Message != "not delivered: the connection to NATS is not available" {
		t.Fatalf("message %q", r.Error.Message)
	}
}

// TestReceiversAreNeverToldZero: a request gathered for less than a millisecond
// (the requester's deadline all but gone: endpoint.HoldWithin) tells its receivers
// 1 ms, not 0. A Roster-Timeout of 0 on a delivery is no deadline to the SDK, whose
// handler then ran unbounded for a requester that had been answered already.
func TestReceiversAreNeverToldZero(t *testing.T) {
	f, _, sub := oneReceiverFanout(t)
	ctx := context.Background()
	d := &delivery{path: "chat/x", pathTokens: "chat.x", sender: "s1", payload: []byte("hi")}
	targets := []target{{id: "r1", deliveryKey: "k1"}}
	results, _ := f.request(ctx, d, d.header(ctx), targets, 500*time.Microsecond, time.Time{}, nil, 1<<20, func(int) {})
	if len(results) != 1 || results[0].Status != wire.StatusTimeout {
		t.Fatalf("results: %+v, want one timeout", results)
	}
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get(wire.HeaderTimeout); got != "1" {
		t.Fatalf("the receiver was told %s=%q, want 1", wire.HeaderTimeout, got)
	}
}

// TestReceiverWithNoTimeLeftIsNotAsked: a receiver whose turn in a fan-out comes
// once the requester's results are due (answerBy) is reported timeout without
// being asked, and its in-flight slot is given back: its answer could reach no one.
func TestReceiverWithNoTimeLeftIsNotAsked(t *testing.T) {
	f, nc, sub := oneReceiverFanout(t)
	ctx := context.Background()
	d := &delivery{path: "chat/x", pathTokens: "chat.x", sender: "s1", payload: []byte("hi")}
	targets := []target{{id: "r1", deliveryKey: "k1"}}
	asked := -1
	results, _ := f.request(ctx, d, d.header(ctx), targets, time.Minute, time.Now().Add(-time.Millisecond), nil, 1<<20, func(n int) { asked = n })
	if len(results) != 1 || results[0].Status != wire.StatusTimeout || asked != 0 {
		t.Fatalf("results %+v, %d asked; want one timeout, none asked", results, asked)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := sub.Pending(); n != 0 {
		t.Fatalf("the receiver got %d deliveries, want none", n)
	}
	f.inflight.mu.Lock()
	defer f.inflight.mu.Unlock()
	if len(f.inflight.n) != 0 {
		t.Fatalf("in flight after the request: %v, want none", f.inflight.n)
	}
}

// oneReceiverFanout returns a fan-out on a service connection of a new server, that
// connection, and a subscription to receiver r1's deliveries on chat/x under key k1.
func oneReceiverFanout(t *testing.T) (*fanout, *nats.Conn, *nats.Subscription) {
	t.Helper()
	srv := natstest.Start(t)
	nc := srv.ServiceConn(t)
	f, err := newFanout(nc, DefaultMaxInFlight, noop.NewTracerProvider().Tracer(""), natstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.close)
	sub, err := nc.SubscribeSync(wire.DeliverSubject("k1", "r1", "chat/x"))
	if err != nil {
		t.Fatal(err)
	}
	return f, nc, sub
}
