package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestFollowEventsEndsWithItsClient: Client.Close leaves a session taken with Attach
// open on the server, and every later call on it fails with ErrUnavailable. A
// FollowEvents of such a session took that for Roster being away for a moment and
// read again every 2 s for as long as its ctx lived, forever for one that never
// ends: a goroutine, and a read every 2 s, left behind by the closed Client. It
// returns the error now, as the calls of a session opened on the Client return
// ErrSessionClosed.
func TestFollowEventsEndsWithItsClient(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	opener := open(t, p.ClientURL(), client.Options{})
	c, attached := attachClient(t, p.ClientURL(), opener)
	follow, stop := context.WithCancel(context.Background()) // ended only by the test's end
	defer stop()
	ended := make(chan error, 1)
	go func() {
		ended <- attached.FollowEvents(follow, wire.SessionEventsRequest{SessionID: attached.ID()}, func(wire.StoredSessionEvent) error { return nil })
	}()
	if err := c.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := within(t, "FollowEvents of an attached session once its Client is closed", ended); !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("FollowEvents once its Client is closed: got %v, want ErrUnavailable", err)
	}
}

// TestWaitActiveEndsWithItsClient: a session taken with Attach that is RECOVERING
// when its Client is closed is served here no more and will never be resumed here.
// WaitActive waited for a resume that could not come, for as long as its ctx lived;
// it fails with ErrUnavailable now, as the session's other calls do.
func TestWaitActiveEndsWithItsClient(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	opener := open(t, p.ClientURL(), client.Options{})
	proxy := natstest.StartPartition(t, p.ClientURL())
	c, err := client.Connect(proxy.URL())
	if err != nil {
		t.Fatal(err)
	}
	attached, err := c.Attach(ctxT(t), opener.ID(), opener.Token(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	proxy.Cut()
	waitFor(t, func() error {
		if s := attached.State(); s != client.StateRecovering {
			return fmt.Errorf("state %s, want RECOVERING", s)
		}
		return nil
	})
	wait, stop := context.WithCancel(context.Background()) // ended only by the test's end
	defer stop()
	ended := make(chan error, 1)
	go func() { ended <- attached.WaitActive(wait) }()
	if err := c.Close(ctxT(t)); err != nil && !errors.Is(err, client.ErrUnavailable) {
		t.Fatal(err)
	}
	if err := within(t, "WaitActive of an attached session once its Client is closed", ended); !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("WaitActive once its Client is closed: got %v, want ErrUnavailable", err)
	}
}
