package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/seed-3c836eab/roster/pkg/telemetry"
	"github.com/seed-3c836eab/roster/pkg/version"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// envCarrier reads the W3C trace context a parent process passed in the
// environment: TRACEPARENT, TRACESTATE and BAGGAGE, as OpenTelemetry specifies for
// environment variables as context carriers.
type envCarrier struct{}

var _ propagation.TextMapCarrier = envCarrier{}

func (envCarrier) Get(key string) string { return os.Getenv(strings.ToUpper(key)) }
func (envCarrier) Set(string, string)    {}
func (envCarrier) Keys() []string        { return []string{"TRACEPARENT", "TRACESTATE", "BAGGAGE"} }

// flushWait bounds how long a command waits at its end for its spans to be exported.
const flushWait = 2 * time.Second

// trace starts the span of a client command, in the trace the environment names
// (TRACEPARENT) if any, and sets the tracer provider the command's client uses: one
// exporting over OTLP when the OTEL_* variables ask for it (telemetry.Setup), else
// one that only carries the caller's trace context on. end ends the span with the
// command's error and flushes. Tracing settings this build cannot honour are
// reported on stderr: they must not keep a command from running.
func (f *clientFlags) trace(cmd *cobra.Command) (ctx context.Context, end func(error)) {
	ctx = wire.Propagator.Extract(cmd.Context(), envCarrier{})
	tp, shutdown, err := telemetry.Setup(ctx, "roster-cli", version.Version)
	if err != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "roster: tracing off: %v\n", err)
		tp, shutdown = noop.NewTracerProvider(), func(context.Context) error { return nil }
	}
	f.tp = tp
	ctx, span := tp.Tracer("github.com/seed-3c836eab/roster/cmd/roster").Start(ctx, cmd.CommandPath())
	return ctx, func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
			var we *wire.Error
			if errors.As(err, &we) {
				span.SetAttributes(attribute.String("roster.error.code", string(we.Code)), attribute.String("error.type", string(we.Code)))
			}
		}
		span.End()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushWait)
		defer cancel()
		if err := shutdown(sctx); errors.Is(err, context.DeadlineExceeded) {
			fmt.Fprintf(cmd.ErrOrStderr(), "roster: spans not exported: the OTLP collector at %s did not take them within %s\n", telemetry.TracesCollector(), flushWait)
		} else if err != nil {
			fmt.Fprintf(cmd.ErrOrStderr(), "roster: spans not exported: %v\n", err)
		}
	}
}

// traceEnv is the environment that hands ctx's trace context to a child process
// (TRACEPARENT, TRACESTATE, BAGGAGE): the command roster lock acquire runs continues
// the trace, as roster itself does.
func traceEnv(ctx context.Context) []string {
	c := propagation.MapCarrier{}
	wire.Propagator.Inject(ctx, c)
	var env []string
	for k, v := range c {
		env = append(env, strings.ToUpper(k)+"="+v)
	}
	return env
}
