package messaging

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// delivered returns the roster.messages.delivered count that rd holds, over every
// operation and target.
func delivered(t *testing.T, rd *sdkmetric.ManualReader) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := rd.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "roster.messages.delivered" {
				for _, p := range sum.DataPoints {
					n += p.Value
				}
			}
		}
	}
	return n
}

// atLeastOne waits until rd counts a delivery: a streamed request counts the
// sessions it asked once it has published to them, after its reply.
func atLeastOne(t *testing.T, rd *sdkmetric.ManualReader) {
	t.Helper()
	natstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if delivered(t, rd) < 1 {
			return errors.New("no delivery counted")
		}
		return nil
	})
}

// startStreamedRequest runs the service with cfg and its metrics read by rd, and
// sends from a session a streamed request (stream id "first") to another whose
// deliveries come to held unanswered; req is that request, to send again.
func startStreamedRequest(t *testing.T, cfg Config) (rd *sdkmetric.ManualReader, e *env, from session, req wire.MsgRequestRequest, held chan *nats.Msg) {
	t.Helper()
	rd = sdkmetric.NewManualReader()
	cfg.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(rd))
	e = newEnv(t, cfg)
	from = e.open(t, "sender", nil)
	to := e.open(t, "busy", nil)
	held = make(chan *nats.Msg, 2)
	e.receive(t, to, func(m *nats.Msg) { held <- m })
	req = wire.MsgRequestRequest{Message: wire.Message{SessionID: to.id, Path: "chat/x"}, TimeoutMS: 30000, StreamID: "first"}
	if _, err := e.call(from, wire.SubjectMsgRequest, req); err != nil {
		t.Fatal(err)
	}
	return rd, e, from, req, held
}

// TestRefusedRequestDeliversNothing: a streamed request refused limit_exceeded
// (every stream slot taken) asked nobody, and roster.messages.delivered does not
// count its receivers; it counted them before the refusal.
func TestRefusedRequestDeliversNothing(t *testing.T) {
	rd, e, from, req, held := startStreamedRequest(t, Config{MaxStreams: 1})
	req.StreamID = "second"
	if _, err := e.call(from, wire.SubjectMsgRequest, req); !errors.Is(err, wire.ErrLimitExceeded) {
		t.Fatalf("second streamed request: got %v, want limit_exceeded", err)
	}
	first := <-held
	atLeastOne(t, rd) // counted once the first request's delivery is published
	if got := delivered(t, rd); got != 1 {
		t.Errorf("got roster.messages.delivered %d, want 1 (the refused request asked nobody)", got)
	}
	_ = first.Respond([]byte("done"))
}

// TestRequestCountsOnlyTheSessionsAsked: a receiver with the most requests in flight
// gets limit_exceeded in the request's results and is never asked;
// roster.messages.delivered counted it all the same.
func TestRequestCountsOnlyTheSessionsAsked(t *testing.T) {
	rd, e, from, req, held := startStreamedRequest(t, Config{MaxInFlight: 1})
	first := <-held
	req.StreamID = ""
	reply, err := e.call(from, wire.SubjectMsgRequest, req)
	if err != nil {
		t.Fatal(err)
	}
	var resp wire.MsgRequestResponse
	if err := json.Unmarshal(reply.Data, &resp); err != nil || len(resp.Results) != 1 || resp.Results[0].Status != wire.StatusLimitExceeded {
		t.Fatalf("second request: got %s, %v; want one limit_exceeded result", reply.Data, err)
	}
	atLeastOne(t, rd)
	if got := delivered(t, rd); got != 1 {
		t.Errorf("got roster.messages.delivered %d, want 1 (the second request asked nobody)", got)
	}
	_ = first.Respond([]byte("done"))
}
