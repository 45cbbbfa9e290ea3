package client_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestHandlerOfARequestHasItsDeadline: a handler answering a request had a context
// without a deadline, so it could work on long after the messaging service had
// stopped waiting and its answer could reach no one. Its context now ends when the
// service stops waiting (the request's timeout, from the delivery's arrival); a
// send's handler has no deadline.
func TestHandlerOfARequestHasItsDeadline(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	receiver := open(t, p.ClientURL(), client.Options{})
	type seen struct {
		deadline time.Time
		ok       bool
		now      time.Time
	}
	got := make(chan seen, 2)
	if _, err := receiver.Handle("work", func(ctx context.Context, m *client.Message) ([]byte, error) {
		d, ok := ctx.Deadline()
		got <- seen{d, ok, time.Now()}
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	sender := open(t, p.ClientURL(), client.Options{})
	const timeout = 3 * time.Second
	sent := time.Now()
	if _, err := sender.Request(ctxT(t), client.ToSession(receiver.ID()), "work", nil, timeout); err != nil {
		t.Fatal(err)
	}
	r := <-got
	// The delivery arrived after it was sent and before the handler ran.
	if !r.ok || r.deadline.Before(sent.Add(timeout)) || r.deadline.After(r.now.Add(timeout)) {
		t.Fatalf("request handler's deadline: %v (set: %v); want one %v after the delivery's arrival", r.deadline.Sub(sent), r.ok, timeout)
	}
	if _, err := sender.Send(ctxT(t), client.ToSession(receiver.ID()), "work", nil); err != nil {
		t.Fatal(err)
	}
	if r := <-got; r.ok {
		t.Fatalf("a send's handler has a deadline %v away", r.deadline.Sub(r.now))
	}
}

// TestRequestWhoseDeadlinePassedWhileWaitingIsNotHandled: with every handler slot
// of a registration taken, deliveries wait for one. A request's deadline counts from
// its arrival at the client (the subscription's callback stamps it and queues the
// delivery at once; it used to wait for a slot with the delivery in hand, and the
// ones behind it were stamped only when it got one). A request still waiting when
// that deadline passes is dropped when a slot frees, not handled: its requester has
// been answered timeout and the answer would reach no one. Its handler used to start
// all the same, with a context already ended. The drop is on the delivery's span;
// a copy of it (the requester's retry, same message id) is handled as new, not taken
// for a duplicate of a message that was never answered.
func TestRequestWhoseDeadlinePassedWhileWaitingIsNotHandled(t *testing.T) {
	tr := newTracing(t)
	p := rostertest.Start(t)
	receiver := tr.open(t, p.ClientURL(), client.Options{})
	var busy atomic.Int64
	release := make(chan struct{})
	defer close(release)
	handled := make(chan string, 4) // the payloads of the requests handled, and the marker
	if _, err := receiver.Handle("work", func(ctx context.Context, m *client.Message) ([]byte, error) {
		if m.IsRequest || string(m.Payload) == "marker" {
			handled <- string(m.Payload)
			return []byte("done"), nil
		}
		busy.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	sender := open(t, p.ClientURL(), client.Options{})
	to := client.ToSession(receiver.ID())
	// Every slot taken, and one send more waiting for a slot ahead of the request.
	for range client.MaxHandlers + 1 {
		if _, err := sender.Send(ctxT(t), to, "work", nil); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() error {
		if n, d := busy.Load(), client.HandlerDeliveries(receiver); n != client.MaxHandlers || d != client.MaxHandlers+1 {
			return fmt.Errorf("%d handlers busy and %d messages taken, want %d and %d", n, d, client.MaxHandlers, client.MaxHandlers+1)
		}
		return nil
	})
	const timeout = 200 * time.Millisecond
	res, err := sender.Request(ctxT(t), to, "work", []byte("late"), timeout, client.MessageID("late-1"))
	if err != nil || len(res.Results) != 1 || res.Results[0].Status != wire.StatusTimeout {
		t.Fatalf("request to a receiver with every slot busy: got %+v, %v; want a timeout result", res, err)
	}
	// The request arrived before its requester was answered timeout, so its
	// deadline (arrival + timeout) is behind us once another timeout has passed.
	time.Sleep(timeout)
	// A marker behind the request: once its handler runs, the request has been
	// taken from the queue.
	if _, err := sender.Send(ctxT(t), to, "work", []byte("marker")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() error {
		if d := client.HandlerDeliveries(receiver); d != client.MaxHandlers+3 {
			return fmt.Errorf("%d messages taken, want %d", d, client.MaxHandlers+3)
		}
		return nil
	})
	// Free a slot for the send ahead of the request, and one for the request.
	release <- struct{}{}
	release <- struct{}{}
	select {
	case got := <-handled:
		if got != "marker" {
			t.Fatalf("handled the request %q after its deadline had passed, want it dropped", got)
		}
	case <-ctxT(t).Done():
		t.Fatal("the marker behind the request was never handled")
	}
	dropped := 0
	for _, sp := range tr.rec.Ended() {
		for _, ev := range sp.Events() {
			if sp.Name() == "process work" && ev.Name == "dropped: its deadline passed before a handler was free" {
				dropped++
			}
		}
	}
	if dropped != 1 {
		t.Errorf("%d process spans say the request was dropped, want 1", dropped)
	}

	// The requester's retry of the message is handled: the dropped one was not
	// handled, so there is no answer to give a copy.
	res, err = sender.Request(ctxT(t), to, "work", []byte("late"), 5*time.Second, client.MessageID("late-1"))
	if err != nil || len(res.Results) != 1 || res.Results[0].Status != wire.StatusOK || string(res.Results[0].Payload) != "done" {
		t.Fatalf("retry of the dropped request: got %+v, %v; want it handled", res, err)
	}
	if got := <-handled; got != "late" {
		t.Fatalf("handled %q, want the retry", got)
	}
}
