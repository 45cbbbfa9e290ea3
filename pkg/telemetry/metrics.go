package telemetry

import (
	"context"
	"fmt"
	"os"

	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// MetricsEnabled reports whether the environment asks for metrics over OTLP: an
// endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_METRICS_ENDPOINT)
// and OTEL_METRICS_EXPORTER is not "none".
func MetricsEnabled() bool {
	if os.Getenv("OTEL_METRICS_EXPORTER") == "none" {
		return false
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") != ""
}

// SetupMetrics returns the meter provider for a process named service at version,
// and a shutdown function that exports what is pending. Enabled, it exports over
// OTLP/gRPC every OTEL_METRIC_EXPORT_INTERVAL (60 s), configured by the standard
// OTEL_* variables; otherwise it records nothing.
func SetupMetrics(ctx context.Context, service, version string) (metric.MeterProvider, func(context.Context) error, error) {
	if !MetricsEnabled() {
		return noop.NewMeterProvider(), func(context.Context) error { return nil }, nil
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
