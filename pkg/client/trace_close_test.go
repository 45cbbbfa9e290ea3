package client_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestLockReleaseOnCloseJoinsClosersTrace: the lock service releases a closed
// session's locks when it sees the session's record change, not on a request, and
// that release and the grant it caused were spans of no trace that led back to the
// close. The release is now a span of the closer's trace, under the registry's
// server span of the close — one per session and lock when one request closes
// several by filter — and of a trace of its own when the server closed the session
// (an expiry); the answer to the waiter it lets through, in the waiter's trace,
// links it.
func TestLockReleaseOnCloseJoinsClosersTrace(t *testing.T) {
	t.Parallel()
	tr := newTracing(t)
	p := startTraced(t, tr)
	admin := client.Options{Credentials: client.Password("root", "toor")}
	operator := tr.open(t, p.ClientURL(), admin)

	// waitLock waits for the lock name in a trace of its own, and returns that
	// trace's root once it has the lock.
	waitLock := func(t *testing.T, s *client.Session, name string) chan trace.SpanContext {
		roots := make(chan trace.SpanContext, 1)
		go func() {
			roots <- tr.root("wait", func(ctx context.Context) {
				ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				defer cancel()
				if _, err := s.Lock(ctx, name, client.LockOptions{}); err != nil {
					t.Errorf("waiter of %s: %v", name, err)
				}
			})
		}()
		waitFor(t, func() error { return waiters(ctxT(t), operator, name, 1) })
		return roots
	}
	// grantLinks checks that the answer granting the waiter of root's trace links
	// the release rel.
	grantLinks := func(t *testing.T, root trace.SpanContext, rel sdktrace.ReadOnlySpan) {
		t.Helper()
		acq := tr.wantCall(t, root, root.SpanID(), wire.SubjectLockAcquire)
		grant := tr.find(t, root, "answer to the held acquire", func(s sdktrace.ReadOnlySpan) bool {
			return s.Name() == "lock.acquire reply" && s.Parent().SpanID() == acq.SpanContext().SpanID()
		})
		for _, l := range grant.Links() {
			if l.SpanContext.SpanID() == rel.SpanContext().SpanID() {
				return
			}
		}
		t.Errorf("the grant links %v, want the release %s", grant.Links(), rel.SpanContext().SpanID())
	}
	holderOf := func(t *testing.T, opts client.Options, name string) *client.Session {
		s := tr.open(t, p.ClientURL(), opts)
		if _, err := s.Lock(ctxT(t), name, client.LockOptions{}); err != nil {
			t.Fatal(err)
		}
		return s
	}

	t.Run("closed by its client", func(t *testing.T) {
		holder := holderOf(t, admin, "traced/close")
		waiter := tr.open(t, p.ClientURL(), admin)
		granted := waitLock(t, waiter, "traced/close")
		var err error
		root := tr.root("close", func(ctx context.Context) { err = holder.Close(ctx) })
		if err != nil {
			t.Fatal(err)
		}
		srv := tr.wantCall(t, root, root.SpanID(), wire.SubjectSessionClose)
		rel := tr.releaseSpan(t, holder.ID(), "traced/close")
		if rel.Parent().TraceID() != root.TraceID() || rel.Parent().SpanID() != srv.SpanContext().SpanID() {
			t.Errorf("release's parent %s/%s, want the close's server span %s/%s",
				rel.Parent().TraceID(), rel.Parent().SpanID(), root.TraceID(), srv.SpanContext().SpanID())
		}
		for k, want := range map[string]string{"roster.lock.released": "1", "roster.lock.withdrawn": "0", "roster.lock.granted": "1"} {
			if got := attr(rel, k); got != want {
				t.Errorf("release: %s %q, want %q", k, got, want)
			}
		}
		grantLinks(t, <-granted, rel)
	})

	t.Run("closed by filter", func(t *testing.T) {
		team := client.Options{Credentials: client.Password("root", "toor"), Properties: map[string]string{"Team": "closing"}}
		a, b := holderOf(t, team, "traced/filter-a"), holderOf(t, team, "traced/filter-b")
		var (
			n   int
			err error
		)
		root := tr.root("close by filter", func(ctx context.Context) {
			n, err = operator.CloseSessions(ctx, wire.SessionCloseRequest{Filter: `Team is "closing"`})
		})
		if err != nil || n != 2 {
			t.Fatalf("close by filter: closed %d, %v; want 2", n, err)
		}
		srv := tr.wantCall(t, root, root.SpanID(), wire.SubjectSessionClose)
		for _, s := range []struct {
			id, lock string
		}{{a.ID(), "traced/filter-a"}, {b.ID(), "traced/filter-b"}} {
			rel := tr.releaseSpan(t, s.id, s.lock)
			if rel.Parent().SpanID() != srv.SpanContext().SpanID() {
				t.Errorf("release of %s: parent %s, want the close's server span %s", s.lock, rel.Parent().SpanID(), srv.SpanContext().SpanID())
			}
		}
	})

	t.Run("expired", func(t *testing.T) {
		ctx := ctxT(t)
		// No heartbeats: the session expires a second after its last call.
		holder, err := connect(t, p.ClientURL(), client.WithTracerProvider(tr.tp)).Open(ctx, client.Options{
			Credentials: client.Password("root", "toor"), Timeout: time.Second, HeartbeatInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := holder.Lock(ctx, "traced/expired", client.LockOptions{}); err != nil {
			t.Fatal(err)
		}
		waiter := tr.open(t, p.ClientURL(), admin)
		granted := waitLock(t, waiter, "traced/expired")
		root := <-granted
		rel := tr.releaseSpan(t, holder.ID(), "traced/expired")
		if rel.Parent().IsValid() {
			t.Errorf("release after an expiry: parent %s/%s, want the root of a trace of its own", rel.Parent().TraceID(), rel.Parent().SpanID())
		}
		grantLinks(t, root, rel)
	})
}

// releaseSpan waits for the span of the lock service's release of session id's
// hold of lock, in any trace.
func (tr *tracing) releaseSpan(t *testing.T, id, lock string) sdktrace.ReadOnlySpan {
	t.Helper()
	var found sdktrace.ReadOnlySpan
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		for _, s := range tr.rec.Ended() {
			if s.Name() == "lock release on session close" && attr(s, "roster.session_id") == id && attr(s, "roster.lock.name") == lock {
				found = s
				return nil
			}
		}
		return fmt.Errorf("no release of %s by session %s", lock, id)
	})
	return found
}
