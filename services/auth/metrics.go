package auth

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// meterName is the instrumentation scope of the auth service's metrics.
const meterName = "github.com/seed-3c836eab/roster/services/auth"

// attempts counts authentication attempts by source (callout: a NATS connection;
// session: a session opening or changing principal) and outcome (allowed, denied,
// throttled, error): the figures to alert on when credentials are being guessed. The
// callout is not an endpoint, so pkg/endpoint's metrics do not see it.
type attempts struct {
	counter metric.Int64Counter
	sets    map[[2]string]attribute.Set
}

func newAttempts(mp metric.MeterProvider) (*attempts, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	c, err := mp.Meter(meterName).Int64Counter("roster.auth.attempts", metric.WithUnit("{attempt}"),
		metric.WithDescription("Authentication attempts by source (callout, session) and outcome (allowed, denied, throttled, error, expired: a callout the server stopped waiting for before it could be checked)."))
	if err != nil {
		return nil, err
	}
	a := &attempts{counter: c, sets: map[[2]string]attribute.Set{}}
	for _, src := range []string{"callout", "session"} {
		for _, out := range []string{"allowed", "denied", "throttled", "error", "expired"} {
			a.sets[[2]string{src, out}] = attribute.NewSet(attribute.String("roster.auth.source", src), attribute.String("roster.auth.outcome", out))
		}
	}
	return a, nil
}

// expired counts one attempt from source dropped unchecked: its server stopped
// waiting for the answer before a slot was free.
func (a *attempts) expired(ctx context.Context, source string) {
	a.counter.Add(ctx, 1, metric.WithAttributeSet(a.sets[[2]string{source, "expired"}]))
}

// record counts one attempt from source that ended with err.
func (a *attempts) record(ctx context.Context, source string, err error) {
	out := "allowed"
	switch {
	case err == nil:
	case errors.Is(err, wire.ErrUnauthenticated):
		out = "denied"
	case errors.Is(err, wire.ErrThrottled):
		out = "throttled"
	default:
		out = "error"
	}
	a.counter.Add(ctx, 1, metric.WithAttributeSet(a.sets[[2]string{source, out}]))
}
