package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/version"
)

// TestHealthAnswersStartingWhileServeStarts: the probes' port opens before the
// services start, and both probes answer 503 with "starting" until they have: a
// process waiting for its NATS (here one that never listens) answered nothing, so
// that an operator could not tell it from one that had not come up at all.
func TestHealthAnswersStartingWhileServeStarts(t *testing.T) {
	health := "127.0.0.1:" + strconv.Itoa(freePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--log-level", "error", "--services", "lock",
			"--nats-url", "nats://127.0.0.1:" + strconv.Itoa(freePort(t)), "--health-listen", health})
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop within 30s")
		}
	}()
	for _, path := range []string{"/readyz", "/livez"} {
		var body struct {
			Live, Ready, Starting bool
		}
		natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
			resp, err := http.Get("http://" + health + path)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("%s: got %s while starting, want 503", path, resp.Status)
			}
			return json.NewDecoder(resp.Body).Decode(&body)
		})
		if !body.Starting || body.Live || body.Ready {
			t.Errorf("%s: got %+v, want starting, neither live nor ready", path, body)
		}
	}
}

// TestHealthListenFailsBeforeAnythingStarts: a --health-listen address that cannot be
// listened on fails serve before it starts the embedded server or waits for NATS.
// It was found only once every service had started (after up to a minute of NATS
// retries), and then stopped them all; a malformed address is a usage error.
func TestHealthListenFailsBeforeAnythingStarts(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, tc := range []struct {
		addr string
		exit int
	}{
		{taken.Addr().String(), 1},
		{"8080", 2}, // no host: a missing port to net.Listen
	} {
		data := filepath.Join(t.TempDir(), "data")
		err := run(context.Background(), []string{"serve", "--log-level", "error", "--listen", "127.0.0.1:0",
			"--data-dir", data, "--health-listen", tc.addr})
		if err == nil || !strings.Contains(err.Error(), "--health-listen") || exitCode(err) != tc.exit {
			t.Errorf("%s: got %v (exit %d), want a --health-listen error (exit %d)", tc.addr, err, exitCode(err), tc.exit)
		}
		if _, err := os.Stat(data); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: the embedded server started (its data directory: %v)", tc.addr, err)
		}
	}
}

// TestServeLogsWhatItRuns: once started, serve logs one line with its version, the
// services, --replicas and where traces and metrics go. Nothing said which version
// a process ran, and nothing whether it exported telemetry, or where: an operator
// whose collector received nothing could not tell a process that never tried.
func TestServeLogsWhatItRuns(t *testing.T) {
	for _, k := range []string{"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"} {
		t.Setenv(k, "")
	}
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("OTEL_METRICS_EXPORTER", "none")
	line := serveLogLine(t, "roster started", "--services", "registry,lock")
	want := map[string]any{"version": version.Version, "services": "registry,lock", "replicas": float64(1),
		"traces": "http://127.0.0.1:1 (OTEL_EXPORTER_OTLP_ENDPOINT)", "metrics": "off"}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("%s: got %v, want %v (line %v)", k, line[k], v, line)
		}
	}
}

// TestServeWithoutNATSCredentialsSaysSo: a --nats-url given no credentials, which its
// servers refuse, says that none were given and how to give them. It said only
// "lock: connect: nats: Authorization Violation", as for a wrong password.
func TestServeWithoutNATSCredentialsSaysSo(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, func(c *embedded.Config) { c.AllowAnonymous = false })
	err := run(context.Background(), []string{"serve", "--log-level", "error", "--services", "lock", "--nats-url", srv.ClientURL()})
	if err == nil || !strings.Contains(err.Error(), "no credentials were given") || !strings.Contains(err.Error(), "--nats-user") {
		t.Fatalf("got %v, want an error saying no credentials were given", err)
	}
}

// TestJSONLogShowsDurationsAsText: a duration in the JSON log reads as in the text
// log ("retry_in":"250ms"): slog's JSON handler wrote nanoseconds, so the wait
// before NATS was dialed again read "retry_in":5000000000.
func TestJSONLogShowsDurationsAsText(t *testing.T) {
	t.Parallel()
	var out natstest.Buffer
	log, err := newLogger(&out, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("x", "retry_in", 250*time.Millisecond)
	if !strings.Contains(out.String(), `"retry_in":"250ms"`) {
		t.Errorf("log %q, want \"retry_in\":\"250ms\"", out.String())
	}
}

// TestLogLinesOfARequestNameItsTrace: the process logger gives a line logged with a
// request's context (a service's "request failed") the trace_id and span_id of its
// span; the lines named no trace, and an internal error could not be tied to the
// request's trace.
func TestLogLinesOfARequestNameItsTrace(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"json", "text"} {
		var out natstest.Buffer
		log, err := newLogger(&out, format, "info")
		if err != nil {
			t.Fatal(err)
		}
		sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{0xab, 1}, SpanID: trace.SpanID{0xcd, 2}, TraceFlags: trace.FlagsSampled})
		log.ErrorContext(trace.ContextWithSpanContext(context.Background(), sc), "request failed")
		for _, want := range []string{sc.TraceID().String(), sc.SpanID().String()} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%s log %q, want it to name %s", format, out.String(), want)
			}
		}
	}
}

// TestServeListeningLineNamesWhatItRuns: the "roster listening" line names the
// services the process runs, as "roster started" does. It repeated --services as
// given: empty (services="") for a --services= that runs all four, and LOCK,Registry
// for the lock and registry services.
func TestServeListeningLineNamesWhatItRuns(t *testing.T) {
	t.Parallel()
	for services, want := range map[string]string{"": "auth,registry,lock,messaging", "LOCK,Registry": "registry,lock"} {
		line := serveLogLine(t, "roster listening", "--services="+services)
		if line["services"] != want {
			t.Errorf("--services=%q: the listening line says services %q, want %q", services, line["services"], want)
		}
	}
}

// TestServeSuggestsTheNATSCLIWhereItWorks: serve suggests `nats micro ls` only where
// the policy lets the nats CLI, which has no connection key, connect and list the
// services: anonymous connections admitted, with a shared inbox and service discovery,
// as the development policy has. It suggested it under every policy: under
// deploy/roster/policy.yaml the command fails with "Authorization Violation", and
// with a user's credentials gets no answer (its inbox and $SRV.INFO are not permitted).
func TestServeSuggestsTheNATSCLIWhereItWorks(t *testing.T) {
	t.Parallel()
	hinted := func(msgs []string) bool {
		return slices.ContainsFunc(msgs, func(m string) bool { return strings.HasPrefix(m, "connect with: nats ") })
	}
	// "roster started" is logged after the suggestion would be.
	if _, msgs := serveLog(t, "roster started"); !hinted(msgs) {
		t.Errorf("development policy: no nats CLI suggestion in %q", msgs)
	}
	if _, msgs := serveLog(t, "roster started", "--policy", "../../deploy/roster/policy.yaml"); hinted(msgs) {
		t.Errorf("a policy admitting no anonymous connection: serve suggests the nats CLI, which it refuses: %q", msgs)
	}
}

// serveLogLine runs serve with JSON logs and the flags given (an embedded server on
// any free port), waits for the line whose message is msg, stops serve, and returns
// that line.
func serveLogLine(t *testing.T, msg string, flags ...string) map[string]any {
	t.Helper()
	line, _ := serveLog(t, msg, flags...)
	return line
}

// serveLog is serveLogLine, and returns as well every message logged up to the stop.
func serveLog(t *testing.T, msg string, flags ...string) (map[string]any, []string) {
	t.Helper()
	root := newRootCmd()
	var logs natstest.Buffer
	root.SetErr(&logs)
	root.SetArgs(append([]string{"serve", "--log-format", "json", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir()}, flags...))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	var line map[string]any
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		for l := range strings.Lines(logs.String()) {
			if json.Unmarshal([]byte(l), &line) == nil && line["msg"] == msg {
				return nil
			}
		}
		return fmt.Errorf("no %q line logged yet", msg)
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
	var msgs []string
	for l := range strings.Lines(logs.String()) {
		var m struct{ Msg string }
		if json.Unmarshal([]byte(l), &m) == nil {
			msgs = append(msgs, m.Msg)
		}
	}
	return line, msgs
}
