package client_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestCallsCarryTheirDeadline: the SDK's requests to the services give the time
// left before their context's deadline (Roster-Timeout), so that a service stops
// work the caller has given up on; a context without a deadline gives none. A plain
// subscriber in the services account sees a copy of every request. Before, no
// request carried a deadline.
func TestCallsCarryTheirDeadline(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	nc, err := p.Server().ConnectService()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	seen := make(chan nats.Header, 4)
	sub, err := nc.Subscribe(wire.SubjectSessionUpdate, func(m *nats.Msg) { seen <- m.Header })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	s := open(t, p.ClientURL(), client.Options{})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.SetProperties(ctx, map[string]string{"Desk": "FX"}); err != nil {
		t.Fatal(err)
	}
	h := <-seen
	ms, err := strconv.ParseInt(h.Get(wire.HeaderTimeout), 10, 64)
	if err != nil || ms <= 0 || ms > 20000 {
		t.Fatalf("%s: got %q, want the milliseconds left of 20 s", wire.HeaderTimeout, h.Get(wire.HeaderTimeout))
	}
	if err := s.SetProperties(context.Background(), map[string]string{"Desk": "Rates"}); err != nil {
		t.Fatal(err)
	}
	if h := <-seen; h.Get(wire.HeaderTimeout) != "" {
		t.Fatalf("without a deadline: %s %q, want none", wire.HeaderTimeout, h.Get(wire.HeaderTimeout))
	}
}
