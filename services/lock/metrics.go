package lock

import (
	"context"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// meterName is the instrumentation scope of the lock service's metrics.
const meterName = "github.com/seed-3c836eab/roster/services/lock"

// registerMetrics reports, beside the per-request metrics of pkg/endpoint, the locks
// held and the requests waiting in the whole deployment (from the instance's cache
// of the bucket: every instance reports the same figures), the waiters this
// instance granted, and the requests it did not apply as overtaken.
func (s *Service) registerMetrics(mp metric.MeterProvider) (metric.Registration, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m := mp.Meter(meterName)
	held, err := m.Int64ObservableGauge("roster.locks.held", metric.WithUnit("{lock}"),
		metric.WithDescription("Locks with at least one holder in the whole deployment, as this instance sees them."))
	if err != nil {
		return nil, err
	}
	waiting, err := m.Int64ObservableGauge("roster.locks.waiting", metric.WithUnit("{request}"),
		metric.WithDescription("Acquire requests waiting for a lock in the whole deployment, as this instance sees them."))
	if err != nil {
		return nil, err
	}
	grants, err := m.Int64ObservableCounter("roster.locks.handoffs", metric.WithUnit("{grant}"),
		metric.WithDescription("Waiting requests this instance granted when the lock came free."))
	if err != nil {
		return nil, err
	}
	overtaken, err := m.Int64ObservableCounter("roster.locks.overtaken", metric.WithUnit("{request}"),
		metric.WithDescription("Requests this instance did not apply because their session had acted on the lock since they arrived, or re-issued them (late copies of a waiting request), answered unavailable: given up by their callers, mostly, while storage stalled."))
	if err != nil {
		return nil, err
	}
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		h, w := s.st.counts()
		o.ObserveInt64(held, int64(h))
		o.ObserveInt64(waiting, int64(w))
		o.ObserveInt64(grants, int64(s.grants.Load()))
		o.ObserveInt64(overtaken, int64(s.overtaken.Load()))
		return nil
	}, held, waiting, grants, overtaken)
}

// counts returns how many cached locks have holders, and how many requests wait.
func (st *store) counts() (held, waiting int) {
	st.mu.RLock()
	defer st.mu.RUnlock()
	for _, e := range st.cache {
		if e.rec == nil {
			continue
		}
		if len(e.rec.Holders) > 0 {
			held++
		}
		waiting += len(e.rec.Waiters)
	}
	return held, waiting
}
