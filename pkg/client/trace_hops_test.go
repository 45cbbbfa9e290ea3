package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

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

// TestFollowEventsKeepsTheCallersTraceBounded: FollowEvents reads page after page
// for as long as it runs — a read every 30 s when nothing happens, for days in
// roster session events --follow. The first read is in the caller's trace; every
// later one is a trace of its own, which links the caller's span, so that the
// caller's trace stays as large as one read however long the follow runs. Before,
// every read was a client span in the caller's trace (with the registry's server
// span and the held read's answer), three spans every 30 s without end, under a
// span that ends only when the follow does.
func TestFollowEventsKeepsTheCallersTraceBounded(t *testing.T) {
	tr := newTracing(t)
	p := startTraced(t, tr)
	s := tr.open(t, p.ClientURL(), client.Options{Credentials: client.Password("alice", "wonderland")})
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	got := make(chan wire.StoredSessionEvent, 16)
	done := make(chan error, 1)
	root := tr.root("follow", func(rctx context.Context) {
		go func() {
			// The caller's values (its span), with the test's end.
			fctx := trace.ContextWithSpan(ctx, trace.SpanFromContext(rctx))
			done <- s.FollowEvents(fctx, wire.SessionEventsRequest{SessionID: s.ID()},
				func(ev wire.StoredSessionEvent) error { got <- ev; return nil })
		}()
	})
	// The opened event comes with the first read; each update with a later one.
	const updates = 3
	seen := 0
	for seen < 1+updates {
		select {
		case <-got:
			seen++
			if seen < 1+updates {
				if err := s.SetProperties(ctx, map[string]string{"Floor": fmt.Sprint(seen)}); err != nil {
					t.Fatal(err)
				}
			}
		case err := <-done:
			t.Fatalf("FollowEvents ended: %v", err)
		case <-ctx.Done():
			t.Fatalf("%d of %d events followed", seen, 1+updates)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("FollowEvents after cancel: got %v, want context.Canceled", err)
	}
	var inRoot, linked int
	for _, sp := range tr.rec.Ended() {
		if sp.SpanKind() != trace.SpanKindClient || sp.Name() != wire.SubjectSessionEvents {
			continue
		}
		if sp.SpanContext().TraceID() == root.TraceID() {
			inRoot++
			continue
		}
		if sp.Parent().IsValid() || len(sp.Links()) != 1 || sp.Links()[0].SpanContext.SpanID() != root.SpanID() {
			t.Errorf("a later read's client span: parent %s, links %v; want a root linking the caller's span %s",
				sp.Parent().SpanID(), sp.Links(), root.SpanID())
			continue
		}
		linked++
		if sp.Status().Code == codes.Error {
			continue // the read the cancel ended, maybe before it was sent
		}
		// An answered read's trace is whole: the registry's server span under its
		// client span.
		tr.find(t, sp.SpanContext(), "server span of a later read", func(srv sdktrace.ReadOnlySpan) bool {
			return srv.SpanKind() == trace.SpanKindServer && srv.Parent().SpanID() == sp.SpanContext().SpanID()
		})
	}
	if inRoot != 1 || linked < updates {
		t.Fatalf("reads: %d in the caller's trace, %d in traces of their own; want 1 and at least %d", inRoot, linked, updates)
	}
}

// TestReissuedAcquireStaysInTheWaitersTrace: a Lock that waits past the bound on one
// request re-issues its acquire, in the caller's trace; the answer that grants it
// is a span of that trace, under the server span of the re-issue that holds the
// waiter's reply subject.
func TestReissuedAcquireStaysInTheWaitersTrace(t *testing.T) {
	defer client.SetMaxHeldRequest(300 * time.Millisecond)()
	tr := newTracing(t)
	p := startTraced(t, tr)
	admin := client.Options{Credentials: client.Password("root", "toor")}
	holder := tr.open(t, p.ClientURL(), admin)
	waiter := tr.open(t, p.ClientURL(), admin)
	ctx := ctxT(t)
	if _, err := holder.Lock(ctx, "traced/re", client.LockOptions{}); err != nil {
		t.Fatal(err)
	}
	roots, errs := make(chan trace.SpanContext, 1), make(chan error, 1)
	go func() {
		roots <- tr.root("wait", func(ctx context.Context) {
			_, err := waiter.Lock(ctx, "traced/re", client.LockOptions{})
			errs <- err
		})
	}()
	// Re-issued at least twice, each a client span of the waiter's trace.
	acquires := func() (n int, root trace.SpanID) {
		for _, s := range tr.rec.Ended() {
			if s.SpanKind() == trace.SpanKindClient && s.Name() == wire.SubjectLockAcquire && attr(s, "rpc.response.status_code") == string(wire.CodeTimeout) {
				n++
				root = s.Parent().SpanID()
			}
		}
		return n, root
	}
	waitFor(t, func() error {
		if n, _ := acquires(); n < 2 {
			return fmt.Errorf("%d acquires ended unanswered, want 2", n)
		}
		return nil
	})
	if _, err := holder.Release(ctx, "traced/re", 0); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if err != nil {
			t.Fatalf("waiter: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter was not granted the lock")
	}
	root := <-roots
	if _, parent := acquires(); parent != root.SpanID() {
		t.Fatalf("re-issued acquires under %s, want the caller's span %s", parent, root.SpanID())
	}
	grant := tr.find(t, root, "answer to the re-issued acquire", func(s sdktrace.ReadOnlySpan) bool {
		return s.Name() == "lock.acquire reply" && attr(s, "roster.granted") == "true"
	})
	srv := tr.find(t, root, "server span of the grant", func(s sdktrace.ReadOnlySpan) bool {
		return s.SpanContext().SpanID() == grant.Parent().SpanID()
	})
	if srv.SpanKind() != trace.SpanKindServer || srv.Name() != wire.SubjectLockAcquire || attr(srv, "roster.reply_later") != "true" {
		t.Fatalf("the grant's parent: %s %s (reply_later %q), want a held acquire's server span", srv.SpanKind(), srv.Name(), attr(srv, "roster.reply_later"))
	}
}
