package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/telemetry"
)

// TestLogLinesNameTheirTrace: a record logged with a span's context carries its
// trace_id and span_id, also through a logger's With; one logged without a span
// carries neither.
func TestLogLinesNameTheirTrace(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(telemetry.LogHandler(slog.NewJSONHandler(&out, nil))).With("service", "registry")
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	ctx, span := tp.Tracer("test").Start(context.Background(), "request")
	defer span.End()

	line := func() map[string]any {
		t.Helper()
		var m map[string]any
		if err := json.Unmarshal(out.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", out.String(), err)
		}
		out.Reset()
		return m
	}
	log.ErrorContext(ctx, "request failed", "err", "boom")
	m := line()
	sc := span.SpanContext()
	if m["trace_id"] != sc.TraceID().String() || m["span_id"] != sc.SpanID().String() {
		t.Fatalf("got trace_id %v span_id %v, want %s %s", m["trace_id"], m["span_id"], sc.TraceID(), sc.SpanID())
	}
	if m["service"] != "registry" || m["err"] != "boom" {
		t.Fatalf("got %v: the line lost its own attributes", m)
	}

	// The caller's span, propagated without a local tracer (no exporter installed).
	remote := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5}, Remote: true})
	log.WarnContext(trace.ContextWithRemoteSpanContext(context.Background(), remote), "request failed")
	if m := line(); m["trace_id"] != remote.TraceID().String() {
		t.Fatalf("got trace_id %v, want the propagated %s", m["trace_id"], remote.TraceID())
	}

	log.Info("started")
	if m := line(); m["trace_id"] != nil || m["span_id"] != nil {
		t.Fatalf("got %v: a line without a span named a trace", m)
	}
}
