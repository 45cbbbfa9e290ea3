package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
	"github.com/seed-3c836eab/roster/services/auth"
)

// TestTraceFollowsTheOtherCalls: the calls TestTraceFollowsEveryCall leaves out —
// changes by filter, a gateway's open (on to the auth service), the policy — join
// the application's trace the same way.
func TestTraceFollowsTheOtherCalls(t *testing.T) {
	t.Parallel()
	tr := newTracing(t)
	p := startTraced(t, tr)
	admin := tr.open(t, p.ClientURL(), client.Options{Credentials: client.Password("root", "toor")})
	for range 2 {
		tr.open(t, p.ClientURL(), client.Options{Properties: map[string]string{"Team": "traced"}})
	}
	edge := connect(t, p.ClientURL(), client.WithCredentials(client.JWT(signJWT(t, "edge", "gateway"))), client.WithTracerProvider(tr.tp))
	tests := []struct {
		name    string
		subject string
		call    func(ctx context.Context) error
		auth    bool // the registry asks the auth service
	}{
		{"update by filter", wire.SubjectSessionUpdate, func(ctx context.Context) error {
			n, err := admin.UpdateSessions(ctx, wire.SessionUpdateRequest{Filter: `Team is "traced"`, Set: map[string]string{"Seen": "yes"}})
			if err == nil && n != 2 {
				err = fmt.Errorf("updated %d sessions, want 2", n)
			}
			return err
		}, false},
		{"gateway open", wire.SubjectSessionOpenGateway, func(ctx context.Context) error {
			s, err := edge.Open(ctx, client.Options{GatewayType: "web", GatewayID: "edge-1", Credentials: client.Password("alice", "wonderland")})
			if err == nil {
				closeSession(t, s)
			}
			return err
		}, true},
		{"policy get", wire.SubjectPolicyGet, func(ctx context.Context) error {
			_, _, err := admin.Policy(ctx)
			return err
		}, false},
		{"policy set", wire.SubjectPolicySet, func(ctx context.Context) error {
			pol, rev, err := admin.Policy(context.Background())
			if err != nil {
				return err
			}
			_, err = admin.SetPolicy(ctx, pol, rev)
			return err
		}, false},
		{"close by filter", wire.SubjectSessionClose, func(ctx context.Context) error {
			n, err := admin.CloseSessions(ctx, wire.SessionCloseRequest{Filter: `Team is "traced"`})
			if err == nil && n != 2 {
				err = fmt.Errorf("closed %d sessions, want 2", n)
			}
			return err
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			root := tr.root(tc.name, func(ctx context.Context) { err = tc.call(ctx) })
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			srv := tr.wantCall(t, root, root.SpanID(), tc.subject)
			if tc.auth {
				// The registry's client span, and under it the auth service's server span.
				tr.wantCall(t, root, srv.SpanContext().SpanID(), wire.SubjectAuthenticate)
			}
		})
	}
}

// TestLockGrantedByExpiryJoinsWaitersTrace: a waiter granted because the holder's
// session expired — no request frees the lock — is answered in its own trace,
// under its acquire's server span, from the traceparent it left in the record.
func TestLockGrantedByExpiryJoinsWaitersTrace(t *testing.T) {
	t.Parallel()
	tr := newTracing(t)
	p := startTraced(t, tr)
	admin := client.Options{Credentials: client.Password("root", "toor")}
	waiter := tr.open(t, p.ClientURL(), admin)
	ctx := ctxT(t)
	// No heartbeats: the session expires a second after its last call.
	holder, err := connect(t, p.ClientURL()).Open(ctx, client.Options{Credentials: client.Password("root", "toor"),
		Timeout: time.Second, HeartbeatInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Lock(ctx, "traced/expiry", client.LockOptions{}); err != nil {
		t.Fatal(err)
	}
	var lockErr error
	root := tr.root("wait", func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		_, lockErr = waiter.Lock(ctx, "traced/expiry", client.LockOptions{})
	})
	if lockErr != nil {
		t.Fatalf("waiter: %v", lockErr)
	}
	if _, err := waiter.GetSession(ctx, holder.ID()); !errors.Is(err, client.ErrSessionClosed) {
		t.Fatalf("holder after the grant: got %v, want ErrSessionClosed (expired)", err)
	}
	acq := tr.wantCall(t, root, root.SpanID(), wire.SubjectLockAcquire)
	grant := tr.find(t, root, "answer to the held acquire", func(s sdktrace.ReadOnlySpan) bool {
		return s.Name() == "lock.acquire reply" && s.Parent().SpanID() == acq.SpanContext().SpanID()
	})
	if got := attr(grant, "roster.granted"); got != "true" {
		t.Errorf("grant: roster.granted %q, want true", got)
	}
	if !acq.EndTime().Before(grant.StartTime()) && !acq.EndTime().Equal(grant.StartTime()) {
		t.Errorf("acquire's server span ended %v, after the answer began %v: want the request held", acq.EndTime(), grant.StartTime())
	}
}

// TestTraceReachesEveryDelivery: a send and a request by filter reach every
// matching receiver once each, each handler's span a consumer span of the
// sender's trace under the fan-out span.
func TestTraceReachesEveryDelivery(t *testing.T) {
	t.Parallel()
	tr := newTracing(t)
	p := startTraced(t, tr)
	sender := tr.open(t, p.ClientURL(), client.Options{Credentials: client.Password("root", "toor")})
	const receivers = 5
	handled := make(chan trace.SpanContext, 4*receivers)
	ids := map[string]bool{}
	for range receivers {
		r := tr.open(t, p.ClientURL(), client.Options{Properties: map[string]string{"Group": "every"}})
		ids[r.ID()] = true
		if _, err := r.Handle("*", func(ctx context.Context, m *client.Message) ([]byte, error) {
			handled <- trace.SpanFromContext(ctx).SpanContext()
			return nil, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, op := range []string{"send", "request"} {
		t.Run(op, func(t *testing.T) {
			var err error
			root := tr.root(op, func(ctx context.Context) {
				if op == "send" {
					_, err = sender.Send(ctx, client.ToFilter(`Group is "every"`), "fan/"+op, nil)
					return
				}
				_, err = sender.Request(ctx, client.ToFilter(`Group is "every"`), "fan/"+op, nil, 5*time.Second)
			})
			if err != nil {
				t.Fatal(err)
			}
			subject := map[string]string{"send": wire.SubjectMsgSend, "request": wire.SubjectMsgRequest}[op]
			srv := tr.wantCall(t, root, root.SpanID(), subject)
			fan := tr.find(t, root, "fan-out span", func(s sdktrace.ReadOnlySpan) bool {
				return s.Name() == "msg."+op+" fan-out" && s.Parent().SpanID() == srv.SpanContext().SpanID()
			})
			seen := map[string]bool{}
			for range receivers {
				var sc trace.SpanContext
				select {
				case sc = <-handled:
				case <-time.After(10 * time.Second):
					t.Fatalf("%d of %d handlers ran", len(seen), receivers)
				}
				if sc.TraceID() != root.TraceID() {
					t.Fatalf("a handler's context is in trace %s, want the sender's %s", sc.TraceID(), root.TraceID())
				}
				c := tr.find(t, root, "consumer span", func(s sdktrace.ReadOnlySpan) bool { return s.SpanContext().SpanID() == sc.SpanID() })
				if c.SpanKind() != trace.SpanKindConsumer || c.Parent().SpanID() != fan.SpanContext().SpanID() {
					t.Fatalf("handler's span %q (%s) has parent %s, want a consumer span under the fan-out %s", c.Name(), c.SpanKind(), c.Parent().SpanID(), fan.SpanContext().SpanID())
				}
				id := attr(c, "roster.session_id")
				if !ids[id] || seen[id] {
					t.Fatalf("consumer span of session %q: want each of the %d receivers once (seen %v)", id, receivers, seen)
				}
				seen[id] = true
			}
		})
	}
}

// TestSpansCarryNoSecrets runs sessions through every kind of credential, a wrong
// password, a change of principal, property changes and sends, requests, lists and
// closes by filters naming property values, and connections the auth callout
// admits and refuses: no span of the SDK or of any service carries a password, a
// bearer token, a session token or a property value, in its name, attributes,
// events or status.
func TestSpansCarryNoSecrets(t *testing.T) {
	tr := newTracing(t)
	p := startTraced(t, tr)
	const (
		wrongPassword = "not-the-password-3141"
		email         = "alice.private@example.com"
		salary        = "salary-value-271828"
	)
	bearer := signJWT(t, "root", "admin")
	secrets := map[string]string{
		"alice's password": "wonderland", "root's password": "toor", "a wrong password": wrongPassword,
		"a bearer token": bearer, "a property value": email, "a value set later": salary,
	}
	var err error
	tr.root("secrets", func(ctx context.Context) {
		// A connection the callout admits with a password, and one it refuses.
		c := connect(t, p.ClientURL(), client.WithCredentials(client.Password("alice", "wonderland")), client.WithTracerProvider(tr.tp))
		if bad, err := client.Connect(p.ClientURL(), client.WithCredentials(client.Password("alice", wrongPassword))); err == nil {
			_ = bad.Close(ctx)
			t.Error("a connection with a wrong password was admitted")
		}
		var alice, admin *client.Session
		if alice, err = c.Open(ctx, client.Options{Credentials: client.Password("alice", "wonderland"),
			Properties: map[string]string{"Email": email}}); err != nil {
			return
		}
		defer closeSession(t, alice)
		secrets["alice's session token"] = alice.Token()
		if _, err := c.Open(ctx, client.Options{Credentials: client.Password("alice", wrongPassword)}); !errors.Is(err, client.ErrUnauthenticated) {
			t.Errorf("open with a wrong password: got %v, want ErrUnauthenticated", err)
		}
		if admin, err = c.Open(ctx, client.Options{Credentials: client.JWT(bearer)}); err != nil {
			return
		}
		defer closeSession(t, admin)
		secrets["the admin's first token"] = admin.Token()
		if err = admin.ChangePrincipal(ctx, client.Password("root", "toor")); err != nil {
			return
		}
		secrets["the admin's second token"] = admin.Token()
		if _, err = alice.Handle("*", func(context.Context, *client.Message) ([]byte, error) { return nil, nil }); err != nil {
			return
		}
		byEmail := `Email is "` + email + `"`
		if _, err = admin.Send(ctx, client.ToFilter(byEmail), "hr/note", nil); err != nil {
			return
		}
		if _, err = admin.Request(ctx, client.ToFilter(`Email in ["`+email+`"]`), "hr/ask", nil, 5*time.Second); err != nil {
			return
		}
		if _, err = admin.ListSessions(ctx, wire.SessionListRequest{Filter: byEmail}); err != nil {
			return
		}
		if _, err = admin.UpdateSessions(ctx, wire.SessionUpdateRequest{Filter: byEmail, Set: map[string]string{"Salary": salary}}); err != nil {
			return
		}
		_, err = admin.CloseSessions(ctx, wire.SessionCloseRequest{Filter: `Salary is "` + salary + `"`})
	})
	if err != nil {
		t.Fatal(err)
	}
	// Every operation above is over once its call returned, but the services end
	// their spans after they answer: wait for the last, the close's server span.
	waitFor(t, func() error {
		for _, s := range tr.rec.Ended() {
			if s.SpanKind() == trace.SpanKindServer && s.Name() == wire.SubjectSessionClose {
				return nil
			}
		}
		return errors.New("no close server span yet")
	})
	spans := tr.rec.Ended()
	for _, s := range spans {
		var texts []string
		texts = append(texts, s.Name(), s.Status().Description)
		for _, kv := range s.Attributes() {
			texts = append(texts, kv.Value.String())
		}
		for _, ev := range s.Events() {
			texts = append(texts, ev.Name)
			for _, kv := range ev.Attributes {
				texts = append(texts, kv.Value.String())
			}
		}
		for _, text := range texts {
			for what, secret := range secrets {
				if strings.Contains(text, secret) {
					t.Errorf("span %q (%s) carries %s: %q", s.Name(), s.SpanKind(), what, text)
				}
			}
		}
	}
	t.Logf("checked %d spans", len(spans))
}

// TestCalloutIsTraced: NATS's auth callout, which no client's trace reaches (a
// CONNECT carries no headers), is a server span of its own, in a trace of its own:
// an admitted connection's without an error, a refused one's with the wire code.
func TestCalloutIsTraced(t *testing.T) {
	t.Parallel()
	tr := newTracing(t)
	p := startTraced(t, tr)
	connect(t, p.ClientURL(), client.WithCredentials(client.Password("alice", "wonderland")))
	if bad, err := client.Connect(p.ClientURL(), client.WithCredentials(client.Password("alice", "not-her-password"))); err == nil {
		_ = bad.Close(ctxT(t))
		t.Fatal("a connection with a wrong password was admitted")
	}
	var admitted, refused sdktrace.ReadOnlySpan
	waitFor(t, func() error {
		for _, s := range tr.rec.Ended() {
			if s.Name() != auth.CalloutSubject {
				continue
			}
			if attr(s, "error.type") == "" {
				admitted = s
			} else {
				refused = s
			}
		}
		if admitted == nil || refused == nil {
			return fmt.Errorf("callout spans: admitted %v, refused %v; want both", admitted != nil, refused != nil)
		}
		return nil
	})
	for _, s := range []sdktrace.ReadOnlySpan{admitted, refused} {
		if s.SpanKind() != trace.SpanKindServer || s.Parent().IsValid() {
			t.Errorf("callout span: kind %s, parent %v; want a root server span", s.SpanKind(), s.Parent().SpanID())
		}
		if got := attr(s, "rpc.method"); got != auth.CalloutSubject {
			t.Errorf("callout span: rpc.method %q, want %s", got, auth.CalloutSubject)
		}
	}
	if attr(admitted, "rpc.response.status_code") != "ok" || attr(refused, "rpc.response.status_code") != string(wire.CodeUnauthenticated) {
		t.Errorf("rpc.response.status_code: admitted %q, refused %q; want ok and unauthenticated",
			attr(admitted, "rpc.response.status_code"), attr(refused, "rpc.response.status_code"))
	}
	if admitted.Status().Code != codes.Unset {
		t.Errorf("admitted: status %v, want unset", admitted.Status())
	}
	// A refusal is the client's mistake, not the service's error (as for endpoints).
	wantSpanError(t, "refused", refused, wire.CodeUnauthenticated, codes.Unset)
}

// TestLockAnswerRecordsItsOutcome: the answer to a held acquire that ends it
// with a 5xx code — a connection-scoped waiter whose session lost its connection
// is answered unavailable — records the code and an error status, as the server
// span of a request answered so at once does (endpoint.SpanError).
func TestLockAnswerRecordsItsOutcome(t *testing.T) {
	t.Parallel()
	tr := newTracing(t)
	p := startTraced(t, tr)
	admin := client.Options{Credentials: client.Password("root", "toor")}
	holder := tr.open(t, p.ClientURL(), admin)
	ctx := ctxT(t)
	if _, err := holder.Lock(ctx, "traced/conn", client.LockOptions{}); err != nil {
		t.Fatal(err)
	}
	c := connect(t, p.ClientURL(), client.WithTracerProvider(tr.tp))
	waiter, err := c.Open(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	roots, errs := make(chan trace.SpanContext, 1), make(chan error, 1)
	go func() {
		roots <- tr.root("wait", func(ctx context.Context) {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, err := waiter.Lock(ctx, "traced/conn", client.LockOptions{Scope: wire.ScopeConnection})
			errs <- err
		})
	}()
	waitFor(t, func() error { return waiters(ctx, holder, "traced/conn", 1) })
	c.Conn().Close()
	if err := within(t, "lock wait", errs); err == nil {
		t.Fatal("the waiter got the lock after its connection closed")
	}
	root := <-roots
	acq := tr.find(t, root, "acquire server span", func(s sdktrace.ReadOnlySpan) bool {
		return s.SpanKind() == trace.SpanKindServer && s.Name() == wire.SubjectLockAcquire
	})
	answer := tr.find(t, root, "answer to the held acquire", func(s sdktrace.ReadOnlySpan) bool {
		return s.Name() == "lock.acquire reply" && s.Parent().SpanID() == acq.SpanContext().SpanID()
	})
	wantSpanError(t, "answer", answer, wire.CodeUnavailable, codes.Error)
}

// TestCallSpansFollowRPCConventions: the SDK's client span and the service's server
// span of one call carry OTel's RPC attributes with the same values — rpc.system.name
// nats, rpc.method the subject, rpc.response.status_code ok or the wire code — which
// the service's rpc.server.call.duration has too.
func TestCallSpansFollowRPCConventions(t *testing.T) {
	t.Parallel()
	tr := newTracing(t)
	p := startTraced(t, tr)
	guest := tr.open(t, p.ClientURL(), client.Options{})
	tests := []struct {
		name, subject, status string
		call                  func(ctx context.Context) error
	}{
		{"ok", wire.SubjectSessionKeepalive, "ok", func(ctx context.Context) error { return guest.Keepalive(ctx) }},
		{"refused", wire.SubjectLockAcquire, string(wire.CodeForbidden), func(ctx context.Context) error {
			_, err := guest.TryLock(ctx, "x", client.LockOptions{})
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := tr.root(tc.name, func(ctx context.Context) { _ = tc.call(ctx) })
			srv := tr.wantCall(t, root, root.SpanID(), tc.subject)
			cl := tr.find(t, root, "client span", func(s sdktrace.ReadOnlySpan) bool { return s.SpanKind() == trace.SpanKindClient })
			for _, s := range []sdktrace.ReadOnlySpan{cl, srv} {
				want := map[string]string{"rpc.system.name": "nats", "rpc.method": tc.subject, "rpc.response.status_code": tc.status}
				for k, v := range want {
					if got := attr(s, k); got != v {
						t.Errorf("%s span: %s %q, want %q", s.SpanKind(), k, got, v)
					}
				}
			}
		})
	}
}

// TestMessagingSpansFollowConventions: a fan-out is a producer span and a
// handler's span a consumer span under it, with OTel's messaging attributes —
// the system, the operation (send or request; process for the handler, whose name
// it starts), the path as the destination, the message id and, for the fan-out,
// how many sessions it is for.
func TestMessagingSpansFollowConventions(t *testing.T) {
	t.Parallel()
	tr := newTracing(t)
	p := startTraced(t, tr)
	sender := tr.open(t, p.ClientURL(), client.Options{Credentials: client.Password("root", "toor")})
	handled := make(chan trace.SpanContext, 4)
	for range 2 {
		r := tr.open(t, p.ClientURL(), client.Options{Properties: map[string]string{"Group": "conventions"}})
		if _, err := r.Handle("*", func(ctx context.Context, _ *client.Message) ([]byte, error) {
			handled <- trace.SpanFromContext(ctx).SpanContext()
			return nil, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, op := range []string{"send", "request"} {
		t.Run(op, func(t *testing.T) {
			path, id := "conv/"+op, "message-"+op
			var err error
			root := tr.root(op, func(ctx context.Context) {
				to := client.ToFilter(`Group is "conventions"`)
				if op == "send" {
					_, err = sender.Send(ctx, to, path, nil, client.MessageID(id))
					return
				}
				_, err = sender.Request(ctx, to, path, nil, 5*time.Second, client.MessageID(id))
			})
			if err != nil {
				t.Fatal(err)
			}
			fan := tr.find(t, root, "fan-out span", func(s sdktrace.ReadOnlySpan) bool { return s.Name() == "msg."+op+" fan-out" })
			want := func(s sdktrace.ReadOnlySpan, kind trace.SpanKind, attrs map[string]string) {
				t.Helper()
				if s.SpanKind() != kind {
					t.Errorf("span %q: kind %s, want %s", s.Name(), s.SpanKind(), kind)
				}
				for k, v := range attrs {
					if got := attr(s, k); got != v {
						t.Errorf("span %q: %s %q, want %q", s.Name(), k, got, v)
					}
				}
			}
			want(fan, trace.SpanKindProducer, map[string]string{
				"messaging.system": "nats", "messaging.operation.type": "send", "messaging.operation.name": op,
				"messaging.destination.name": path, "messaging.message.id": id, "messaging.batch.message_count": "2",
			})
			for range 2 {
				var sc trace.SpanContext
				select {
				case sc = <-handled:
				case <-time.After(10 * time.Second):
					t.Fatal("a handler did not run")
				}
				c := tr.find(t, root, "consumer span", func(s sdktrace.ReadOnlySpan) bool { return s.SpanContext().SpanID() == sc.SpanID() })
				if c.Name() != "process "+path || c.Parent().SpanID() != fan.SpanContext().SpanID() {
					t.Errorf("handler's span %q under %s, want %q under the fan-out %s", c.Name(), c.Parent().SpanID(), "process "+path, fan.SpanContext().SpanID())
				}
				want(c, trace.SpanKindConsumer, map[string]string{
					"messaging.system": "nats", "messaging.operation.type": "process", "messaging.operation.name": "process",
					"messaging.destination.name": path, "messaging.message.id": id,
				})
			}
		})
	}
}

// TestSessionEventsCarryTheChangesTrace: the event of a change carries the trace
// context of the request that made it, so that a reader of the events can join the
// change's trace.
func TestSessionEventsCarryTheChangesTrace(t *testing.T) {
	t.Parallel()
	tr := newTracing(t)
	p := startTraced(t, tr)
	admin := tr.open(t, p.ClientURL(), client.Options{Credentials: client.Password("root", "toor")})
	s := tr.open(t, p.ClientURL(), client.Options{})
	var err error
	root := tr.root("change", func(ctx context.Context) {
		_, err = admin.UpdateSessions(ctx, wire.SessionUpdateRequest{ID: s.ID(), Set: map[string]string{"Stage": "two"}})
	})
	if err != nil {
		t.Fatal(err)
	}
	var got *wire.StoredSessionEvent
	waitFor(t, func() error {
		resp, err := admin.Events(ctxT(t), wire.SessionEventsRequest{SessionID: s.ID(), Kinds: []wire.SessionEventKind{wire.EventUpdated}})
		if err != nil {
			return err
		}
		if len(resp.Events) != 1 {
			return fmt.Errorf("got %d updated events, want 1", len(resp.Events))
		}
		got = &resp.Events[0]
		return nil
	})
	if !strings.Contains(got.TraceParent, root.TraceID().String()) {
		t.Fatalf("the event's traceparent is %q, want one of trace %s", got.TraceParent, root.TraceID())
	}
}

// wantSpanError checks that span s recorded the wire code (roster.error.code and
// error.type) with the status code given.
func wantSpanError(t *testing.T, what string, s sdktrace.ReadOnlySpan, code wire.Code, status codes.Code) {
	t.Helper()
	if attr(s, "roster.error.code") != string(code) || attr(s, "error.type") != string(code) || s.Status().Code != status {
		t.Errorf("%s: attributes %v, status %v; want the code %s, status %v", what, s.Attributes(), s.Status(), code, status)
	}
}

// TestHeldEventReadAnswerJoinsReadersTrace: a read of session events that finds
// nothing is held and answered later — with the events a change stored, or with
// an error when the reading session closes meanwhile. That answer is a span of the
// reader's trace, under the read's server span (which ended when the read was
// held), with the wire code of an error, and linking the changes whose events it
// carries; before, the reader's trace ended with the server span, and an answer
// that failed was in no trace at all.
func TestHeldEventReadAnswerJoinsReadersTrace(t *testing.T) {
	tr := newTracing(t)
	p := startTraced(t, tr)
	admin := tr.open(t, p.ClientURL(), client.Options{Credentials: client.Password("root", "toor")})
	// hold reads s's events from after the last stored one, in a trace of its
	// own, waiting up to 10 s; it returns the read's trace once the read is held.
	hold := func(t *testing.T, reader, s *client.Session) (trace.SpanContext, chan error) {
		t.Helper()
		// From after s's opened event, once it is stored: the registry publishes it
		// after answering the open, and a read that began before it was stored
		// found it at once instead of being held (in CI at 18891fe: no held read's
		// server span).
		var first *wire.SessionEventsResponse
		natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			resp, err := reader.Events(ctxT(t), wire.SessionEventsRequest{SessionID: s.ID()})
			if err != nil {
				return err
			}
			for _, e := range resp.Events {
				if e.Event != nil && e.Event.Kind == wire.EventOpened {
					first = resp
					return nil
				}
			}
			return errors.New("the session's opened event is not stored yet")
		})
		ctx, span := tr.tp.Tracer("application").Start(context.Background(), "follow")
		errs := make(chan error, 1)
		go func() {
			defer span.End()
			ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			resp, err := reader.Events(ctx, wire.SessionEventsRequest{SessionID: s.ID(), StartSeq: first.NextSeq, WaitMS: 10000})
			if err == nil && len(resp.Events) == 0 {
				err = errors.New("the held read was answered with no events")
			}
			errs <- err
		}()
		root := span.SpanContext()
		// The read's server span ends when the read is held.
		tr.find(t, root, "held read's server span", func(s sdktrace.ReadOnlySpan) bool {
			return s.SpanKind() == trace.SpanKindServer && s.Name() == wire.SubjectSessionEvents && attr(s, "roster.reply_later") == "true"
		})
		return root, errs
	}
	answer := func(t *testing.T, root trace.SpanContext) sdktrace.ReadOnlySpan {
		t.Helper()
		srv := tr.find(t, root, "held read's server span", func(s sdktrace.ReadOnlySpan) bool {
			return s.SpanKind() == trace.SpanKindServer && s.Name() == wire.SubjectSessionEvents
		})
		return tr.find(t, root, "answer to the held read", func(s sdktrace.ReadOnlySpan) bool {
			return s.Name() == "session.events reply" && s.Parent().SpanID() == srv.SpanContext().SpanID()
		})
	}

	t.Run("answered with events", func(t *testing.T) {
		s := tr.open(t, p.ClientURL(), client.Options{})
		root, errs := hold(t, admin, s)
		var err error
		change := tr.root("change", func(ctx context.Context) {
			_, err = admin.UpdateSessions(ctx, wire.SessionUpdateRequest{ID: s.ID(), Set: map[string]string{"Stage": "two"}})
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := within(t, "held read", errs); err != nil {
			t.Fatalf("held read: %v", err)
		}
		a := answer(t, root)
		if a.Status().Code != codes.Unset || attr(a, "roster.events") != "1" {
			t.Errorf("answer: attributes %v, status %v; want roster.events 1, status unset", a.Attributes(), a.Status())
		}
		linked := false
		for _, l := range a.Links() {
			linked = linked || l.SpanContext.TraceID() == change.TraceID()
		}
		if !linked {
			t.Errorf("answer links %v, want the change's trace %s", a.Links(), change.TraceID())
		}
	})
	t.Run("answered with an error", func(t *testing.T) {
		// An operator's session reads another's events, and is closed meanwhile.
		reader := tr.open(t, p.ClientURL(), client.Options{Credentials: client.Password("root", "toor")})
		root, errs := hold(t, reader, tr.open(t, p.ClientURL(), client.Options{}))
		if _, err := admin.CloseSessions(ctxT(t), wire.SessionCloseRequest{ID: reader.ID()}); err != nil {
			t.Fatal(err)
		}
		if err := within(t, "held read", errs); !errors.Is(err, client.ErrSessionClosed) {
			t.Fatalf("held read of a session closed meanwhile: got %v, want ErrSessionClosed", err)
		}
		wantSpanError(t, "answer", answer(t, root), wire.CodeSessionClosed, codes.Unset)
	})
}
