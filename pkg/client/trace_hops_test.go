package client_test

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestServiceToServiceCallsHaveClientSpans: the registry's call to the auth
// service (an open with credentials) is a client span of the registry, under its
// server span and over the auth service's server span, with the attributes of
// OTel's RPC conventions the SDK's client spans have and the outcome of the call:
// an outgoing call is a client span, and trace back ends draw the edge between two
// services from such a pair. Before, the auth server span hung straight under the
// registry's server span, and the call's own duration and outcome were nowhere.
func TestServiceToServiceCallsHaveClientSpans(t *testing.T) {
	tr := newTracing(t)
	p := startTraced(t, tr)
	c := connect(t, p.ClientURL(), client.WithTracerProvider(tr.tp))
	for _, tc := range []struct {
		name     string
		password string
		code     wire.Code // "" for ok
	}{
		{"admitted", "wonderland", ""},
		{"refused", "not-the-password", wire.CodeUnauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			root := tr.root(tc.name, func(ctx context.Context) {
				var s *client.Session
				if s, err = c.Open(ctx, client.Options{Credentials: client.Password("alice", tc.password)}); err == nil {
					closeSession(t, s)
				}
			})
			if tc.code == "" && err != nil || tc.code != "" && !errors.Is(err, &wire.Error{Code: tc.code}) {
				t.Fatalf("open: got %v, want %q", err, tc.code)
			}
			srv := tr.wantCall(t, root, root.SpanID(), wire.SubjectSessionOpen)
			authSrv := tr.find(t, root, "auth server span", func(s sdktrace.ReadOnlySpan) bool {
				return s.SpanKind() == trace.SpanKindServer && s.Name() == wire.SubjectAuthenticate
			})
			var call sdktrace.ReadOnlySpan
			for _, s := range tr.rec.Ended() {
				if s.SpanContext().SpanID() == authSrv.Parent().SpanID() {
					call = s
				}
			}
			if call == nil || call.SpanKind() != trace.SpanKindClient || call.Name() != wire.SubjectAuthenticate ||
				call.Parent().SpanID() != srv.SpanContext().SpanID() {
				what := "no ended span"
				if call != nil {
					what = call.SpanKind().String() + " span " + call.Name()
				}
				t.Fatalf("the auth server span's parent is %s (%s); want the registry's client span %s under its server span %s",
					authSrv.Parent().SpanID(), what, wire.SubjectAuthenticate, srv.SpanContext().SpanID())
			}
			want := map[string]string{"rpc.system.name": "nats", "rpc.method": wire.SubjectAuthenticate, "rpc.response.status_code": "ok"}
			if tc.code != "" {
				want["rpc.response.status_code"] = string(tc.code)
			}
			for k, v := range want {
				if got := attr(call, k); got != v {
					t.Errorf("client span: %s %q, want %q", k, got, v)
				}
			}
			if tc.code == "" {
				if call.Status().Code != codes.Unset || attr(call, "error.type") != "" {
					t.Errorf("client span of an admitted open: status %v, error.type %q; want neither", call.Status(), attr(call, "error.type"))
				}
				return
			}
			// A client span records a failed call as the SDK's do: an error status.
			wantSpanError(t, "client span", call, tc.code, codes.Error)
		})
	}
}
