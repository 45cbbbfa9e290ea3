package endpoint_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestStopContextEndsByTheProcesssDeadline: a service's stop ends drain after it
// begins, or at the deadline the process gave when it cancelled the service's run
// (StopBy) when that comes first: a process that stops its services together gives
// them one deadline, and a service whose stop begins later must not count a whole
// drain timeout from then.
func TestStopContextEndsByTheProcesssDeadline(t *testing.T) {
	const drain = time.Hour
	stopped := func(cause error) context.Context {
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(cause)
		return ctx
	}
	soon := time.Now().Add(time.Minute)
	for _, tc := range []struct {
		name   string
		ctx    context.Context
		wantBy time.Time // zero: drain from the stop
	}{
		{"the process's deadline first", stopped(&endpoint.StopBy{Deadline: soon}), soon},
		{"wrapped", stopped(errors.Join(errors.New("stop"), &endpoint.StopBy{Deadline: soon})), soon},
		{"drain first", stopped(&endpoint.StopBy{Deadline: time.Now().Add(2 * drain)}), time.Time{}},
		{"no deadline given", stopped(context.Canceled), time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := time.Now()
			ctx, cancel := endpoint.StopContext(tc.ctx, drain)
			defer cancel()
			after := time.Now()
			got, ok := ctx.Deadline()
			switch {
			case !ok:
				t.Fatal("the stop's context has no deadline")
			case !tc.wantBy.IsZero() && !got.Equal(tc.wantBy):
				t.Fatalf("stop's deadline %v, want the process's %v", got, tc.wantBy)
			case tc.wantBy.IsZero() && (got.Before(before.Add(drain)) || got.After(after.Add(drain))):
				t.Fatalf("stop's deadline %v from now, want the drain, %v", time.Until(got), drain)
			}
		})
	}
}

// TestServeStopsByTheProcesssDeadline: Serve, cancelled with a deadline that has
// passed, stops at once — the requests in flight see the service's context end —
// rather than waiting out its own drain (an hour here) from then.
func TestServeStopsByTheProcesssDeadline(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	f := setup(t, endpoint.Config{}, func(ctx context.Context, _ *endpoint.Call, _ *echoRequest) (*echoResponse, error) {
		close(started)
		select {
		case <-ctx.Done():
		case <-release: // the test failed: before the service's Stop, which waits for it
		}
		return nil, endpoint.Interrupted(ctx, "stopping")
	})
	t.Cleanup(func() { close(release) })
	run, cancel := context.WithCancelCause(context.Background())
	served := make(chan error, 1)
	go func() { served <- f.svc.Serve(run, time.Hour) }()
	answered := make(chan error, 1)
	go func() {
		answered <- wire.Call(context.Background(), f.client, "roster.v1.session.echo", nil, &echoRequest{Text: "x"}, nil)
	}()
	<-started
	cancel(&endpoint.StopBy{Deadline: time.Now()})
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Serve still waits for the request in flight a minute after the process's deadline")
	}
	if err := <-answered; !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("the request in flight: %v, want unavailable (the service stops)", err)
	}
}
