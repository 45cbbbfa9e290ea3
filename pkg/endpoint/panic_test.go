package endpoint_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestPanicsAreAnsweredInternal: a handler that panics is answered internal, with
// neither the panic's value nor a stack on the wire; the panic and its stack are
// logged once; its slot is freed (MaxConcurrent 1 answers the next request) and the
// process lives on. Before, the panic ended the process: the handler runs on a worker
// goroutine, where nothing recovered it.
func TestPanicsAreAnsweredInternal(t *testing.T) {
	var logs natstest.Buffer
	f := setupLogged(t, endpoint.Config{MaxConcurrent: 1}, logs.Logger(), func(_ context.Context, _ *endpoint.Call, req *echoRequest) (*echoResponse, error) {
		if req.Text == "boom" {
			var none []string
			_ = none[len(req.Text)] // the runtime panics: index out of range
		}
		return &echoResponse{Text: req.Text}, nil
	})
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := wire.Call(ctx, f.client, "roster.v1.session.echo", nil, &echoRequest{Text: "boom"}, nil)
		cancel()
		var we *wire.Error
		if !errors.As(err, &we) || we.Code != wire.CodeInternal {
			t.Fatalf("a panicking handler: got %v, want internal", err)
		}
		if strings.Contains(we.Message, "out of range") || strings.Contains(we.Message, "goroutine") {
			t.Fatalf("the panic reached the client: %q", we.Message)
		}
	}
	var resp echoResponse
	if err := wire.Call(context.Background(), f.client, "roster.v1.session.echo", nil, &echoRequest{Text: "fine"}, &resp); err != nil || resp.Text != "fine" {
		t.Fatalf("after the panics: got %+v, %v; want the slot back and an answer", resp, err)
	}
	log := logs.String()
	if n := strings.Count(log, "index out of range [4] with length 0"); n != 3 {
		t.Fatalf("the panic is logged %d times for 3 panics:\n%s", n, log)
	}
	if !strings.Contains(log, "panic_test.go") {
		t.Fatalf("the log has no stack of the panic:\n%s", log)
	}
	// The instance counts them, for the process to stop calling itself live.
	if h := f.svc.Health(context.Background()); h.Panics != 3 {
		t.Fatalf("health after 3 panics: got %d panics, want 3", h.Panics)
	}
	var h endpoint.Health
	if err := wire.Call(context.Background(), f.client, "roster.v1.session.health", nil, nil, &h); err != nil || h.Panics != 3 {
		t.Fatalf("health endpoint after 3 panics: got %+v, %v; want 3 panics", h, err)
	}
}
