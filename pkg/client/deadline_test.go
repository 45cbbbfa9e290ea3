package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
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
