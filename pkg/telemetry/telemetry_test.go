package telemetry_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"

	"github.com/seed-3c836eab/roster/pkg/telemetry"
)

// otelVars are every variable Setup reads, cleared for each case.
var otelVars = []string{
	"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER",
	"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
	"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
	"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
	"OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
	"OTEL_EXPORTER_OTLP_INSECURE", "OTEL_EXPORTER_OTLP_TRACES_INSECURE", "OTEL_EXPORTER_OTLP_METRICS_INSECURE",
}

func setEnv(t *testing.T, env map[string]string) {
	t.Helper()
	for _, k := range otelVars {
		t.Setenv(k, env[k])
	}
}

// An endpoint no collector listens on: nothing is exported in these tests, the
// exporter only has to be built.
const endpoint = "http://127.0.0.1:1"

func TestSetupFollowsTheStandardVariables(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		enabled bool
		wantErr bool
	}{
		{name: "nothing set: off", env: nil},
		{name: "endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, enabled: true},
		{name: "traces endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint}, enabled: true},
		{name: "exporter otlp, default endpoint", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, enabled: true},
		{name: "exporter none wins over an endpoint", env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}},
		{name: "SDK disabled wins over an endpoint", env: map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}},
		{name: "SDK disabled false", env: map[string]string{"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, enabled: true},
		{name: "grpc protocol", env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, enabled: true},
		{name: "http protocol is not built in", env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, wantErr: true},
		{name: "traces protocol overrides", env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, enabled: true},
		{name: "another exporter", env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, wantErr: true},
		{name: "a protocol without an exporter is nothing", env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}},
		// The exporter would skip these silently, for the next variable or its default.
		{name: "endpoint without a scheme", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "127.0.0.1:4317"}, wantErr: true},
		{name: "traces endpoint not a URL", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://[::1", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, wantErr: true},
		// These parse as URLs whose scheme is the host name (otel-collector, port
		// as the opaque part): the exporter sent to host:port over TLS, which a
		// plaintext collector refuses at the handshake, reported only as failed
		// exports a minute later.
		{name: "host:port without a scheme", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "otel-collector.observability:4317"}, wantErr: true},
		{name: "localhost:port without a scheme", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "localhost:4317"}, wantErr: true},
		{name: "a scheme other than http or https", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "grpc://collector:4317"}, wantErr: true},
		{name: "https", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://127.0.0.1:1"}, enabled: true},
		{name: "unix socket", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "unix:///tmp/no-collector.sock"}, enabled: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			setEnv(t, tc.env)
			tp, shutdown, err := telemetry.Setup(context.Background(), "roster", "1.0.0")
			if tc.wantErr {
				if err == nil {
					_ = shutdown(context.Background())
					t.Fatal("got no error, want the unsupported setting refused")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := shutdown(context.Background()); err != nil {
					t.Errorf("shutdown: %v", err)
				}
			}()
			// Not ended: nothing is exported, and shutdown does not wait for the
			// collector that is not there.
			_, span := tp.Tracer("test").Start(context.Background(), "op")
			if got := span.IsRecording(); got != tc.enabled {
				t.Fatalf("a root span records: got %v, want %v", got, tc.enabled)
			}
		})
	}
}

// TestSamplingIsParentBased: by default a span follows its parent's sampling
// decision, and OTEL_TRACES_SAMPLER changes the sampler.
func TestSamplingIsParentBased(t *testing.T) {
	remote := func(flags trace.TraceFlags) context.Context {
		return trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, TraceFlags: flags, Remote: true,
		}))
	}
	tests := []struct {
		name               string
		sampler            string
		sampled, unsampled bool
	}{
		{"default", "", true, false},
		{"always on", "always_on", true, true},
		{"parent-based off", "parentbased_always_off", true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			setEnv(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_TRACES_SAMPLER": tc.sampler})
			tp, shutdown, err := telemetry.Setup(context.Background(), "roster", "1.0.0")
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = shutdown(context.Background()) }()
			// Not ended, as above.
			_, s1 := tp.Tracer("test").Start(remote(trace.FlagsSampled), "sampled parent")
			_, s2 := tp.Tracer("test").Start(remote(0), "unsampled parent")
			if s1.SpanContext().IsSampled() != tc.sampled || s2.SpanContext().IsSampled() != tc.unsampled {
				t.Fatalf("under a sampled parent: sampled %v, want %v; under an unsampled one: %v, want %v",
					s1.SpanContext().IsSampled(), tc.sampled, s2.SpanContext().IsSampled(), tc.unsampled)
			}
		})
	}
}

// TestResourceNamesTheService: the process is named roster unless OTEL_SERVICE_NAME
// (or service.name in OTEL_RESOURCE_ATTRIBUTES) names it otherwise.
func TestResourceNamesTheService(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"default", nil, "roster"},
		{"OTEL_SERVICE_NAME", map[string]string{"OTEL_SERVICE_NAME": "roster-eu"}, "roster-eu"},
		{"OTEL_RESOURCE_ATTRIBUTES", map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "service.name=roster-us,deployment.environment=prod"}, "roster-us"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			setEnv(t, tc.env)
			r := telemetry.Resource("roster", "1.0.0")
			got, _ := r.Set().Value(attribute.Key("service.name"))
			if got.AsString() != tc.want {
				t.Fatalf("service.name: got %q, want %q", got.AsString(), tc.want)
			}
			if v, _ := r.Set().Value(attribute.Key("service.version")); v.AsString() != "1.0.0" {
				t.Errorf("service.version: got %q, want 1.0.0", v.AsString())
			}
		})
	}
}

func TestSetupMetricsFollowsTheStandardVariables(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		enabled bool
		wantErr bool
	}{
		{name: "nothing set: off", env: nil},
		{name: "endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, enabled: true},
		{name: "metrics endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": endpoint}, enabled: true},
		{name: "a traces endpoint is not for metrics", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint}},
		{name: "exporter otlp", env: map[string]string{"OTEL_METRICS_EXPORTER": "otlp"}, enabled: true},
		{name: "exporter none wins over an endpoint", env: map[string]string{"OTEL_METRICS_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}},
		{name: "traces off, metrics on", env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, enabled: true},
		{name: "SDK disabled wins over an endpoint", env: map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}},
		{name: "another exporter", env: map[string]string{"OTEL_METRICS_EXPORTER": "prometheus"}, wantErr: true},
		{name: "http protocol is not built in", env: map[string]string{"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, wantErr: true},
		{name: "metrics endpoint not a URL", env: map[string]string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "127.0.0.1:4317", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, wantErr: true},
		{name: "metrics endpoint host:port without a scheme", env: map[string]string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "otel-collector:4317"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			setEnv(t, tc.env)
			mp, shutdown, err := telemetry.SetupMetrics(context.Background(), "roster", "1.0.0")
			if tc.wantErr {
				if err == nil {
					_ = shutdown(context.Background())
					t.Fatal("got no error, want the unsupported setting refused")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c, err := mp.Meter("test").Int64Counter("c")
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Enabled(context.Background()); got != tc.enabled {
				t.Fatalf("a counter records: got %v, want %v", got, tc.enabled)
			}
			// Shutdown exports once more, to the collector that is not there: give
			// it no time.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_ = shutdown(ctx)
		})
	}
}

// traceCollector is an OTLP/gRPC trace receiver counting the spans it is sent.
type traceCollector struct {
	coltracepb.UnimplementedTraceServiceServer
	spans atomic.Int64
	url   string
}

func (c *traceCollector) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			c.spans.Add(int64(len(ss.GetSpans())))
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func startTraceCollector(t *testing.T) *traceCollector {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &traceCollector{url: "http://" + l.Addr().String()}
	gs := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(gs, c)
	go func() { _ = gs.Serve(l) }()
	t.Cleanup(gs.Stop)
	return c
}

// TestTracesCollectorIsWhereTheExporterSends: TracesCollector, which Roster's
// messages name, reads the endpoint variables as the exporter does — the
// per-signal one first, a blank one as unset — checked against where a real
// exporter's spans arrive.
func TestTracesCollectorIsWhereTheExporterSends(t *testing.T) {
	a, b := startTraceCollector(t), startTraceCollector(t)
	tests := []struct {
		name string
		env  map[string]string
		want *traceCollector
		from string
	}{
		{"traces endpoint first", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": a.url, "OTEL_EXPORTER_OTLP_ENDPOINT": b.url}, a, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"},
		{"blank traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "  ", "OTEL_EXPORTER_OTLP_ENDPOINT": b.url}, b, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{"endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": " " + a.url + " "}, a, "OTEL_EXPORTER_OTLP_ENDPOINT"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			setEnv(t, tc.env)
			before := map[*traceCollector]int64{a: a.spans.Load(), b: b.spans.Load()}
			exportOneSpan(t)
			for _, c := range []*traceCollector{a, b} {
				got := c.spans.Load() - before[c]
				if want := map[bool]int64{true: 1, false: 0}[c == tc.want]; got != want {
					t.Errorf("collector %s got %d spans, want %d", c.url, got, want)
				}
			}
			if got := telemetry.TracesCollector(); !strings.Contains(got, tc.want.url) || !strings.Contains(got, "("+tc.from+")") {
				t.Errorf("TracesCollector() = %q, want %s named by %s", got, tc.want.url, tc.from)
			}
		})
	}
}

// TestHostPortWithInsecureIsExported: an endpoint without a scheme, host:port, is
// sent to over TLS, which a plaintext collector refuses, unless
// OTEL_EXPORTER_OTLP_INSECURE (or the signal's own) says true: the specification
// gives that variable for exactly this case, and the exporter then sends in
// plaintext to host:port. Refusing every host:port refused that working setting
// too, and a process configured so stopped starting.
func TestHostPortWithInsecureIsExported(t *testing.T) {
	c := startTraceCollector(t)
	port := c.url[strings.LastIndex(c.url, ":")+1:]
	for _, tc := range []struct {
		name string
		env  map[string]string
	}{
		{"insecure", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:" + port, "OTEL_EXPORTER_OTLP_INSECURE": "true"}},
		{"traces insecure", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "localhost:" + port, "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "TRUE"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setEnv(t, tc.env)
			before := c.spans.Load()
			exportOneSpan(t)
			if got := c.spans.Load() - before; got != 1 {
				t.Errorf("the collector got %d spans, want 1", got)
			}
		})
	}
	// The signal's own variable wins: false there is TLS again, which is refused.
	setEnv(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:" + port,
		"OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "false"})
	if _, shutdown, err := telemetry.Setup(context.Background(), "roster", "1.0.0"); err == nil {
		_ = shutdown(context.Background())
		t.Error("host:port with OTEL_EXPORTER_OTLP_TRACES_INSECURE=false: got no error, want it refused (sent over TLS)")
	}
}

// TestRefusedEndpointSaysWhatWorks: the error refusing an endpoint advises a setting
// that is accepted, and none that is already made. An address and port without a
// scheme (127.0.0.1:4317), which the exporter cannot parse at all, was told "or
// host:port with OTEL_EXPORTER_OTLP_INSECURE=true" also when that variable was true,
// and refused again when it was set; and a name:port refused because the signal's own
// OTEL_EXPORTER_OTLP_TRACES_INSECURE=false overrides the general one was told to set
// the general one, which it had.
func TestRefusedEndpointSaysWhatWorks(t *testing.T) {
	for _, tc := range []struct {
		name   string
		env    map[string]string
		advice string            // in the error
		fix    map[string]string // the advice followed
	}{
		{"address:port", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "127.0.0.1:4317"},
			"http://127.0.0.1:4317", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}},
		{"address:port, insecure", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "127.0.0.1:4317", "OTEL_EXPORTER_OTLP_INSECURE": "true"},
			"http://127.0.0.1:4317", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_INSECURE": "true"}},
		{"name:port", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4317"},
			"OTEL_EXPORTER_OTLP_INSECURE=true", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4317", "OTEL_EXPORTER_OTLP_INSECURE": "true"}},
		{"name:port, the signal's insecure false", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4317",
			"OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "false"},
			"OTEL_EXPORTER_OTLP_TRACES_INSECURE=true", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4317",
				"OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "true"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setEnv(t, tc.env)
			_, shutdown, err := telemetry.Setup(context.Background(), "roster", "1.0.0")
			if err == nil {
				_ = shutdown(context.Background())
				t.Fatal("got no error, want the endpoint refused")
			}
			if !strings.Contains(err.Error(), tc.advice) {
				t.Errorf("got %q, want it to advise %s", err, tc.advice)
			}
			for k, v := range tc.env {
				if strings.HasSuffix(k, "_INSECURE") && strings.EqualFold(v, "true") && strings.Contains(err.Error(), k+"=true") {
					t.Errorf("got %q, which advises %s=true, already set", err, k)
				}
			}
			setEnv(t, tc.fix)
			_, shutdown, err = telemetry.Setup(context.Background(), "roster", "1.0.0")
			if err != nil {
				t.Fatalf("the advice followed (%v): %v", tc.fix, err)
			}
			_ = shutdown(context.Background())
		})
	}
}

// exportOneSpan sets telemetry up from the environment, ends one span and shuts
// down, which exports it.
func exportOneSpan(t *testing.T) {
	t.Helper()
	tp, shutdown, err := telemetry.Setup(context.Background(), "roster", "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	_, span := tp.Tracer("test").Start(context.Background(), "op")
	span.End()
	if err := shutdown(context.Background()); err != nil {
		t.Fatalf("shutdown (export): %v", err)
	}
}

// TestResourceNamesTheInstance: the resource of each process has a
// service.instance.id of its own, the same for its spans and its metrics, unless
// OTEL_RESOURCE_ATTRIBUTES names one. Without it the instances of a deployment
// exported identical resources: their metrics were one series to a back end, each
// instance's cumulative counters overwriting the others', so that neither the sum
// of roster.sessions.closed nor the max of roster.locks.held could be taken.
func TestResourceNamesTheInstance(t *testing.T) {
	if os.Getenv("TELEMETRY_PRINT_INSTANCE") == "1" {
		fmt.Println(instanceID(t, telemetry.Resource("roster", "1.0.0")))
		return
	}
	setEnv(t, nil)
	id := instanceID(t, telemetry.Resource("roster", "1.0.0"))
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(id) {
		t.Fatalf("service.instance.id %q: want a random UUID", id)
	}
	if again := instanceID(t, telemetry.Resource("roster", "1.0.0")); again != id {
		t.Errorf("service.instance.id %q, then %q: want one per process, for its spans and metrics alike", id, again)
	}
	// Another process has another.
	cmd := exec.Command(os.Args[0], "-test.run=^TestResourceNamesTheInstance$")
	cmd.Env = append(os.Environ(), "TELEMETRY_PRINT_INSTANCE=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("second process: %v", err)
	}
	if other, _, _ := strings.Cut(string(out), "\n"); other == id || other == "" {
		t.Errorf("two processes: service.instance.id %q and %q, want two", id, other)
	}
	setEnv(t, map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=node-1"})
	if got := instanceID(t, telemetry.Resource("roster", "1.0.0")); got != "node-1" {
		t.Errorf("with OTEL_RESOURCE_ATTRIBUTES: service.instance.id %q, want node-1", got)
	}
}

func instanceID(t *testing.T, r *resource.Resource) string {
	t.Helper()
	v, ok := r.Set().Value(attribute.Key("service.instance.id"))
	if !ok {
		t.Fatalf("the resource has no service.instance.id: %v", r.Attributes())
	}
	return v.AsString()
}
