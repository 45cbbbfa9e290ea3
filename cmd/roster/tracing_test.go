package main

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/roster"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestClientCommandsContinueTheCallersTrace: a client command started with
// TRACEPARENT (OTel's carrier for a process started by another) makes its requests
// in that trace, which the services join.
func TestClientCommandsContinueTheCallersTrace(t *testing.T) {
	for _, k := range []string{"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		t.Setenv(k, "")
	}
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	p := rostertest.Start(t, rostertest.WithConfig(func(c *roster.Config) { c.TracerProvider = tp }))
	c := cli{t: t, server: p.ClientURL()}
	ctx := testCtx(t)

	// served returns the trace of the server span of subject the command caused.
	served := func(subject string) []trace.TraceID {
		var ids []trace.TraceID
		natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
			ids = nil
			for _, s := range rec.Ended() {
				if s.SpanKind() == trace.SpanKindServer && s.Name() == subject {
					ids = append(ids, s.SpanContext().TraceID())
				}
			}
			if len(ids) == 0 {
				return fmt.Errorf("no server span %s", subject)
			}
			return nil
		})
		return ids
	}

	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	t.Setenv("TRACEPARENT", "00-"+traceID+"-"+parentID+"-01")
	if r := c.run(ctx, "", "lock", "list"); r.err != nil {
		t.Fatalf("lock list: %v", r.err)
	}
	// The command lock acquire runs continues the trace too.
	if r := c.run(ctx, "", "lock", "acquire", "traced/x", "--", "sh", "-c", "echo $TRACEPARENT"); r.err != nil || !strings.Contains(r.stdout, "-"+traceID+"-") {
		t.Errorf("lock acquire's command: got %q, %v; want TRACEPARENT in trace %s", r.stdout, r.err, traceID)
	}
	for _, subject := range []string{wire.SubjectSessionOpen, wire.SubjectLockList, wire.SubjectSessionClose} {
		if ids := served(subject); ids[0].String() != traceID {
			t.Errorf("%s: served in trace %s, want the caller's %s", subject, ids[0], traceID)
		}
	}

}

// TestSpansNotExportedNameTheCollector: a command whose spans the OTLP collector
// does not take says which collector and how long it waited; it said only
// "roster: exporting spans: context deadline exceeded". The command's own result
// stands (exit 0).
func TestSpansNotExportedNameTheCollector(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	endpoint := "http://" + ln.Addr().String()
	_ = ln.Close() // nobody listens there now
	for _, k := range []string{"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "TRACEPARENT"} {
		t.Setenv(k, "")
	}
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
	c := newCLI(t)
	r := c.run(testCtx(t), "", "lock", "list")
	if r.err != nil {
		t.Fatalf("lock list: %v", r.err)
	}
	if !strings.Contains(r.stderr, "spans not exported") || !strings.Contains(r.stderr, endpoint) || !strings.Contains(r.stderr, flushWait.String()) {
		t.Errorf("stderr %q, want it to say the spans were not exported to %s within %s", r.stderr, endpoint, flushWait)
	}
}

// TestEndpointsTheExporterWouldIgnoreTurnTracingOff: the OTLP exporter reads its
// endpoint variables as URLs and silently skips one that does not parse — the
// per-signal one for the general one, or both for its default localhost:4317 —
// while roster's message on a failed export named the variable's value: with
// OTEL_EXPORTER_OTLP_ENDPOINT=127.0.0.1:PORT (no scheme) it said the collector
// there had not taken the spans, which had gone to localhost:4317. Such a value
// now turns tracing off with an error naming the variable, as other settings this
// build cannot honour do; the command runs.
func TestEndpointsTheExporterWouldIgnoreTurnTracingOff(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	for _, tc := range []struct {
		name, variable string
		env            map[string]string
	}{
		{"no scheme", "OTEL_EXPORTER_OTLP_ENDPOINT", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": addr}},
		{"traces endpoint not a URL", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
			map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://[::1", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + addr}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "TRACEPARENT"} {
				t.Setenv(k, tc.env[k])
			}
			c := newCLI(t)
			r := c.run(testCtx(t), "", "lock", "list")
			if r.err != nil {
				t.Fatalf("lock list: %v", r.err)
			}
			if !strings.Contains(r.stderr, "tracing off") || !strings.Contains(r.stderr, tc.variable+"=") || strings.Contains(r.stderr, "spans not exported") {
				t.Errorf("stderr %q, want tracing off naming %s", r.stderr, tc.variable)
			}
		})
	}
}

// TestTelemetryErrorsAreOneLineAMinute: the client commands report failed exports
// on stderr once a minute, saying what failed, rather than a bare timestamped line
// for each (OTel's default handler), every few seconds while a listen runs; at exit
// they say how many were left out.
func TestTelemetryErrorsAreOneLineAMinute(t *testing.T) {
	var stderr natstest.Buffer
	h, flush := telemetryErrors(&stderr)
	for range 5 {
		h.Handle(errors.New("traces export: connection refused"))
	}
	out := stderr.String()
	if n := strings.Count(out, "\n"); n != 1 {
		t.Fatalf("5 failed exports within a minute printed %d lines, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "telemetry error") || !strings.Contains(out, "connection refused") || strings.Contains(out, "time=") {
		t.Fatalf("the line: %q, want the failure and what failed, without a time", out)
	}
	flush()
	if out = stderr.String(); strings.Count(out, "\n") != 2 || !strings.Contains(out, "suppressed=4") {
		t.Fatalf("at exit: %q, want a second line counting the 4 left out", out)
	}
}
