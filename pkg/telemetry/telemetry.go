// Package telemetry sets up OpenTelemetry tracing and metrics for a Roster process.
//
// Setup exports spans over OTLP/gRPC when the standard OTEL_* variables ask for it —
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT set, or
// OTEL_TRACES_EXPORTER=otlp — and leaves the exporter to read the endpoint (the
// per-signal variable first) and the others (headers, TLS, timeout,
// OTEL_TRACES_SAMPLER, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES …) as the SDK
// does. OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none turn it off whatever
// else is set: the Go SDK reads neither, so Roster does. An endpoint variable whose
// value is not an http://, https:// or unix:// URL, which the exporter would skip
// silently or send to over TLS (host:port, unless OTEL_EXPORTER_OTLP_INSECURE is
// true), is refused as an unsupported setting is. Otherwise it installs no exporter, and spans cost next to
// nothing: trace context is still propagated, so a trace started by a client
// continues through Roster to the receivers of its messages.
package telemetry

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Enabled reports whether the environment asks for spans to be exported.
func Enabled() bool { return traces.enabled() }

// signal names the variables of one OTel signal (traces, metrics).
type signal struct {
	exporter string // OTEL_TRACES_EXPORTER
	endpoint string // OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
	protocol string // OTEL_EXPORTER_OTLP_TRACES_PROTOCOL
	insecure string // OTEL_EXPORTER_OTLP_TRACES_INSECURE
}

var (
	traces = signal{"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
		"OTEL_EXPORTER_OTLP_TRACES_INSECURE"}
	metrics = signal{"OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
		"OTEL_EXPORTER_OTLP_METRICS_INSECURE"}
)

// enabled reports whether the environment asks for the signal to be exported.
func (sig signal) enabled() bool {
	if strings.EqualFold(env("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	switch exporter := strings.ToLower(env(sig.exporter)); exporter {
	case "none":
		return false
	case "":
		// Off unless an endpoint is named: the specification's default (otlp to
		// localhost) would have every process without a collector log export
		// failures.
		return env("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || env(sig.endpoint) != ""
	default:
		return true // otlp, or one check refuses
	}
}

// check refuses settings of an enabled signal this build cannot honour (another
// exporter than otlp, a protocol other than grpc): the data would otherwise go
// nowhere while the operator expects it.
func (sig signal) check() error {
	if exporter := strings.ToLower(env(sig.exporter)); exporter != "" && exporter != "otlp" {
		return fmt.Errorf("telemetry: %s=%s: only otlp (over grpc) and none are supported", sig.exporter, exporter)
	}
	protocol, from := env(sig.protocol), sig.protocol
	if protocol == "" {
		protocol, from = env("OTEL_EXPORTER_OTLP_PROTOCOL"), "OTEL_EXPORTER_OTLP_PROTOCOL"
	}
	if protocol != "" && protocol != "grpc" {
		return fmt.Errorf("telemetry: %s=%s: only grpc is supported", from, protocol)
	}
	_, _, err := sig.collector()
	return err
}

// defaultCollector is the OTLP/gRPC exporters' endpoint when no variable names one.
const defaultCollector = "localhost:4317"

// collector returns the endpoint the signal's exporter sends to and the variable it
// comes from ("" for the default), read as the exporter reads them: the per-signal
// variable, else OTEL_EXPORTER_OTLP_ENDPOINT, else localhost:4317, each trimmed. The
// exporter skips a value that does not parse as a URL, without an error, for the
// next one (127.0.0.1:4317, without a scheme, sent to localhost:4317); and it reads
// host:port with a name for a host (otel-collector:4317, localhost:4317) as a URL
// whose scheme is the name, and sends to it over TLS, which a plaintext collector
// refuses at the handshake — unless OTEL_EXPORTER_OTLP_INSECURE (or the signal's
// own) is true, the setting the specification gives for an endpoint without a
// scheme: then it sends to host:port in plaintext, as meant. Here the others are
// errors naming the variable: an endpoint is an http:// or https:// URL with a host
// (or a unix:// socket path), or host:port with insecure true, so that what Roster
// says of the collector is where, and how, the exporter sends.
func (sig signal) collector() (endpoint, from string, err error) {
	for _, k := range []string{sig.endpoint, "OTEL_EXPORTER_OTLP_ENDPOINT"} {
		v := env(k)
		if v == "" {
			continue
		}
		if !endpointURL(v) && !(hostPort(v) && sig.insecureSet()) {
			return "", k, fmt.Errorf("telemetry: %s=%s is not an endpoint URL: %s", k, v, sig.advice(v))
		}
		return v, k, nil
	}
	return defaultCollector, "", nil
}

// advice says what to give instead of the refused endpoint v: that endpoint with
// http:// where it is address or name and port, and for name:port (hostPort) the
// insecure variable the exporter reads (the signal's own when set) as true. Not for
// address:port (127.0.0.1:4317): the exporter cannot parse it, insecure or not.
func (sig signal) advice(v string) string {
	want := "want http://host:port (https:// for TLS)"
	if !strings.Contains(v, "://") && endpointURL("http://"+v) {
		want = "want http://" + v + " (https:// for TLS)"
	}
	if hostPort(v) {
		insecure := "OTEL_EXPORTER_OTLP_INSECURE"
		if env(sig.insecure) != "" {
			insecure = sig.insecure
		}
		want += ", or " + insecure + "=true"
	}
	return want
}

// insecureSet reports whether the exporter is told to send without TLS: the
// signal's own variable when set, else OTEL_EXPORTER_OTLP_INSECURE, true in any
// case, as the exporter reads them (it applies the signal's after the general one).
func (sig signal) insecureSet() bool {
	v := env(sig.insecure)
	if v == "" {
		v = env("OTEL_EXPORTER_OTLP_INSECURE")
	}
	return strings.EqualFold(v, "true")
}

// hostPort reports whether v is host:port without a scheme, with a name for the
// host, which url.Parse reads as the scheme host and the opaque part port; the
// exporter then sends to v itself.
func hostPort(v string) bool {
	u, err := url.Parse(v)
	if err != nil || u.Opaque == "" {
		return false
	}
	_, err = strconv.ParseUint(u.Opaque, 10, 16)
	return err == nil
}

// endpointURL reports whether v is an OTLP/gRPC endpoint the exporter reads as
// meant: http:// or https:// and a host, or unix:// and a path.
func endpointURL(v string) bool {
	u, err := url.Parse(v)
	if err != nil {
		return false
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
		return u.Host != ""
	case "unix":
		return u.Path != ""
	}
	return false
}

// TracesCollector describes where spans are exported to, for messages: the endpoint
// and the variable that names it, or the default.
func TracesCollector() string { return traces.describe() }

// TracesExport and MetricsExport describe, for a process's log at start, where its
// spans and metrics go: "off", or the collector as TracesCollector names it.
func TracesExport() string  { return traces.export() }
func MetricsExport() string { return metrics.export() }

func (sig signal) export() string {
	if !sig.enabled() {
		return "off"
	}
	return sig.describe()
}

func (sig signal) describe() string {
	endpoint, from, err := sig.collector()
	switch {
	case err != nil:
		return from + " (not an endpoint URL)"
	case from == "":
		return endpoint + " (the default)"
	}
	return endpoint + " (" + from + ")"
}

func env(key string) string { return strings.TrimSpace(os.Getenv(key)) }

// Setup returns the tracer provider for a process named service at version, and a
// shutdown function that flushes pending spans. Settings this build cannot honour
// are errors (signal.check).
func Setup(ctx context.Context, service, version string) (trace.TracerProvider, func(context.Context) error, error) {
	if !traces.enabled() {
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	}
	if err := traces.check(); err != nil {
		return nil, nil, err
	}
	exp, err := otlptracegrpc.New(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("telemetry: otlp exporter: %w", err)
	}
	// The sampler is the SDK's: parent-based (a span follows the sampling decision
	// its caller propagated), always on for a root, unless OTEL_TRACES_SAMPLER says
	// otherwise.
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(Resource(service, version)),
	)
	return tp, tp.Shutdown, nil
}

// instanceID names this process in its resource (service.instance.id): one per
// process, for its spans and its metrics alike.
var instanceID = newUUID()

// newUUID returns a random (version 4) UUID, the form OTel's conventions give for
// service.instance.id.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Resource describes a Roster process to tracing and metrics back ends:
// service.name is service unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES
// names it otherwise, and service.instance.id is a random UUID of the process
// unless OTEL_RESOURCE_ATTRIBUTES names one. Without an instance id the instances
// of a deployment exported identical resources, and a back end took their metrics
// for one series: each instance's cumulative counters overwrote the others'.
func Resource(service, version string) *resource.Resource {
	own := resource.NewSchemaless(
		attribute.String("service.name", service),
		attribute.String("service.version", version),
		attribute.String("service.instance.id", instanceID),
	)
	r, err := resource.Merge(resource.Default(), own)
	if err != nil && !errors.Is(err, resource.ErrSchemaURLConflict) {
		return own
	}
	// resource.Default read the variables too, but its service.name (taken from
	// them, or unknown_service) gave way to ours above.
	if fromEnv := resource.Environment(); fromEnv.Len() > 0 {
		if merged, err := resource.Merge(r, fromEnv); err == nil || errors.Is(err, resource.ErrSchemaURLConflict) {
			r = merged
		}
	}
	return r
}
