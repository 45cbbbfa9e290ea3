// Package telemetry sets up OpenTelemetry tracing for a Roster process.
//
// Setup exports spans over OTLP/gRPC when OTEL_EXPORTER_OTLP_ENDPOINT (or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, using the standard OTEL_* variables for
// everything else, and otherwise installs no exporter: trace context is still
// propagated, so a trace started by a client continues through Roster to the
// receivers of its messages.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Enabled reports whether the environment asks for an OTLP exporter.
func Enabled() bool {
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Setup returns the tracer provider for a process named service at version, and a
// shutdown function that flushes pending spans.
func Setup(ctx context.Context, service, version string) (trace.TracerProvider, func(context.Context) error, error) {
	if !Enabled() {
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	}
	exp, err := otlptracegrpc.New(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("telemetry: otlp exporter: %w", err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(Resource(service, version)),
	)
	return tp, tp.Shutdown, nil
}

// Resource describes a Roster process to tracing back ends.
func Resource(service, version string) *resource.Resource {
	r, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		attribute.String("service.name", service),
		attribute.String("service.version", version),
	))
	if err != nil && !errors.Is(err, resource.ErrSchemaURLConflict) {
		return resource.NewSchemaless(attribute.String("service.name", service))
	}
	return r
}
