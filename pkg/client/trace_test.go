package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/roster"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// tracing is a real OpenTelemetry SDK recording every span in memory, shared by
// the services and the clients of a test.
type tracing struct {
	rec *tracetest.SpanRecorder
	tp  *sdktrace.TracerProvider
}

func newTracing(t *testing.T) *tracing {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return &tracing{rec: rec, tp: tp}
}

// startTraced runs Roster as startSecured does, its services tracing into tr.
func startTraced(t *testing.T, tr *tracing) *roster.Process {
	t.Helper()
	return startSecured(t, rostertest.WithConfig(func(c *roster.Config) { c.TracerProvider = tr.tp }))
}

// open opens a session whose client traces into tr, closed when the test ends.
func (tr *tracing) open(t *testing.T, url string, opts client.Options) *client.Session {
	t.Helper()
	s, err := client.Open(ctxT(t), url, opts, client.WithTracerProvider(tr.tp))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { closeSession(t, s) })
	return s
}

// root runs fn in a new root span, as an application's own operation, and returns
// the span's context.
func (tr *tracing) root(name string, fn func(ctx context.Context)) trace.SpanContext {
	ctx, span := tr.tp.Tracer("application").Start(context.Background(), name)
	defer span.End()
	fn(ctx)
	return span.SpanContext()
}

// find waits for an ended span of root's trace that match accepts.
func (tr *tracing) find(t *testing.T, root trace.SpanContext, what string, match func(sdktrace.ReadOnlySpan) bool) sdktrace.ReadOnlySpan {
	t.Helper()
	var found sdktrace.ReadOnlySpan
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		for _, s := range tr.rec.Ended() {
			if s.SpanContext().TraceID() == root.TraceID() && match(s) {
				found = s
				return nil
			}
		}
		return fmt.Errorf("no %s in trace %s", what, root.TraceID())
	})
	return found
}

// wantCall checks that root's trace holds the SDK's client span for subject, a
// child of parent, and the service's server span for it, a child of the client
// span; it returns the server span.
func (tr *tracing) wantCall(t *testing.T, root trace.SpanContext, parent trace.SpanID, subject string) sdktrace.ReadOnlySpan {
	t.Helper()
	cl := tr.find(t, root, "client span "+subject, func(s sdktrace.ReadOnlySpan) bool {
		return s.SpanKind() == trace.SpanKindClient && s.Name() == subject && s.Parent().SpanID() == parent
	})
	return tr.find(t, root, "server span "+subject, func(s sdktrace.ReadOnlySpan) bool {
		return s.SpanKind() == trace.SpanKindServer && s.Name() == subject && s.Parent().SpanID() == cl.SpanContext().SpanID()
	})
}

// TestTraceFollowsEveryCall: an application's trace goes through the SDK's client
// span into each service's server span, and on from the registry into the auth
// service, for every session and lock operation.
func TestTraceFollowsEveryCall(t *testing.T) {
	t.Parallel()
	tr := newTracing(t)
	p := startTraced(t, tr)
	admin := tr.open(t, p.ClientURL(), client.Options{Credentials: client.Password("root", "toor")})
	other := tr.open(t, p.ClientURL(), client.Options{Properties: map[string]string{"Department": "Payroll"}})

	var opened *client.Session
	tests := []struct {
		name    string
		subject string
		call    func(ctx context.Context) error
		auth    bool // the registry asks the auth service
	}{
		{"open", wire.SubjectSessionOpen, func(ctx context.Context) error {
			var err error
			opened, err = client.Open(ctx, p.ClientURL(), client.Options{Credentials: client.Password("alice", "wonderland"),
				Properties: map[string]string{"Floor": "3"}}, client.WithTracerProvider(tr.tp))
			return err
		}, true},
		{"get own", wire.SubjectSessionGet, func(ctx context.Context) error { _, err := admin.Refresh(ctx); return err }, false},
		{"get other", wire.SubjectSessionGet, func(ctx context.Context) error { _, err := admin.GetSession(ctx, other.ID()); return err }, false},
		{"list", wire.SubjectSessionList, func(ctx context.Context) error {
			_, err := admin.ListSessions(ctx, wire.SessionListRequest{Filter: "all"})
			return err
		}, false},
		{"update own", wire.SubjectSessionUpdate, func(ctx context.Context) error {
			return opened.SetProperties(ctx, map[string]string{"Floor": "4"})
		}, false},
		{"update other", wire.SubjectSessionUpdate, func(ctx context.Context) error {
			_, err := admin.UpdateSessions(ctx, wire.SessionUpdateRequest{ID: other.ID(), Set: map[string]string{"Status": "x"}})
			return err
		}, false},
		{"keepalive", wire.SubjectSessionKeepalive, func(ctx context.Context) error { return admin.Keepalive(ctx) }, false},
		{"events", wire.SubjectSessionEvents, func(ctx context.Context) error {
			_, err := admin.Events(ctx, wire.SessionEventsRequest{SessionID: admin.ID(), Limit: 1})
			return err
		}, false},
		{"change principal", wire.SubjectSessionChangePrincipal, func(ctx context.Context) error {
			return admin.ChangePrincipal(ctx, client.Password("root", "toor"))
		}, true},
		{"try lock", wire.SubjectLockAcquire, func(ctx context.Context) error {
			_, err := admin.TryLock(ctx, "traced/a", client.LockOptions{})
			return err
		}, false},
		{"lock", wire.SubjectLockAcquire, func(ctx context.Context) error {
			_, err := admin.Lock(ctx, "traced/b", client.LockOptions{})
			return err
		}, false},
		{"list locks", wire.SubjectLockList, func(ctx context.Context) error {
			_, err := admin.ListLocks(ctx, wire.LockListRequest{Prefix: "traced/"})
			return err
		}, false},
		{"release", wire.SubjectLockRelease, func(ctx context.Context) error {
			_, err := admin.Release(ctx, "traced/a", 0)
			return err
		}, false},
		{"close other", wire.SubjectSessionClose, func(ctx context.Context) error {
			_, err := admin.CloseSessions(ctx, wire.SessionCloseRequest{ID: other.ID()})
			return err
		}, false},
		{"close", wire.SubjectSessionClose, func(ctx context.Context) error { return opened.Close(ctx) }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			root := tr.root(tc.name, func(ctx context.Context) { err = tc.call(ctx) })
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			srv := tr.wantCall(t, root, root.SpanID(), tc.subject)
			if !tc.auth {
				return
			}
			// The registry's client span, and under it the auth service's server span.
			tr.wantCall(t, root, srv.SpanContext().SpanID(), wire.SubjectAuthenticate)
		})
	}
}

// TestTraceFollowsResume: a session taken over from a connection that is gone
// resumes in the SDK's own trace, which the registry joins.
func TestTraceFollowsResume(t *testing.T) {
	t.Parallel()
	tr := newTracing(t)
	p := startTraced(t, tr)
	gone := connect(t, p.ClientURL())
	s, err := gone.Open(ctxT(t), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	gone.Conn().Close()
	c := connect(t, p.ClientURL(), client.WithTracerProvider(tr.tp))
	if _, err := c.Attach(ctxT(t), s.ID(), s.Token(), client.Options{HeartbeatInterval: 100 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	var cl sdktrace.ReadOnlySpan
	waitFor(t, func() error {
		for _, sp := range tr.rec.Ended() {
			if sp.SpanKind() == trace.SpanKindClient && sp.Name() == wire.SubjectSessionResume {
				cl = sp
				return nil
			}
		}
		return errors.New("no resume yet")
	})
	tr.find(t, cl.SpanContext(), "resume server span", func(sp sdktrace.ReadOnlySpan) bool {
		return sp.SpanKind() == trace.SpanKindServer && sp.Name() == wire.SubjectSessionResume && sp.Parent().SpanID() == cl.SpanContext().SpanID()
	})
}

// TestTraceReachesHandlers: a send to one session, a send by filter, a request and
// a streamed request each reach the receivers' handlers with a context in the
// sender's trace: the handler's span is the SDK's consumer span, a child of the
// service's fan-out span.
func TestTraceReachesHandlers(t *testing.T) {
	t.Parallel()
	tr := newTracing(t)
	p := startTraced(t, tr)
	sender := tr.open(t, p.ClientURL(), client.Options{Credentials: client.Password("root", "toor")})
	type got struct {
		session string
		sc      trace.SpanContext
	}
	handled := make(chan got, 16)
	var receivers []*client.Session
	for range 2 {
		r := tr.open(t, p.ClientURL(), client.Options{Properties: map[string]string{"Group": "traced"}})
		id := r.ID()
		if _, err := r.Handle("*", func(ctx context.Context, m *client.Message) ([]byte, error) {
			handled <- got{id, trace.SpanFromContext(ctx).SpanContext()}
			return []byte("ok"), nil
		}); err != nil {
			t.Fatal(err)
		}
		receivers = append(receivers, r)
	}
	tests := []struct {
		name, op  string
		receivers int
		call      func(ctx context.Context) error
	}{
		{"send to session", "send", 1, func(ctx context.Context) error {
			_, err := sender.Send(ctx, client.ToSession(receivers[0].ID()), "chat/direct", []byte("hi"))
			return err
		}},
		{"send by filter", "send", 2, func(ctx context.Context) error {
			_, err := sender.Send(ctx, client.ToFilter(`Group is "traced"`), "chat/room", []byte("hi"))
			return err
		}},
		{"request", "request", 2, func(ctx context.Context) error {
			res, err := sender.Request(ctx, client.ToFilter(`Group is "traced"`), "q/ask", nil, 5*time.Second)
			if err == nil && len(res.Results) != 2 {
				err = fmt.Errorf("got %d results, want 2", len(res.Results))
			}
			return err
		}},
		{"request stream", "request", 2, func(ctx context.Context) error {
			n, err := sender.RequestStream(ctx, client.ToFilter(`Group is "traced"`), "q/stream", nil, 5*time.Second, func(wire.MsgResult) {})
			if err == nil && n != 2 {
				err = fmt.Errorf("got %d expected, want 2", n)
			}
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			root := tr.root(tc.name, func(ctx context.Context) { err = tc.call(ctx) })
			if err != nil {
				t.Fatal(err)
			}
			subject := wire.SubjectMsgSend
			if tc.op == "request" {
				subject = wire.SubjectMsgRequest
			}
			srv := tr.wantCall(t, root, root.SpanID(), subject)
			fan := tr.find(t, root, "fan-out span", func(s sdktrace.ReadOnlySpan) bool {
				return s.Name() == "msg."+tc.op+" fan-out" && s.Parent().SpanID() == srv.SpanContext().SpanID()
			})
			for range tc.receivers {
				var h got
				select {
				case h = <-handled:
				case <-time.After(10 * time.Second):
					t.Fatal("a receiver's handler did not run")
				}
				if h.sc.TraceID() != root.TraceID() {
					t.Fatalf("handler of %s: context in trace %s, want the sender's %s", h.session, h.sc.TraceID(), root.TraceID())
				}
				consumer := tr.find(t, root, "consumer span", func(s sdktrace.ReadOnlySpan) bool {
					return s.SpanContext().SpanID() == h.sc.SpanID()
				})
				if consumer.SpanKind() != trace.SpanKindConsumer || consumer.Parent().SpanID() != fan.SpanContext().SpanID() {
					t.Fatalf("handler's span %q (%s): parent %s, want a consumer span under the fan-out span %s",
						consumer.Name(), consumer.SpanKind(), consumer.Parent().SpanID(), fan.SpanContext().SpanID())
				}
			}
		})
	}
}

// TestLockAnswerJoinsWaitersTrace: a waiting acquire is answered later, by whatever
// frees the lock or ends the wait. That answer is a span in the waiter's trace,
// under its acquire's server span; a grant links the release that made it.
func TestLockAnswerJoinsWaitersTrace(t *testing.T) {
	t.Parallel()
	tr := newTracing(t)
	p := startTraced(t, tr)
	admin := client.Options{Credentials: client.Password("root", "toor")}
	holder := tr.open(t, p.ClientURL(), admin)
	waiter := tr.open(t, p.ClientURL(), admin)
	ctx := ctxT(t)
	if _, err := holder.Lock(ctx, "traced/w", client.LockOptions{}); err != nil {
		t.Fatal(err)
	}
	// wait waits for the lock in a trace of its own, at most d.
	wait := func(d time.Duration) (chan trace.SpanContext, chan error) {
		roots, errs := make(chan trace.SpanContext, 1), make(chan error, 1)
		go func() {
			roots <- tr.root("wait", func(ctx context.Context) {
				ctx, cancel := context.WithTimeout(ctx, d)
				defer cancel()
				_, err := waiter.Lock(ctx, "traced/w", client.LockOptions{})
				errs <- err
			})
		}()
		return roots, errs
	}
	answer := func(t *testing.T, root trace.SpanContext) sdktrace.ReadOnlySpan {
		t.Helper()
		acq := tr.wantCall(t, root, root.SpanID(), wire.SubjectLockAcquire)
		return tr.find(t, root, "answer to the held acquire", func(s sdktrace.ReadOnlySpan) bool {
			return s.Name() == "lock.acquire reply" && s.Parent().SpanID() == acq.SpanContext().SpanID()
		})
	}

	t.Run("granted by a release", func(t *testing.T) {
		roots, errs := wait(10 * time.Second)
		waitFor(t, func() error { return waiters(ctx, holder, "traced/w", 1) })
		var err error
		rel := tr.root("release", func(ctx context.Context) { _, err = holder.Release(ctx, "traced/w", 0) })
		if err != nil {
			t.Fatal(err)
		}
		if err := within(t, "lock wait", errs); err != nil {
			t.Fatalf("waiter: %v", err)
		}
		relSrv := tr.wantCall(t, rel, rel.SpanID(), wire.SubjectLockRelease)
		grant := answer(t, <-roots)
		linked := false
		for _, l := range grant.Links() {
			linked = linked || l.SpanContext.SpanID() == relSrv.SpanContext().SpanID()
		}
		if !linked {
			t.Errorf("grant links %v, want the release's server span %s", grant.Links(), relSrv.SpanContext().SpanID())
		}
		if got := attr(grant, "roster.granted"); got != "true" {
			t.Errorf("grant: roster.granted %q, want true", got)
		}
	})

	t.Run("wait ended", func(t *testing.T) {
		// The waiter now holds the lock; the holder waits, and gives up.
		waiter, holder = holder, waiter
		defer func() { waiter, holder = holder, waiter }()
		roots, errs := wait(500 * time.Millisecond)
		if err := within(t, "lock wait", errs); !errors.Is(err, client.ErrTimeout) {
			t.Fatalf("waiter: got %v, want ErrTimeout", err)
		}
		end := answer(t, <-roots)
		if got := attr(end, "roster.error.code"); got != string(wire.CodeTimeout) {
			t.Errorf("answer to a wait that ended: roster.error.code %q, want timeout", got)
		}
	})
}

func attr(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.String()
		}
	}
	return ""
}

// TestErrorSpansRecordTheCode: a call that fails — answered with an error, or not
// sent at all — and a handler that fails end their spans with an error status and
// the wire error code.
func TestErrorSpansRecordTheCode(t *testing.T) {
	t.Parallel()
	tr := newTracing(t)
	p := startTraced(t, tr)
	guest := tr.open(t, p.ClientURL(), client.Options{})
	receiver := tr.open(t, p.ClientURL(), client.Options{})
	if _, err := receiver.Handle("q/refuse", func(context.Context, *client.Message) ([]byte, error) {
		return nil, &wire.Error{Code: wire.CodeConflict, Message: "no"}
	}); err != nil {
		t.Fatal(err)
	}
	wantError := func(t *testing.T, s sdktrace.ReadOnlySpan, code wire.Code) {
		t.Helper()
		if s.Status().Code != codes.Error {
			t.Errorf("span %q: status %v, want Error", s.Name(), s.Status())
		}
		if got := attr(s, "roster.error.code"); got != string(code) {
			t.Errorf("span %q: roster.error.code %q, want %s", s.Name(), got, code)
		}
		if got := attr(s, "error.type"); got != string(code) {
			t.Errorf("span %q: error.type %q, want %s", s.Name(), got, code)
		}
	}

	t.Run("answered with an error", func(t *testing.T) {
		var err error
		root := tr.root("forbidden", func(ctx context.Context) { _, err = guest.TryLock(ctx, "x", client.LockOptions{}) })
		if !errors.Is(err, client.ErrForbidden) {
			t.Fatalf("guest lock: got %v, want ErrForbidden", err)
		}
		wantError(t, tr.find(t, root, "client span", func(s sdktrace.ReadOnlySpan) bool {
			return s.SpanKind() == trace.SpanKindClient && s.Name() == wire.SubjectLockAcquire
		}), wire.CodeForbidden)
		// The server span records the code too; a caller's mistake (a 4xx code) is
		// not the service's error, and leaves its status unset, as OTel's
		// conventions for server spans have it.
		srv := tr.find(t, root, "server span", func(s sdktrace.ReadOnlySpan) bool { return s.SpanKind() == trace.SpanKindServer })
		if attr(srv, "roster.error.code") != "forbidden" || attr(srv, "error.type") != "forbidden" || srv.Status().Code != codes.Unset {
			t.Errorf("server span: attributes %v, status %v; want the code, status unset", srv.Attributes(), srv.Status())
		}
	})
	t.Run("handler failed", func(t *testing.T) {
		var res *client.Results
		var err error
		root := tr.root("refused", func(ctx context.Context) {
			res, err = guest.Request(ctx, client.ToSession(receiver.ID()), "q/refuse", nil, 5*time.Second)
		})
		if err != nil || len(res.Results) != 1 || res.Results[0].Status != wire.StatusError {
			t.Fatalf("request: got %+v, %v; want one error result", res, err)
		}
		wantError(t, tr.find(t, root, "consumer span", func(s sdktrace.ReadOnlySpan) bool {
			return s.SpanKind() == trace.SpanKindConsumer
		}), wire.CodeConflict)
	})
	t.Run("not sent", func(t *testing.T) {
		c := connect(t, p.ClientURL(), client.WithTracerProvider(tr.tp))
		c.Conn().Close()
		var err error
		root := tr.root("closed", func(ctx context.Context) { _, err = c.Open(ctx, client.Options{}) })
		if !errors.Is(err, client.ErrUnavailable) {
			t.Fatalf("open on a closed connection: got %v, want ErrUnavailable", err)
		}
		wantError(t, tr.find(t, root, "client span", func(s sdktrace.ReadOnlySpan) bool {
			return s.SpanKind() == trace.SpanKindClient
		}), wire.CodeUnavailable)
	})
}

// TestLockWithdrawalJoinsCallersTrace: a Lock given up (its context cancelled)
// withdraws its request in the caller's trace.
func TestLockWithdrawalJoinsCallersTrace(t *testing.T) {
	t.Parallel()
	tr := newTracing(t)
	p := startTraced(t, tr)
	admin := client.Options{Credentials: client.Password("root", "toor")}
	holder := tr.open(t, p.ClientURL(), admin)
	waiter := tr.open(t, p.ClientURL(), admin)
	ctx := ctxT(t)
	if _, err := holder.Lock(ctx, "traced/g", client.LockOptions{}); err != nil {
		t.Fatal(err)
	}
	wctx, giveUp := context.WithCancel(ctx)
	errs := make(chan error, 1)
	roots := make(chan trace.SpanContext, 1)
	go func() {
		roots <- tr.root("give up", func(rctx context.Context) {
			rctx, cancel := context.WithCancel(rctx)
			defer cancel()
			context.AfterFunc(wctx, cancel)
			_, err := waiter.Lock(rctx, "traced/g", client.LockOptions{})
			errs <- err
		})
	}()
	waitFor(t, func() error { return waiters(ctx, holder, "traced/g", 1) })
	giveUp()
	if err := within(t, "lock wait", errs); !errors.Is(err, context.Canceled) {
		t.Fatalf("given-up lock: got %v, want context.Canceled", err)
	}
	root := <-roots
	tr.wantCall(t, root, root.SpanID(), wire.SubjectLockCancel)
}

// TestHeartbeatsAreNotTraced: the SDK's heartbeats, a keepalive every few seconds
// per session, record no span, in the SDK or the registry; a keepalive the
// application calls is traced like any call.
func TestHeartbeatsAreNotTraced(t *testing.T) {
	t.Parallel()
	tr := newTracing(t)
	p := startTraced(t, tr)
	s := tr.open(t, p.ClientURL(), client.Options{Timeout: time.Second, HeartbeatInterval: 50 * time.Millisecond})
	keepalives := func() int {
		n := 0
		for _, sp := range tr.rec.Ended() {
			if sp.Name() == wire.SubjectSessionKeepalive {
				n++
			}
		}
		return n
	}
	// Alive three timeouts on: only heartbeats kept it so, some fifty of them.
	time.Sleep(3 * time.Second)
	if info, err := s.Refresh(ctxT(t)); err != nil || info.State != wire.StateActive {
		t.Fatalf("after three timeouts: %+v, %v; want the session kept alive by its heartbeats", info, err)
	}
	if n := keepalives(); n != 0 {
		t.Fatalf("%d keepalive spans recorded from heartbeats, want none", n)
	}
	if err := s.Keepalive(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := keepalives(); n != 2 { // the SDK's client span and the registry's server span
			return fmt.Errorf("%d keepalive spans for the application's keepalive, want 2", n)
		}
		return nil
	})
}
