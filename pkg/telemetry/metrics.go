package telemetry

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// MetricsEnabled reports whether the environment asks for metrics to be exported:
// as for spans (Enabled), an OTLP endpoint is named (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_METRICS_ENDPOINT) or OTEL_METRICS_EXPORTER=otlp, and neither
// OTEL_SDK_DISABLED=true nor OTEL_METRICS_EXPORTER=none turns them off.
func MetricsEnabled() bool { return metrics.enabled() }

// SetupMetrics returns the meter provider for a process named service at version,
// and a shutdown function that exports what is pending. Enabled, it exports over
// OTLP/gRPC every OTEL_METRIC_EXPORT_INTERVAL (60 s), configured by the standard
// OTEL_* variables; otherwise it records nothing. Settings this build cannot honour
// are errors, as for spans.
func SetupMetrics(ctx context.Context, service, version string) (metric.MeterProvider, func(context.Context) error, error) {
	if !metrics.enabled() {
		return noop.NewMeterProvider(), func(context.Context) error { return nil }, nil
	}
	if err := metrics.check(); err != nil {
		return nil, nil, err
	}
	exp, err := otlpmetricgrpc.New(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("telemetry: otlp metric exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(
		sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)),
		sdkmetric.WithResource(Resource(service, version)),
	)
	return mp, mp.Shutdown, nil
}
