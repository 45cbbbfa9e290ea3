package client_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestCloseWhileReconnectingClosesOnTheServer: a Close made while the connection is
// away waits for it to be back and closes the session on the server, which releases
// its locks at once. Before, the close was not sent (ErrNotSent), the session was
// closed on this side only, and the server kept it, with its locks, until its
// reconnect window ended; a second Close sent nothing either (found by review).
func TestCloseWhileReconnectingClosesOnTheServer(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	proxy := natstest.StartPartition(t, p.ClientURL())
	c := connect(t, proxy.URL())
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s, err := c.Open(ctx, client.Options{Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lock(ctx, "close-away/held", client.LockOptions{}); err != nil {
		t.Fatal(err)
	}
	other := open(t, p.ClientURL(), client.Options{})

	proxy.Cut()
	waitFor(t, func() error {
		if st := c.Conn().Status(); st != nats.RECONNECTING {
			return fmt.Errorf("connection %v, want RECONNECTING", st)
		}
		return nil
	})
	closed := make(chan error, 1)
	go func() { closed <- s.Close(ctx) }()
	// nats.go tries again every 250 ms: the Close above is made while the
	// connection is away, long before it is back.
	proxy.Heal()
	if err := <-closed; err != nil {
		t.Fatalf("Close while reconnecting: %v", err)
	}
	// The lock service learns of the close from its view of the sessions, a
	// moment after the reply; left to the reconnect window, it took 30 s.
	waitFor(t, func() error {
		if _, err := other.TryLock(ctx, "close-away/held", client.LockOptions{}); err != nil {
			return fmt.Errorf("the closed session's lock is still held: %w", err)
		}
		return nil
	})
	page, err := other.ListSessions(ctx, wire.SessionListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, got := range page.Sessions {
		if got.ID == s.ID() {
			t.Errorf("session %s is still %s on the server", got.ID, got.State)
		}
	}
}
