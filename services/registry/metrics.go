package registry

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// meterName is the instrumentation scope of the registry's metrics.
const meterName = "github.com/seed-3c836eab/roster/services/registry"

// metrics are the registry's own instruments, beside the per-request ones of
// pkg/endpoint.
type metrics struct {
	// closed counts the closes this instance wrote, by reason: each close is written
	// once, by one instance, so the sum over instances is the deployment's.
	closed metric.Int64Counter
	reg    metric.Registration // the sessions gauge's callback
}

func newMetrics(mp metric.MeterProvider, t *tracker) (*metrics, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m := mp.Meter(meterName)
	closed, err := m.Int64Counter("roster.sessions.closed", metric.WithUnit("{session}"),
		metric.WithDescription("Sessions closed by this instance, by reason (by_client, by_server, expired, failed)."))
	if err != nil {
		return nil, err
	}
	live, err := m.Int64ObservableGauge("roster.sessions", metric.WithUnit("{session}"),
		metric.WithDescription("Sessions of the whole deployment that are not closed, by state, as this instance sees them: every instance reports the same figure."))
	if err != nil {
		return nil, err
	}
	states := map[wire.SessionState]attribute.Set{}
	for _, st := range []wire.SessionState{wire.StateConnecting, wire.StateActive, wire.StateRecovering} {
		states[st] = attribute.NewSet(attribute.String("roster.session.state", string(st)))
	}
	reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		counts := t.countByState()
		for st, set := range states {
			o.ObserveInt64(live, int64(counts[st]), metric.WithAttributeSet(set))
		}
		return nil
	}, live)
	if err != nil {
		return nil, err
	}
	return &metrics{closed: closed, reg: reg}, nil
}

// sessionClosed counts a close this instance wrote.
func (m *metrics) sessionClosed(ctx context.Context, rec *sessions.Record) {
	m.closed.Add(ctx, 1, metric.WithAttributes(attribute.String("roster.close.reason", string(rec.CloseReason))))
}

// countByState counts the sessions the tracker follows that are not closed, by state.
func (t *tracker) countByState() map[wire.SessionState]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	counts := map[wire.SessionState]int{}
	for _, e := range t.sessions {
		if !e.rec.Closed() {
			counts[e.rec.State]++
		}
	}
	return counts
}
