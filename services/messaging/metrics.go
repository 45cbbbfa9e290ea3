package messaging

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// meterName is the instrumentation scope of the messaging service's metrics.
const meterName = "github.com/seed-3c836eab/roster/services/messaging"

// metrics count what the service delivers, beside the per-request metrics of
// pkg/endpoint (which count sends, not the deliveries a filter fans out to).
type metrics struct {
	delivered metric.Int64Counter
	// by operation (send, request) and target (session, filter)
	sets map[[2]string]attribute.Set
}

func newMetrics(mp metric.MeterProvider) (*metrics, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	delivered, err := mp.Meter(meterName).Int64Counter("roster.messages.delivered", metric.WithUnit("{message}"),
		metric.WithDescription("Deliveries to sessions, by operation (send, request) and target (session, filter): a send counts the sessions it was published to, a request the sessions it asked."))
	if err != nil {
		return nil, err
	}
	m := &metrics{delivered: delivered, sets: map[[2]string]attribute.Set{}}
	for _, op := range []string{"send", "request"} {
		for _, to := range []string{"session", "filter"} {
			m.sets[[2]string{op, to}] = attribute.NewSet(attribute.String("roster.operation", op), attribute.String("roster.target", to))
		}
	}
	return m, nil
}

// count records n deliveries of operation op to a session (byFilter false) or by
// filter.
func (m *metrics) count(ctx context.Context, op string, byFilter bool, n int) {
	if n == 0 {
		return
	}
	to := "session"
	if byFilter {
		to = "filter"
	}
	m.delivered.Add(ctx, int64(n), metric.WithAttributeSet(m.sets[[2]string{op, to}]))
}
