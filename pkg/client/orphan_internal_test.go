package client

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestOpenAnsweredAfterCloseBeganClosesTheSession: an open whose reply comes after
// Client.Close began cannot register its session (add), and used to leave it open
// on the server until its timeout. It is closed there now, before Open returns.
func TestOpenAnsweredAfterCloseBeganClosesTheSession(t *testing.T) {
	t.Parallel()
	srv := rostertest.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	observer, err := Open(ctx, srv.ClientURL(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer observer.Close(context.Background())
	c, err := Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	// Where Close stands once it has taken the sessions to close, before it closes
	// the connection.
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	if _, err := c.Open(ctx, Options{Timeout: time.Hour}); err != errClosedConn {
		t.Fatalf("open on a closing client: got %v, want %v", err, errClosedConn)
	}
	page, err := observer.ListSessions(ctx, wire.SessionListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range page.Sessions {
		if s.ID != observer.ID() {
			t.Errorf("session %s (%s) is left open on the server", s.ID, s.State)
		}
	}
}

// TestCloseWaitsForTheCloseOfALateOpen: Client.Close does not close the connection
// under the close of a session opened as it began (closeOrphan), and none starts
// once it has closed the connection.
func TestCloseWaitsForTheCloseOfALateOpen(t *testing.T) {
	t.Parallel()
	srv := rostertest.Start(t)
	c, err := Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	if !c.beginOrphanClose() {
		t.Fatal("no orphan close before Close")
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close(context.Background()) }()
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.orphansDone == nil {
			return errNotWaiting
		}
		return nil
	})
	if c.nc.IsClosed() {
		t.Fatal("Close closed the connection under an orphan's close")
	}
	c.orphanClosed()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if !c.nc.IsClosed() {
		t.Fatal("connection left open")
	}
	if c.beginOrphanClose() {
		t.Error("an orphan close began after Close")
	}
}

var errNotWaiting = errors.New("Close does not wait for the orphan yet")
