package client

import (
	"context"
	"errors"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
)

// TestReconnectsInQuickSuccessionKeepOneEpoch: the reconnect handler runs on its own
// goroutine, so after a reconnect, a drop and another reconnect, both handlers can
// run while connected. The second used to replace the epoch the first had started:
// calls made in between kept an epoch no later loss would end, and waited out their
// own deadline instead of failing at once with ErrUnavailable.
func TestReconnectsInQuickSuccessionKeepOneEpoch(t *testing.T) {
	srv := rostertest.Start(t)
	c, err := Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())

	c.disconnected(errors.New("gone"))
	c.reconnected()
	c.mu.Lock()
	first := c.epoch // what a call made now waits on
	c.mu.Unlock()
	c.reconnected() // the second reconnect's handler, running late
	c.disconnected(errors.New("gone again"))
	if !errors.Is(context.Cause(first), errConnectionLost) {
		t.Fatalf("a call made between the two reconnect handlers is not ended by the next loss: cause %v", context.Cause(first))
	}
}
