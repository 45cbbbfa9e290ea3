package endpoint_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestServerSpansNameTheCallAsTheMetricDoes: a request's server span carries the
// attributes its rpc.server.call.duration point has — rpc.system.name, rpc.method
// (the subject), rpc.response.status_code and, failed, error.type — with the same
// values, OTel's RPC conventions for both, so that a back end joins a span to its
// metric; no attribute the conventions have dropped (rpc.service).
func TestServerSpansNameTheCallAsTheMetricDoes(t *testing.T) {
	rd := sdkmetric.NewManualReader()
	f := setup(t, endpoint.Config{Name: "roster-test", Version: "1.0.0", Prefix: "roster.v1.session",
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(rd))}, echo)
	const subject = "roster.v1.session.echo"
	for _, body := range []*echoRequest{{Text: "hi"}, {}} {
		_ = wire.Call(context.Background(), f.client, subject, nil, body, nil)
	}
	keys := []attribute.Key{"rpc.system.name", "rpc.method", "rpc.response.status_code", "error.type"}
	// The points, by outcome, and the spans: a request is recorded after its
	// reply is sent.
	points := map[string]attribute.Set{}
	var spans []sdktrace.ReadOnlySpan
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		var rm metricdata.ResourceMetrics
		if err := rd.Collect(context.Background(), &rm); err != nil {
			return err
		}
		clear(points)
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if h, ok := m.Data.(metricdata.Histogram[float64]); ok && m.Name == "rpc.server.call.duration" {
					for _, p := range h.DataPoints {
						v, _ := p.Attributes.Value("rpc.response.status_code")
						points[v.AsString()] = p.Attributes
					}
				}
			}
		}
		spans = spans[:0]
		for _, s := range f.recorder.Ended() {
			if s.Name() == subject {
				spans = append(spans, s)
			}
		}
		if len(spans) < 2 || len(points) < 2 {
			return fmt.Errorf("%d server spans and %d metric points, want 2 of each", len(spans), len(points))
		}
		return nil
	})
	var outcomes []string
	for _, s := range spans {
		set := attribute.NewSet(s.Attributes()...)
		status, _ := set.Value("rpc.response.status_code")
		outcomes = append(outcomes, status.AsString())
		point, ok := points[status.AsString()]
		if !ok {
			t.Errorf("span %v: rpc.response.status_code %q, and no metric point has it (points %v)", s.Attributes(), status.AsString(), points)
			continue
		}
		for _, k := range keys {
			sv, _ := set.Value(k)
			mv, _ := point.Value(k)
			if sv.String() != mv.String() {
				t.Errorf("%s: span %q, metric %q", k, sv.String(), mv.String())
			}
		}
		if v, ok := set.Value("rpc.service"); ok {
			t.Errorf("span has rpc.service %q, which OTel's RPC conventions dropped for rpc.method", v.String())
		}
	}
	slices.Sort(outcomes)
	if !slices.Equal(outcomes, []string{string(wire.CodeBadRequest), "ok"}) {
		t.Errorf("server spans' outcomes: got %v, want bad_request and ok", outcomes)
	}
}

// TestServerSpansRecordOnlySessionIDs: the server span records the Roster-Session
// header as roster.session_id only when it has the shape of a session id. The
// header is the client's, as long as a message may be: a client that sent a
// megabyte of it on every request (sampled, by its own traceparent) had the
// service hold a megabyte per span until the exporter took it.
func TestServerSpansRecordOnlySessionIDs(t *testing.T) {
	f := setup(t, endpoint.Config{}, echo)
	const id = "5QmZc1h8RqP0aLxV2yWfKd"
	for _, sid := range []string{strings.Repeat("x", 100<<10), id} {
		msg := &nats.Msg{Subject: "roster.v1.session.echo", Header: nats.Header{wire.HeaderSession: {sid}}, Data: []byte(`{"text":"hi"}`)}
		if _, err := f.client.RequestMsg(msg, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		got = got[:0]
		spans := f.recorder.Ended()
		for _, s := range spans {
			for _, kv := range s.Attributes() {
				if kv.Key == "roster.session_id" {
					got = append(got, kv.Value.AsString())
				}
			}
		}
		if len(spans) < 2 {
			return fmt.Errorf("%d spans ended, want 2", len(spans))
		}
		return nil
	})
	if len(got) != 1 || got[0] != id {
		lens := make([]int, len(got))
		for i, v := range got {
			lens[i] = len(v)
		}
		t.Fatalf("roster.session_id of the spans: %d values of lengths %v, want only %s", len(got), lens, id)
	}
}

// TestRefusedWhileWaitingHasAServerSpan: a request refused before a handler ran (its
// deadline passed while it waited for a slot) has a server span in its caller's
// trace, with the code it was answered with (as error.type: a client's deadline is
// not the service's error, so no error status, as SpanError has it). Before, only its metric point
// told of it, and the caller's trace showed no server at all.
func TestRefusedWhileWaitingHasAServerSpan(t *testing.T) {
	hold, held := make(chan struct{}), make(chan struct{}, 1)
	f := setup(t, endpoint.Config{MaxConcurrent: 1}, func(_ context.Context, _ *endpoint.Call, req *echoRequest) (*echoResponse, error) {
		if req.Text == "hold" {
			held <- struct{}{}
			<-hold
		}
		return &echoResponse{Text: req.Text}, nil
	})
	release := sync.OnceFunc(func() { close(hold) })
	t.Cleanup(release)
	first := make(chan error, 1)
	go func() { first <- rawCall(t, f.client, nil, `{"text":"hold"}`) }()
	<-held // the one slot is taken

	ctx, client := f.tp.Tracer("test").Start(context.Background(), "client")
	hdr := nats.Header{}
	wire.Inject(ctx, hdr)
	hdr.Set(wire.HeaderTimeout, "50")
	if err := rawCall(t, f.client, hdr, `{"text":"late"}`); !errors.Is(err, wire.ErrTimeout) {
		t.Fatalf("got %v, want timeout", err)
	}
	client.End()
	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	var span sdktrace.ReadOnlySpan
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		for _, s := range f.recorder.Ended() {
			if s.SpanKind() == trace.SpanKindServer && s.Parent().SpanID() == client.SpanContext().SpanID() {
				span = s
				return nil
			}
		}
		return errors.New("no server span in the refused request's trace")
	})
	set := attribute.NewSet(span.Attributes()...)
	status, _ := set.Value("rpc.response.status_code")
	errType, _ := set.Value("error.type")
	if status.AsString() != string(wire.CodeTimeout) || errType.AsString() != string(wire.CodeTimeout) {
		t.Errorf("rpc.response.status_code %q, error.type %q; want timeout for both", status.AsString(), errType.AsString())
	}
}
