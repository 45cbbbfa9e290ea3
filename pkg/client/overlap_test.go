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

// TestOverlappingRegistrationsAnswerARequest: registrations of one session that
// overlap ("*" and a path, or one path twice) each get every delivery once, and a
// request to them is answered by whichever answers first, as Handle says. Each
// registration was a subscription of its own, so the server delivered a message to
// the connection once per registration; its check of the reply permission (one
// answer within a minute) at the second delivery used up that one answer, and both
// handlers' answers were refused (a permissions violation): the requester got
// timeout.
func TestOverlappingRegistrationsAnswerARequest(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	asker := open(t, p.ClientURL(), client.Options{})
	for _, tc := range []struct {
		name  string
		paths []string
	}{
		{"every path and the path", []string{"*", "quote"}},
		{"the path twice", []string{"quote", "quote"}},
		{"one registration", []string{"quote"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxT(t)
			s := open(t, p.ClientURL(), client.Options{})
			calls := make([]atomic.Int32, len(tc.paths))
			for i, path := range tc.paths {
				if _, err := s.Handle(path, func(context.Context, *client.Message) ([]byte, error) {
					calls[i].Add(1)
					return []byte(fmt.Sprint("answered by ", i)), nil
				}); err != nil {
					t.Fatal(err)
				}
			}
			res, err := asker.Request(ctx, client.ToSession(s.ID()), "quote", nil, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Results) != 1 || res.Results[0].Status != wire.StatusOK {
				t.Fatalf("got %+v, want one result, ok", res.Results)
			}
			if _, err := asker.Send(ctx, client.ToSession(s.ID()), "quote", nil); err != nil {
				t.Fatal(err)
			}
			waitFor(t, func() error {
				for i := range calls {
					if n := calls[i].Load(); n != 2 {
						return fmt.Errorf("registration %d (%s) was called %d times, want 2: the request and the send", i, tc.paths[i], n)
					}
				}
				return nil
			})
		})
	}
}
