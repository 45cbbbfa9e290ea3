package endpoint_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// rawCall sends body to the echo endpoint with hdr and waits up to 10 s for the
// answer: longer than any deadline the header gives, so that the test sees the
// service's answer to a request whose deadline passed.
func rawCall(t *testing.T, nc *nats.Conn, hdr nats.Header, body string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg := &nats.Msg{Subject: "roster.v1.session.echo", Header: hdr, Data: []byte(body)}
	reply, err := nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return err
	}
	return wire.ReplyError(reply)
}

// send publishes a request to the echo endpoint and returns a function that waits
// up to 10 s for its answer.
func send(t *testing.T, nc *nats.Conn, hdr nats.Header, body string) func() error {
	t.Helper()
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.PublishMsg(&nats.Msg{Subject: "roster.v1.session.echo", Reply: inbox, Header: hdr, Data: []byte(body)}); err != nil {
		t.Fatal(err)
	}
	return func() error {
		reply, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			return err
		}
		return wire.ReplyError(reply)
	}
}

// TestHandlerContextEndsAtTheRequestsDeadline: the handler's context ends when the
// deadline the client gave passes, with DeadlinePassed, and Interrupted says
// timeout. Before, a request carried no deadline: the handler's context ended only
// when the service stopped, and work the client had given up on went on.
func TestHandlerContextEndsAtTheRequestsDeadline(t *testing.T) {
	ended := make(chan error, 1)
	f := setup(t, endpoint.Config{}, func(ctx context.Context, _ *endpoint.Call, _ *echoRequest) (*echoResponse, error) {
		select {
		case <-ctx.Done():
			if !endpoint.DeadlinePassed(ctx) {
				ended <- errors.New("the context ended, but not at the request's deadline")
			} else {
				ended <- endpoint.Interrupted(ctx, "stopping")
			}
		case <-time.After(10 * time.Second):
			ended <- errors.New("the handler's context did not end")
		}
		return nil, endpoint.Interrupted(ctx, "stopping")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := wire.Call(ctx, f.client, "roster.v1.session.echo", nil, &echoRequest{Text: "x"}, nil); !errors.Is(err, wire.ErrTimeout) {
		t.Fatalf("call: got %v, want timeout", err)
	}
	if err := <-ended; !errors.Is(err, wire.ErrTimeout) {
		t.Fatalf("handler: got %v, want its context ended by the deadline (timeout)", err)
	}
}

// TestHandlerDeadlineIsNeverBeforeTheCallers: the service counts the time the
// client gives from the request's arrival, so its deadline falls after the
// client's, never before; and a request without the header has no deadline, as
// before.
func TestHandlerDeadlineIsNeverBeforeTheCallers(t *testing.T) {
	deadlines := make(chan time.Time, 1)
	f := setup(t, endpoint.Config{}, func(ctx context.Context, _ *endpoint.Call, _ *echoRequest) (*echoResponse, error) {
		d, _ := ctx.Deadline()
		deadlines <- d
		return &echoResponse{Text: "ok"}, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := wire.Call(ctx, f.client, "roster.v1.session.echo", nil, &echoRequest{Text: "x"}, nil); err != nil {
		t.Fatal(err)
	}
	client, _ := ctx.Deadline()
	if d := <-deadlines; d.IsZero() || d.Before(client) {
		t.Fatalf("handler's deadline %v; want one, not before the caller's %v", d, client)
	}
	if err := rawCall(t, f.client, nil, `{"text":"x"}`); err != nil {
		t.Fatal(err)
	}
	if d := <-deadlines; !d.IsZero() {
		t.Fatalf("without %s: handler's deadline %v, want none", wire.HeaderTimeout, d)
	}
	// A value past wire.MaxTimeout is taken as it.
	before := time.Now()
	if err := rawCall(t, f.client, nats.Header{wire.HeaderTimeout: {"99999999999999999999999"}}, `{"text":"x"}`); err != nil {
		t.Fatal(err)
	}
	if d := <-deadlines; d.IsZero() || d.After(time.Now().Add(wire.MaxTimeout)) || d.Before(before.Add(wire.MaxTimeout)) {
		t.Fatalf("with a huge %s: handler's deadline %v, want %v after the arrival", wire.HeaderTimeout, d, wire.MaxTimeout)
	}
}

// TestMalformedTimeoutIsBadRequest: a Roster-Timeout that is not a whole number of
// milliseconds, or that is given twice, is refused, naming the header; the handler
// does not run.
func TestMalformedTimeoutIsBadRequest(t *testing.T) {
	var ran atomic.Int32
	f := setup(t, endpoint.Config{}, func(context.Context, *endpoint.Call, *echoRequest) (*echoResponse, error) {
		ran.Add(1)
		return &echoResponse{Text: "ok"}, nil
	})
	for _, tt := range []struct {
		name string
		hdr  nats.Header
		msg  string
	}{
		{"negative", nats.Header{wire.HeaderTimeout: {"-5"}}, "whole number of milliseconds"},
		{"not a number", nats.Header{wire.HeaderTimeout: {"soon"}}, `not "soon"`},
		{"with a unit", nats.Header{wire.HeaderTimeout: {"10ms"}}, "whole number of milliseconds"},
		{"a fraction", nats.Header{wire.HeaderTimeout: {"1.5"}}, "whole number of milliseconds"},
		{"a sign", nats.Header{wire.HeaderTimeout: {"+10"}}, "whole number of milliseconds"},
		{"a space within", nats.Header{wire.HeaderTimeout: {"1 0"}}, "whole number of milliseconds"},
		{"empty", nats.Header{wire.HeaderTimeout: {""}}, "whole number of milliseconds"},
		{"twice", nats.Header{wire.HeaderTimeout: {"10", "20"}}, "appears 2 times"},
		{"in two spellings", nats.Header{wire.HeaderTimeout: {"10"}, "roster-timeout": {"20"}}, "appears 2 times"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := rawCall(t, f.client, tt.hdr, `{"text":"x"}`)
			var we *wire.Error
			if !errors.As(err, &we) || we.Code != wire.CodeBadRequest || !strings.Contains(we.Message, wire.HeaderTimeout) || !strings.Contains(we.Message, tt.msg) {
				t.Fatalf("got %v, want bad_request naming %s and saying %q", err, wire.HeaderTimeout, tt.msg)
			}
		})
	}
	if n := ran.Load(); n != 0 {
		t.Fatalf("the handler ran %d times", n)
	}
}

// TestDeadlineCountsFromArrival: with every slot taken, a request waits for one,
// and its deadline counts from its arrival, not from when a slot frees; one whose
// deadline passes while it waits is answered timeout at once and never started.
// Before, the subscription's callback waited for the slot, so the requests behind
// it were not even looked at: no deadline could end their wait.
func TestDeadlineCountsFromArrival(t *testing.T) {
	hold := make(chan struct{})
	var started atomic.Int32
	deadlines := make(chan time.Time, 4)
	f := setup(t, endpoint.Config{MaxConcurrent: 1}, func(ctx context.Context, _ *endpoint.Call, req *echoRequest) (*echoResponse, error) {
		started.Add(1)
		d, _ := ctx.Deadline()
		deadlines <- d
		if req.Text == "hold" {
			<-hold
		}
		return &echoResponse{Text: req.Text}, nil
	})
	release := sync.OnceFunc(func() { close(hold) })
	t.Cleanup(release) // before the service's Stop, which waits for the handler
	first := make(chan error, 1)
	go func() { first <- rawCall(t, f.client, nil, `{"text":"hold"}`) }()
	<-deadlines // the slot is taken

	// Queued behind the held one: a long deadline, then one with 1 ms, published
	// in that order from one connection, which NATS keeps: when the second is
	// answered, the first has arrived.
	const long = 60 * time.Second
	queued := send(t, f.client, nats.Header{wire.HeaderTimeout: {"60000"}}, `{"text":"queued"}`)
	short := send(t, f.client, nats.Header{wire.HeaderTimeout: {"1"}}, `{"text":"short"}`)
	err := short()
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeTimeout || !strings.Contains(we.Message, "not started") {
		t.Fatalf("short deadline behind a held slot: got %v, want timeout, not started", err)
	}
	// A deadline of 0 has already passed: not started either.
	if err := rawCall(t, f.client, nats.Header{wire.HeaderTimeout: {"0"}}, `{"text":"zero"}`); !errors.Is(err, wire.ErrTimeout) {
		t.Fatalf("deadline 0: got %v, want timeout", err)
	}
	released := time.Now()
	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := queued(); err != nil {
		t.Fatal(err)
	}
	if d := <-deadlines; d.IsZero() || !d.Add(-long).Before(released) {
		t.Fatalf("queued request: deadline %v; want it counted from its arrival, before the slot freed at %v", d, released)
	}
	if n := started.Load(); n != 2 {
		t.Fatalf("%d handlers started, want 2 (the expired requests are never started)", n)
	}
}

// TestHoldWithinTheRequestsDeadline: a handler that holds a request for a wait of
// its own learns how much of it the request's deadline allows (HoldWithin), a
// little less than the time left so that the answer reaches the caller; without a
// deadline, or in a context WithoutDeadline made, the wait is its own.
func TestHoldWithinTheRequestsDeadline(t *testing.T) {
	type held struct {
		hold, unbounded time.Duration
		left            time.Duration
		ok, okWithout   bool
	}
	got := make(chan held, 1)
	f := setup(t, endpoint.Config{}, func(ctx context.Context, _ *endpoint.Call, _ *echoRequest) (*echoResponse, error) {
		var h held
		h.left, h.ok = endpoint.Remaining(ctx)
		h.hold = endpoint.HoldWithin(ctx, time.Minute)
		dctx, done := endpoint.WithoutDeadline(ctx)
		defer done()
		h.unbounded = endpoint.HoldWithin(dctx, time.Minute)
		_, h.okWithout = endpoint.Remaining(dctx)
		got <- h
		return &echoResponse{}, nil
	})
	hdr := nats.Header{}
	hdr.Set(wire.HeaderTimeout, "2000")
	if err := rawCall(t, f.client, hdr, `{"text":"x"}`); err != nil {
		t.Fatal(err)
	}
	h := <-got
	if !h.ok || h.left <= 0 || h.left > 2*time.Second {
		t.Errorf("Remaining: %v, %v; want true and at most the 2 s given", h.left, h.ok)
	}
	if h.hold <= 0 || h.hold >= h.left {
		t.Errorf("HoldWithin(1m) = %v with %v left; want a positive wait short of the deadline", h.hold, h.left)
	}
	if h.unbounded != time.Minute || h.okWithout {
		t.Errorf("without the deadline: HoldWithin(1m) = %v, Remaining ok %v; want 1m and false", h.unbounded, h.okWithout)
	}
	if err := rawCall(t, f.client, nil, `{"text":"x"}`); err != nil {
		t.Fatal(err)
	}
	if h := <-got; h.ok || h.hold != time.Minute {
		t.Errorf("no deadline given: Remaining ok %v, HoldWithin(1m) = %v; want false and 1m", h.ok, h.hold)
	}
}

// TestFailureAfterTheDeadlineKeepsItsCause: unavailable returned after the request's
// deadline is answered timeout, the deadline's doing as far as the client goes, but
// its cause is still logged (at debug): a write seen through past the deadline can
// fail for real. Before, the cause was dropped with the unavailable.
func TestFailureAfterTheDeadlineKeepsItsCause(t *testing.T) {
	var logs natstest.Buffer
	f := setupLogged(t, endpoint.Config{}, logs.Logger(), func(ctx context.Context, _ *endpoint.Call, _ *echoRequest) (*echoResponse, error) {
		<-ctx.Done()
		return nil, fmt.Errorf("write: %w", errors.Join(wire.Errorf(wire.CodeUnavailable, "session storage is not available"), errors.New("nats: disk on fire")))
	})
	hdr := nats.Header{}
	hdr.Set(wire.HeaderTimeout, "100")
	if err := rawCall(t, f.client, hdr, `{"text":"x"}`); !errors.Is(err, wire.ErrTimeout) {
		t.Fatalf("got %v, want timeout", err)
	}
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "disk on fire") {
			return fmt.Errorf("the cause is not logged:\n%s", logs.String())
		}
		return nil
	})
}
