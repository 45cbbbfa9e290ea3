package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestHandlerPanicFailsOnlyItsMessage: a handler that panics fails its own message
// — a request is answered internal at once, a copy of it gets that answer again —
// and the registration goes on handling the next. The handler runs on a goroutine
// of the SDK, where an unrecovered panic ended the process, every session of it
// with it (the services' endpoints recover theirs: TestPanicsAreAnsweredInternal).
func TestHandlerPanicFailsOnlyItsMessage(t *testing.T) {
	p := rostertest.Start(t)
	ctx := ctxT(t)
	var logs natstest.Buffer
	recv, err := connect(t, p.ClientURL(), client.WithLogger(logs.Logger())).Open(ctx, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := recv.Handle("work", func(_ context.Context, m *client.Message) ([]byte, error) {
		if string(m.Payload) == "boom" {
			panic("the handler's own bug")
		}
		return m.Payload, nil
	}); err != nil {
		t.Fatal(err)
	}
	sender := open(t, p.ClientURL(), client.Options{})

	one := func(payload string, opts ...client.MessageOption) wire.MsgResult {
		t.Helper()
		res, err := sender.Request(ctx, client.ToSession(recv.ID()), "work", []byte(payload), 5*time.Second, opts...)
		if err != nil || len(res.Results) != 1 {
			t.Fatalf("request %q: got %+v, %v", payload, res, err)
		}
		return res.Results[0]
	}
	start := time.Now()
	r := one("boom", client.MessageID("boom-1"))
	if r.Status != wire.StatusError || !errors.Is(r.Error, client.ErrInternal) {
		t.Fatalf("request whose handler panicked: got %s %v, want an internal error", r.Status, r.Error)
	}
	if strings.Contains(r.Error.Message, "the handler's own bug") {
		t.Errorf("the panic's value reached the requester: %q", r.Error.Message)
	}
	if waited := time.Since(start); waited >= 5*time.Second {
		t.Errorf("answered after %v: the requester waited out its timeout", waited)
	}
	// A copy of it is answered with what the first got, not handled again.
	if r := one("boom", client.MessageID("boom-1")); r.Status != wire.StatusError || !errors.Is(r.Error, client.ErrInternal) {
		t.Errorf("copy of the request whose handler panicked: got %s %v, want internal again", r.Status, r.Error)
	}
	// A send whose handler panics, then the registration still works.
	if _, err := sender.Send(ctx, client.ToSession(recv.ID()), "work", []byte("boom")); err != nil {
		t.Fatal(err)
	}
	if r := one("fine"); r.Status != wire.StatusOK || string(r.Payload) != "fine" {
		t.Errorf("request after the panics: got %s %q %v, want ok fine", r.Status, r.Payload, r.Error)
	}
	// The receiver's log has the panic, with its value and where it was.
	if l := logs.String(); !strings.Contains(l, "the handler's own bug") || !strings.Contains(l, "receive_test.go") {
		t.Errorf("the panic is not logged with its value and stack:\n%s", l)
	}
}

// TestRequestsLeftUnhandledAreAnsweredGone: a request a registration will never
// handle — waiting for a handler slot when the registration is removed or its
// session closed — is answered gone, as a request finding no handler is, at once.
// It was dropped unanswered, and its requester waited out its whole timeout to be
// told timeout, as if a handler were working on it.
func TestRequestsLeftUnhandledAreAnsweredGone(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	sender := open(t, p.ClientURL(), client.Options{})
	for _, end := range []string{"removed", "closed"} {
		t.Run(end, func(t *testing.T) {
			ctx := ctxT(t)
			recv := open(t, p.ClientURL(), client.Options{})
			var busy atomic.Int64
			stop, err := recv.Handle("work", func(ctx context.Context, m *client.Message) ([]byte, error) {
				if m.IsRequest {
					return []byte("handled"), nil
				}
				busy.Add(1)
				<-ctx.Done() // until the registration or the session ends
				return nil, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			for range client.MaxHandlers {
				if _, err := sender.Send(ctx, client.ToSession(recv.ID()), "work", nil); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, func() error {
				if n := busy.Load(); n < client.MaxHandlers {
					return fmt.Errorf("%d of %d handlers busy", n, client.MaxHandlers)
				}
				return nil
			})
			// A request that waits for a slot, with time to spare.
			const timeout = 20 * time.Second
			type outcome struct {
				res *client.Results
				err error
			}
			got := make(chan outcome, 1)
			go func() {
				res, err := sender.Request(ctx, client.ToSession(recv.ID()), "work", nil, timeout)
				got <- outcome{res, err}
			}()
			waitFor(t, func() error {
				if n := client.HandlerDeliveries(recv); n <= client.MaxHandlers {
					return errors.New("the request has not reached the registration")
				}
				return nil
			})
			if end == "removed" {
				if err := stop(); err != nil {
					t.Fatal(err)
				}
			} else if err := recv.Close(ctx); err != nil {
				t.Fatal(err)
			}
			// Well within the request's timeout: answered, not waited out.
			select {
			case o := <-got:
				if o.err != nil || len(o.res.Results) != 1 {
					t.Fatalf("request: got %+v, %v", o.res, o.err)
				}
				if r := o.res.Results[0]; r.Status != wire.StatusGone {
					t.Errorf("request left waiting when the registration was %s: got %s %v, want gone", end, r.Status, r.Error)
				}
			case <-time.After(timeout / 2):
				t.Fatalf("request left waiting when the registration was %s: not answered within %v (its timeout: %v)", end, timeout/2, timeout)
			}
		})
	}
}
