package lock

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestOnlyTheReleasingInstanceTracesTheRelease: every instance sees a session's
// close and sets out to release its locks, and the compare-and-set lets one of them
// write it. That instance records the release's span, a child of the request that
// closed the session; the other, whose write lost and then found nothing left to
// release, records none. (Before, no instance recorded any span of the release.)
func TestOnlyTheReleasingInstanceTracesTheRelease(t *testing.T) {
	e := newEnv(t)
	recorder := func() (*tracetest.SpanRecorder, *sdktrace.TracerProvider) {
		rec := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
		t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		return rec, tp
	}
	recA, tpA := recorder()
	recB, tpB := recorder()
	// Once armed, b holds its first write (the release) until the test lets it go,
	// and a writes its release only once b holds its own: both set out to release,
	// a writes first, and b's write loses.
	var (
		armed         atomic.Bool
		bHeld, letBGo = make(chan struct{}), make(chan struct{})
		once          sync.Once
	)
	e.startLockTraced(t, Config{beforeWrite: func(stopping, _ context.Context, _ string) {
		if armed.Load() {
			select {
			case <-bHeld:
			case <-stopping.Done():
			}
		}
	}}, tpA)
	b := e.startLockTraced(t, Config{beforeWrite: func(stopping, _ context.Context, _ string) {
		if armed.Load() {
			once.Do(func() {
				close(bHeld)
				select {
				case <-letBGo:
				case <-stopping.Done():
				}
			})
		}
	}}, tpB)
	holder := e.open(t, "admin", 0)
	holder.mustAcquire(t, &wire.LockAcquireRequest{Name: "traced"})
	armed.Store(true)

	ctx, closer := tpA.Tracer("application").Start(ctx10(t), "close")
	err := holder.call(ctx, wire.SubjectSessionClose, &wire.SessionCloseRequest{}, nil)
	closer.End()
	if err != nil {
		t.Fatalf("close session: %v", err)
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if r := e.lockRecord(t, "traced"); r != nil && len(r.Holders) > 0 {
			return fmt.Errorf("the closed session still holds the lock")
		}
		return nil
	})
	close(letBGo)
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		b.qmu.Lock()
		_, busy := b.queues["traced"]
		b.qmu.Unlock()
		if busy || b.Stats().Conflicts == 0 {
			return fmt.Errorf("b's release has not lost its write yet (conflicts %d)", b.Stats().Conflicts)
		}
		return nil
	})

	releases := func(rec *tracetest.SpanRecorder) []sdktrace.ReadOnlySpan {
		var out []sdktrace.ReadOnlySpan
		for _, s := range rec.Ended() {
			if s.Name() == "lock release on session close" {
				out = append(out, s)
			}
		}
		return out
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := len(releases(recA)); n != 1 {
			return fmt.Errorf("a recorded %d releases, want 1", n)
		}
		return nil
	})
	rel := releases(recA)[0]
	if rel.Parent().TraceID() != closer.SpanContext().TraceID() || rel.Parent().SpanID() != closer.SpanContext().SpanID() {
		t.Errorf("release's parent %s/%s, want the closer's span %s/%s", rel.Parent().TraceID(), rel.Parent().SpanID(),
			closer.SpanContext().TraceID(), closer.SpanContext().SpanID())
	}
	if n := len(releases(recB)); n != 0 {
		t.Errorf("b, whose write lost, recorded %d releases", n)
	}
}
