package messaging

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/seed-3c836eab/roster/pkg/filter"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// benchFanout is a messaging fan-out on a real embedded server, publishing from the
// services account into the clients account through the deliver import, with one
// client connection subscribed to every delivery.
func benchFanout(b *testing.B) (*fanout, *nats.Conn, *natstest.Server) {
	b.Helper()
	srv := natstest.Start(b)
	nc := srv.ServiceConn(b)
	f, err := newFanout(nc, DefaultMaxInFlight, noop.NewTracerProvider().Tracer(""), natstest.Logger(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(f.close)
	return f, nc, srv
}

// BenchmarkSendAll delivers one 64-byte message with the send headers to `all` of
// 100,000 live sessions: selection, header, one publish per session and one flush.
// Beside it, in the same iteration, the floor: 100,000 plain nc.Publish calls of the
// same payload to the same (precomputed) subjects and one flush. ratio is the
// fan-out's deliveries per second over the floor's (goal >= 0.5).
//
// With a subscriber, the server also routes every delivery through the import to a
// client connection on the same two cores; without one, it drops them after the
// import's subject match.
func BenchmarkSendAll(b *testing.B) {
	ix := benchIndex(b, benchSessions)
	b.Run("subscriber", func(b *testing.B) { benchSendAll(b, ix, true) })
	b.Run("no_subscriber", func(b *testing.B) { benchSendAll(b, ix, false) })
}

func benchSendAll(b *testing.B, ix *index, subscriber bool) {
	f, nc, srv := benchFanout(b)
	var received atomic.Int64
	if subscriber {
		sink := srv.ClientConn(b)
		sub, err := sink.Subscribe(wire.DeliverPrefix+".>", func(*nats.Msg) { received.Add(1) })
		if err != nil {
			b.Fatal(err)
		}
		_ = sub.SetPendingLimits(-1, -1)
		_ = sink.Flush()
	}

	all, _ := filter.Compile("all")
	targets, _, _, _ := ix.selectFilter(context.Background(), all)
	subjects := make([]string, len(targets))
	for i, t := range targets {
		subjects[i] = wire.DeliverSubject(t.deliveryKey, t.id, "chat/room1")
	}
	payload := make([]byte, 64)
	d := &delivery{path: "chat/room1", pathTokens: "chat.room1", contentType: "text/plain", sender: "0000000000000000000000", messageID: "0000000000000000000000", payload: payload}
	ctx := context.Background()

	// For context: the same publishes to subjects that cross no account import.
	start := time.Now()
	for i := range subjects {
		if err := nc.Publish("bench.local."+strconv.Itoa(i), payload); err != nil {
			b.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	local := time.Since(start)

	var fanTime, floorTime time.Duration
	for b.Loop() {
		start := time.Now()
		for _, s := range subjects {
			if err := nc.Publish(s, payload); err != nil {
				b.Fatal(err)
			}
		}
		if err := nc.Flush(); err != nil {
			b.Fatal(err)
		}
		floorTime += time.Since(start)

		start = time.Now()
		ts, _, _, _ := ix.selectFilter(context.Background(), all)
		if _, err := f.publish(ctx, d, d.header(ctx), ts); err != nil {
			b.Fatal(err)
		}
		fanTime += time.Since(start)
	}
	n := float64(b.N) * float64(len(targets))
	b.ReportMetric(n/fanTime.Seconds(), "deliveries/s")
	b.ReportMetric(n/floorTime.Seconds(), "floor_publishes/s")
	b.ReportMetric(float64(len(subjects))/local.Seconds(), "no_import_publishes/s")
	b.ReportMetric(floorTime.Seconds()/fanTime.Seconds(), "ratio")
	b.ReportMetric(float64(fanTime.Milliseconds())/float64(b.N), "ms/send_all")
}

// BenchmarkRequestFilter1000 measures a request to 1,000 sessions (an equality filter
// among 100,000) whose receiver answers each at once, until every result is in.
// The floor is the same 1,000 requests published by hand with one wildcard reply
// subscription, waiting for the 1,000 replies.
func BenchmarkRequestFilter1000(b *testing.B) {
	f, nc, srv := benchFanout(b)
	ix := benchIndex(b, benchSessions)
	responder := srv.ClientConn(b)
	sub, err := responder.Subscribe(wire.DeliverPrefix+".>", func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		b.Fatal(err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	_ = responder.Flush()

	flt, _ := filter.Compile(`Department is "d42"`)
	targets, _, _, _ := ix.selectFilter(context.Background(), flt)
	subjects := make([]string, len(targets))
	for i, t := range targets {
		subjects[i] = wire.DeliverSubject(t.deliveryKey, t.id, "orders/ask")
	}
	floorInbox := nc.NewInbox()
	replies := make(chan struct{}, len(targets))
	fsub, err := nc.Subscribe(floorInbox+".*", func(*nats.Msg) { replies <- struct{}{} })
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = fsub.Unsubscribe() }()
	payload := []byte("ping")
	d := &delivery{path: "orders/ask", pathTokens: "orders.ask", sender: "0000000000000000000000", messageID: "0000000000000000000000", payload: payload}
	ctx := context.Background()

	var fanTime, floorTime time.Duration
	for b.Loop() {
		start := time.Now()
		for i, s := range subjects {
			if err := nc.PublishRequest(s, floorInbox+"."+strconv.Itoa(i), payload); err != nil {
				b.Fatal(err)
			}
		}
		for range subjects {
			<-replies
		}
		floorTime += time.Since(start)

		start = time.Now()
		ts, _, _, _ := ix.selectFilter(context.Background(), flt)
		results, _ := f.request(ctx, d, d.header(ctx), ts, 10*time.Second, time.Time{}, nil, 1<<30, func(int) {})
		fanTime += time.Since(start)
		for _, r := range results {
			if r.Status != wire.StatusOK {
				b.Fatalf("result %s: %s %v", r.SessionID, r.Status, r.Error)
			}
		}
	}
	b.ReportMetric(float64(fanTime.Microseconds())/1000/float64(b.N), "ms/request_1000")
	b.ReportMetric(float64(floorTime.Microseconds())/1000/float64(b.N), "floor_ms/1000_requests")
	b.ReportMetric(floorTime.Seconds()/fanTime.Seconds(), "ratio")
}
