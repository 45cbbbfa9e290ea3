package endpoint_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
	"go.opentelemetry.io/otel/trace/noop"
)

// BenchmarkRoundTrip measures a request through an endpoint (import across accounts,
// strict decode, span, bounded goroutine, JSON reply) beside its floor measured in the
// same run: a raw NATS request to a plain subscriber across the same import.
func BenchmarkRoundTrip(b *testing.B) {
	s := natstest.Start(b)
	svcConn := s.ServiceConn(b)
	svc, err := endpoint.New(svcConn, endpoint.Config{Name: "bench", Version: "1.0.0", Prefix: "roster.v1.session"}, noop.NewTracerProvider(), natstest.Logger(b))
	if err != nil {
		b.Fatal(err)
	}
	defer svc.Stop(context.Background())
	if err := endpoint.Add(svc, endpoint.Endpoint{Name: "echo"}, echo); err != nil {
		b.Fatal(err)
	}
	sub, err := svcConn.Subscribe("roster.v1.session.raw", func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = svcConn.Flush()
	client := s.ClientConn(b)
	body := []byte(`{"text":"hello"}`)

	floor := measure(b, func() error {
		_, err := client.Request("roster.v1.session.raw", body, 5*time.Second)
		return err
	})
	b.ResetTimer()
	for b.Loop() {
		if _, err := wire.CallRaw(context.Background(), client, "roster.v1.session.echo", nil, body); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	per := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(floor, "floor-ns/op")
	b.ReportMetric(per/floor, "x-floor")
}

// measure returns the mean ns per call of fn over a fixed number of calls.
func measure(b *testing.B, fn func() error) float64 {
	b.Helper()
	const n = 2000
	start := time.Now()
	for range n {
		if err := fn(); err != nil {
			b.Fatal(err)
		}
	}
	return float64(time.Since(start).Nanoseconds()) / n
}
