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

// TestDeadlineOfAWaitingRequestCountsFromItsArrival: with every handler slot of a
// registration taken, deliveries wait for one. The subscription's callback, which
// stamps a request's arrival, waited for a slot with the first of them in hand, so
// the ones behind it were stamped only when it got one: a request's handler that
// started after the requester had been answered timeout still had the whole
// timeout before it. A request's deadline now counts from its arrival at the
// client: it falls before the moment the slots freed plus the timeout.
func TestDeadlineOfAWaitingRequestCountsFromItsArrival(t *testing.T) {
	p := rostertest.Start(t)
	receiver := open(t, p.ClientURL(), client.Options{})
	var busy atomic.Int64
	release := make(chan struct{})
	defer close(release)
	deadlines := make(chan time.Time, 1)
	if _, err := receiver.Handle("work", func(ctx context.Context, m *client.Message) ([]byte, error) {
		if m.IsRequest {
			d, _ := ctx.Deadline()
			deadlines <- d
			return nil, nil
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
	const timeout = time.Second
	res, err := sender.Request(ctxT(t), to, "work", nil, timeout)
	if err != nil || len(res.Results) != 1 || res.Results[0].Status != wire.StatusTimeout {
		t.Fatalf("request to a receiver with every slot busy: got %+v, %v; want a timeout result", res, err)
	}
	// The requester has been answered: the request arrived long ago. Free a slot
	// for the send ahead of it, and one for it.
	freed := time.Now()
	release <- struct{}{}
	release <- struct{}{}
	select {
	case d := <-deadlines:
		if !d.Before(freed.Add(timeout)) {
			t.Fatalf("the waiting request's handler has until %v after the slots freed, want less than %v: its deadline counts from its arrival",
				d.Sub(freed), timeout)
		}
	case <-ctxT(t).Done():
		t.Fatal("the waiting request was never handled")
	}
}
