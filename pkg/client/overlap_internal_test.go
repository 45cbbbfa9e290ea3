package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestRemovingAnOverlappingRegistrationLosesNoDelivery: a session's subscriptions
// are one queue group, so the server hands a request on "quote" to the "*"
// registration's subscription or to the "quote" one, and the SDK passes it on to
// both registrations (fanOut). Removing "*" while requests were queued in its
// subscription dropped them with the subscription, although "quote" still handles
// them: their requesters got timeout. Here the deliveries are held up in the
// subscriptions (the "quote" registration's hand-over is held) while "*" is
// removed; every request must still be answered.
func TestRemovingAnOverlappingRegistrationLosesNoDelivery(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Open(ctx, p.ClientURL(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close(context.Background()) }()
	asker, err := Open(ctx, p.ClientURL(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = asker.Close(context.Background()) }()

	removeStar, err := s.Handle("*", func(context.Context, *Message) ([]byte, error) { return []byte("star"), nil })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Handle("quote", func(context.Context, *Message) ([]byte, error) { return []byte("quote"), nil }); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	var quote *route
	for r := range s.routes {
		if r.path == "quote" {
			quote = r
		}
	}
	s.mu.Unlock()
	quote.mu.Lock() // every hand-over waits here: the deliveries stay in the subscriptions
	held := true
	defer func() {
		if held {
			quote.mu.Unlock()
		}
	}()

	const requests = 16
	var wg sync.WaitGroup
	errs := make(chan error, requests)
	for i := range requests {
		wg.Go(func() {
			res, err := asker.Request(ctx, ToSession(s.ID()), "quote", nil, 5*time.Second, MessageID(fmt.Sprint("q", i)))
			switch {
			case err != nil:
				errs <- err
			case len(res.Results) != 1 || res.Results[0].Status != wire.StatusOK:
				errs <- fmt.Errorf("request %d: got %+v, want one answer, ok", i, res.Results)
			}
		})
	}
	// Every request has reached the connection (some more than once: the SDK sends
	// a request again when an attempt is not answered soon), and more than the one
	// its callback holds waits in the "*" registration's subscription.
	natstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		total, star := 0, 0
		for sub := range s.handlers {
			pending, _, _ := sub.Pending()
			delivered, _ := sub.Delivered()
			total += pending + int(delivered)
			if sub.Subject != deliverSubjectOf(s, "quote") {
				star = pending
			}
		}
		if total < requests || star == 0 {
			return fmt.Errorf("%d of %d requests at the connection, %d waiting in the \"*\" subscription", total, requests, star)
		}
		return nil
	})
	if err := removeStar(); err != nil {
		t.Fatal(err)
	}
	quote.mu.Unlock()
	held = false
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	if err := errors.Join(all...); err != nil {
		t.Fatalf("requests to \"quote\" not answered once \"*\" was removed:\n%v", err)
	}
}

// deliverSubjectOf is the subject of s's registration of path.
func deliverSubjectOf(s *Session, path string) string {
	return wire.DeliverSubject(s.c.key, s.ID(), path)
}
