package roster_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/roster"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// metricsOf collects the metrics a reader holds.
type metricsOf struct {
	t  *testing.T
	rd *sdkmetric.ManualReader
}

// value sums the data points of the metric called name whose attributes include
// every pair of want ("key", "value", …): the count of a histogram, the value of a
// sum or gauge. It reports whether the metric was there at all.
func (m metricsOf) value(name string, want ...string) (int64, bool) {
	m.t.Helper()
	var rm metricdata.ResourceMetrics
	if err := m.rd.Collect(context.Background(), &rm); err != nil {
		m.t.Fatal(err)
	}
	match := func(set attribute.Set) bool {
		for i := 0; i+1 < len(want); i += 2 {
			if v, ok := set.Value(attribute.Key(want[i])); !ok || v.String() != want[i+1] {
				return false
			}
		}
		return true
	}
	var sum int64
	found := false
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			if mt.Name != name {
				continue
			}
			found = true
			switch d := mt.Data.(type) {
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					if match(p.Attributes) {
						sum += int64(p.Count)
					}
				}
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					if match(p.Attributes) {
						sum += p.Value
					}
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					if match(p.Attributes) {
						sum += p.Value
					}
				}
			default:
				m.t.Fatalf("%s: unexpected data %T", name, mt.Data)
			}
		}
	}
	return sum, found
}

// expect waits until the metric's value is want.
func (m metricsOf) expect(want int64, name string, attrs ...string) {
	m.t.Helper()
	natstest.CheckFor(m.t, 10*time.Second, 20*time.Millisecond, func() error {
		got, found := m.value(name, attrs...)
		if !found || got != want {
			return fmt.Errorf("%s %v: got %d (recorded: %v), want %d", name, attrs, got, found, want)
		}
		return nil
	})
}

// TestMetrics: every request is recorded by method and outcome, and each service
// reports what it holds and does, in a real OTel SDK.
func TestMetrics(t *testing.T) {
	rd := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(rd))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	p := rostertest.Start(t, rostertest.WithConfig(func(c *roster.Config) { c.MeterProvider = mp }))
	m := metricsOf{t: t, rd: rd}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	s, err := client.Open(ctx, p.ClientURL(), client.Options{Properties: map[string]string{"Desk": "FX"}})
	if err != nil {
		t.Fatal(err)
	}
	m.expect(1, "rpc.server.call.duration", "rpc.method", wire.SubjectSessionOpen, "rpc.response.status_code", "ok", "rpc.system.name", "nats")
	m.expect(1, "roster.sessions", "roster.session.state", "ACTIVE")
	m.expect(1, "roster.auth.attempts", "roster.auth.source", "session", "roster.auth.outcome", "allowed")
	if n, _ := m.value("roster.auth.attempts", "roster.auth.source", "callout", "roster.auth.outcome", "allowed"); n < 1 {
		t.Fatalf("callout attempts allowed: %d, want at least the client's connection", n)
	}

	// An error is recorded with its code.
	if _, err := s.ListLocks(ctx, wire.LockListRequest{Limit: -1}); !errors.Is(err, client.ErrBadRequest) {
		t.Fatalf("list with limit -1: got %v, want bad_request", err)
	}
	m.expect(1, "rpc.server.call.duration", "rpc.method", wire.SubjectLockList, "error.type", "bad_request")

	l, err := s.Lock(ctx, "reports/daily", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m.expect(1, "roster.locks.held")
	if _, err := s.Send(ctx, client.ToFilter(`Desk is "FX"`), "news", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	m.expect(1, "roster.messages.delivered", "roster.operation", "send", "roster.target", "filter")
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	m.expect(0, "roster.locks.held")

	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	m.expect(1, "roster.sessions.closed", "roster.close.reason", "by_client")
	m.expect(0, "roster.sessions", "roster.session.state", "ACTIVE")
}
