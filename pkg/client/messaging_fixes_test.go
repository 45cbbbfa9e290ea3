package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestRequestStreamOnAttachedSession: a session opened on one connection and
// attached on another (roster request --session-id does exactly this) streams its
// request results to the opener's connection key, which the attaching connection
// cannot read: RequestStream gets none of them.
func TestRequestStreamOnAttachedSession(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	echo := open(t, p.ClientURL(), client.Options{})
	if _, err := echo.Handle("ping", func(_ context.Context, m *client.Message) ([]byte, error) { return m.Payload, nil }); err != nil {
		t.Fatal(err)
	}
	opener := open(t, p.ClientURL(), client.Options{})

	c, err := client.Connect(p.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Conn().Close()
	attached, err := c.Attach(ctxT(t), opener.ID(), opener.Token(), client.Options{})
	if err != nil {
		t.Fatalf("attach: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var got []wire.MsgResult
	n, err := attached.RequestStream(ctx, client.ToSession(echo.ID()), "ping", []byte("x"), time.Second, func(r wire.MsgResult) { got = append(got, r) })
	if err != nil || n != 1 || len(got) != 1 || got[0].Status != wire.StatusOK {
		t.Fatalf("streamed request from the attached session: got %d, %v, %v; want 1 ok result", n, got, err)
	}
}

// TestRequestShortTimeout: Request sent timeout.Milliseconds(), so a timeout under
// 1 ms became timeout_ms 0, which the service reads as its 5 s default: the caller
// waited 5,000 times longer than asked. It is rounded up to 1 ms; the result's
// timeout error names the timeout the service applied.
func TestRequestShortTimeout(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	silent := open(t, p.ClientURL(), client.Options{})
	block := make(chan struct{})
	defer close(block)
	if _, err := silent.Handle("ping", func(context.Context, *client.Message) ([]byte, error) { <-block; return nil, nil }); err != nil {
		t.Fatal(err)
	}
	requester := open(t, p.ClientURL(), client.Options{})
	res, err := requester.Request(ctxT(t), client.ToSession(silent.ID()), "ping", nil, 900*time.Microsecond)
	if err != nil || len(res.Results) != 1 {
		t.Fatalf("got %+v, %v", res, err)
	}
	if r := res.Results[0]; r.Status != wire.StatusTimeout || r.Error == nil || !strings.HasSuffix(r.Error.Message, "within 1ms") {
		t.Fatalf("got %+v, want a timeout after 1ms", r)
	}
}

// TestNoHandlerStartsAfterRemoval fills every handler slot of a Handle, with one
// more message waiting for a slot, and removes the handler: the waiting message is
// dropped, not handled once a slot frees. It used to be handled, with a cancelled
// context, and the removal's wait could even miss it (WaitGroup Add racing Wait).
func TestNoHandlerStartsAfterRemoval(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	ctx := ctxT(t)
	receiver := open(t, p.ClientURL(), client.Options{})
	before := handlerGoroutines()
	var started atomic.Int64
	release := make(chan struct{})
	ctxs := make(chan context.Context, client.MaxHandlers+1)
	remove, err := receiver.Handle("busy", func(ctx context.Context, _ *client.Message) ([]byte, error) {
		started.Add(1)
		ctxs <- ctx
		<-release
		return nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sender := open(t, p.ClientURL(), client.Options{})
	for range client.MaxHandlers + 1 {
		if _, err := sender.Send(ctx, client.ToSession(receiver.ID()), "busy", nil); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() error {
		if n := started.Load(); n != client.MaxHandlers {
			return fmt.Errorf("%d handlers running", n)
		}
		return nil
	})
	if n := handlerGoroutines() - before; n < client.MaxHandlers {
		t.Fatalf("%d goroutines found running the %d handlers: handlerGoroutines no longer finds them", n, client.MaxHandlers)
	}
	// The last message must wait for a slot when the handler is removed: removed
	// before it arrived, it is never delivered, and the test passes untried.
	waitFor(t, func() error {
		if n := client.HandlerDeliveries(receiver); n != client.MaxHandlers+1 {
			return fmt.Errorf("the subscription has passed on %d messages, want %d", n, client.MaxHandlers+1)
		}
		return nil
	})
	// Queued behind the waiting message, the barrier runs once the subscription's
	// callback is done with it (it waits for a slot in the registration's queue).
	decided := make(chan struct{})
	if err := receiver.Client().Conn().Barrier(func() { close(decided) }); err != nil {
		t.Fatal(err)
	}
	removed := make(chan error, 1)
	go func() { removed <- remove() }()
	// The slots free once the removal has cancelled the handlers' context: freed
	// before, they let the waiting message through as they should.
	select {
	case <-(<-ctxs).Done():
	case <-ctx.Done():
		t.Fatal("the removal did not cancel the running handlers' context")
	}
	close(release)
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
	select {
	case <-decided:
	case <-ctx.Done():
		t.Fatal("the subscription never finished with the message waiting for a slot")
	}
	// Handed to a handler, the message is handled on a goroutine of its own, which
	// may not have run yet.
	waitFor(t, func() error {
		if n := handlerGoroutines() - before; n > 0 {
			return fmt.Errorf("%d goroutines of the handler are left", n)
		}
		return nil
	})
	if n := started.Load(); n != client.MaxHandlers {
		t.Fatalf("%d handlers ran; the message waiting for a slot at the removal was handled", n)
	}
}

// handlerGoroutines counts the goroutines a Handle started to run a handler, in
// this test and any other.
func handlerGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return bytes.Count(buf[:n], []byte("created by github.com/seed-3c836eab/roster/pkg/client.(*Session).Handle."))
		}
		buf = make([]byte, 2*len(buf))
	}
}

// TestRequestStreamDeadlineIsATimeout: a streamed request whose results are still
// missing at the caller's deadline fails with ErrTimeout, as Request does. It used
// to fail with a bare context error, which matched no SDK error (and made roster
// request exit 1 instead of 6).
func TestRequestStreamDeadlineIsATimeout(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	silent := open(t, p.ClientURL(), client.Options{})
	block := make(chan struct{})
	defer close(block)
	if _, err := silent.Handle("ping", func(context.Context, *client.Message) ([]byte, error) { <-block; return nil, nil }); err != nil {
		t.Fatal(err)
	}
	requester := open(t, p.ClientURL(), client.Options{})
	ctx, cancel := context.WithTimeout(ctxT(t), 300*time.Millisecond)
	defer cancel()
	_, err := requester.RequestStream(ctx, client.ToSession(silent.ID()), "ping", nil, 30*time.Second, func(wire.MsgResult) {})
	if !errors.Is(err, client.ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
}
