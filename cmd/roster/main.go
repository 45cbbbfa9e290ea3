// Command roster runs Roster's services and is its command-line client.
//
//	roster serve                       # all four services on an embedded NATS server
//	roster serve --services lock \
//	  --nats-url nats://nats:4222      # one service against an existing NATS cluster
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel"

	"github.com/seed-3c836eab/roster/pkg/logthrottle"
)

func main() {
	ctx, stop := stopOnSignal()
	defer stop()
	otelErrors, flushOtelErrors := telemetryErrors(os.Stderr)
	otel.SetErrorHandler(otelErrors)
	err := run(ctx, os.Args[1:])
	flushOtelErrors()
	if err != nil {
		fmt.Fprintln(os.Stderr, "roster:", err)
		os.Exit(exitCode(err))
	}
}

// telemetryErrors reports OpenTelemetry's errors (failed exports, mostly) on w, at
// most one line a minute, for the client commands; flush, at exit, says how many
// were left out since the last line. With the OTEL_* variables naming a collector
// that is down, OTel's default handler printed a bare timestamped line for every
// failed export, every few seconds for as long as a listen or session open ran.
// roster serve replaces it with its log's.
func telemetryErrors(w io.Writer) (h otel.ErrorHandler, flush func()) {
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
	warn := logthrottle.New(log, "roster: telemetry error", time.Minute)
	return otel.ErrorHandlerFunc(func(err error) { warn.Warn("err", err) }), warn.Flush
}

// stopOnSignal returns a context that ends at the first SIGINT, SIGTERM or SIGHUP,
// with a signalError as its cause. A second one ends the process at once, as if
// roster did not handle signals: a stop that waits for services to drain can be cut
// short. SIGHUP is there because its default effect killed roster on the spot: a
// serve whose terminal closed (or sent a reload meant for another daemon) stopped
// without draining and without a line in its log, a listen without closing its
// session. A SIGHUP ignored when roster started (nohup roster serve &) stays ignored:
// signal.Notify would undo that, and a serve started so to outlive its terminal
// stopped when the terminal closed.
func stopOnSignal() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(context.Background())
	signals := make(chan os.Signal, 1)
	stopping := []os.Signal{os.Interrupt, syscall.SIGTERM}
	if !signal.Ignored(syscall.SIGHUP) {
		stopping = append(stopping, syscall.SIGHUP)
	}
	signal.Notify(signals, stopping...)
	stopped := make(chan struct{})
	go func() {
		select {
		case sig := <-signals:
			signal.Stop(signals) // the next one has its default effect
			cancel(signalError{sig})
		case <-stopped:
		}
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			signal.Stop(signals)
			close(stopped)
			cancel(nil)
		})
	}
}

// signalError is the cause of the context stopOnSignal returns once a signal has
// ended it, and the error of a command that the signal cut short: it exits with 128
// and the signal's number, as a shell reports a command a signal ended.
type signalError struct{ sig os.Signal }

func (e signalError) Error() string {
	switch e.sig {
	case os.Interrupt:
		return "interrupted (SIGINT)"
	case syscall.SIGTERM:
		return "interrupted (SIGTERM)"
	case syscall.SIGHUP:
		return "interrupted (SIGHUP)"
	}
	return fmt.Sprintf("interrupted (%v)", e.sig)
}

// exitCode is the status a shell gives a command ended by the signal.
func (e signalError) exitCode() int {
	if s, ok := e.sig.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return 128 + int(syscall.SIGINT)
}

// reportInterrupts makes cmd and its subcommands, when a signal cuts them short,
// fail with the signal rather than with the context.Canceled they unwind with:
// that read "roster: context canceled" and exited 1, like any other failure.
// Commands that run until interrupted (listen, session open …) return nil and
// still exit 0.
func reportInterrupts(cmd *cobra.Command) {
	if run := cmd.RunE; run != nil {
		cmd.RunE = func(cmd *cobra.Command, args []string) error {
			return interrupted(cmd.Context(), run(cmd, args))
		}
	}
	for _, sub := range cmd.Commands() {
		reportInterrupts(sub)
	}
}

// interrupted returns the signal that ended ctx when err is that ending, else err.
func interrupted(ctx context.Context, err error) error {
	if err == nil || ctx == nil || ctx.Err() == nil || !errors.Is(err, context.Canceled) {
		return err
	}
	var sig signalError
	if errors.As(context.Cause(ctx), &sig) {
		return sig
	}
	return err
}

// run builds the command tree and executes it.
func run(ctx context.Context, args []string) error {
	root := newRootCmd()
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}
