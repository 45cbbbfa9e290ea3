package roster_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
)

// TestWaitEndsWhenTheEmbeddedServerShutsDown: a process whose embedded server shuts
// down on its own (nats-server does, when OCSP revokes a must-staple certificate)
// fails: Wait returns the failure, and roster serve exits. It stayed up, every
// service reconnecting to a server that would never come back: live, never ready,
// never restarted (found by review).
func TestWaitEndsWhenTheEmbeddedServerShutsDown(t *testing.T) {
	p := rostertest.Start(t)
	p.Server().Shutdown()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	err := p.Wait(ctx)
	if want := "the embedded NATS server shut down"; ctx.Err() != nil || err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Wait: %v (its ctx: %v), want the failure %q", err, ctx.Err(), want)
	}
}
