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
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestRequestStreamOnAttachedSession: a session opened on one connection and
// attached on another (roster request --session-id does exactly this) streams its
// request results to the opener's connection key, which the attaching connection
// cannot read: RequestStream gets none of them.
func TestRequestStreamOnAttachedSession(t *testing.T) {
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
	p := rostertest.Start(t)
	ctx := ctxT(t)
	receiver := open(t, p.ClientURL(), client.Options{})
	var started atomic.Int64
	release := make(chan struct{})
	remove, err := receiver.Handle("busy", func(context.Context, *client.Message) ([]byte, error) {
		started.Add(1)
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
	time.Sleep(200 * time.Millisecond) // the last message reaches its subscription
	removed := make(chan error, 1)
	go func() { removed <- remove() }()
	time.Sleep(100 * time.Millisecond) // the removal is under way
	close(release)
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if n := started.Load(); n != client.MaxHandlers {
		t.Fatalf("%d handlers ran; the message waiting for a slot at the removal was handled", n)
	}
}

// TestRequestStreamDeadlineIsATimeout: a streamed request whose results are still
// missing at the caller's deadline fails with ErrTimeout, as Request does. It used
// to fail with a bare context error, which matched no SDK error (and made roster
// request exit 1 instead of 6).
func TestRequestStreamDeadlineIsATimeout(t *testing.T) {
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
