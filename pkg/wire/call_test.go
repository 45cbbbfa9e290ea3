package wire_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestCallSendsTheTimeout: Call gives the service the time left before its
// context's deadline (Roster-Timeout, whole milliseconds, never more than was
// left), and sends no such header when the context has none. Before, a request
// carried no deadline, and the service could not know when its caller gave up.
func TestCallSendsTheTimeout(t *testing.T) {
	s := natstest.Start(t)
	nc := s.ClientConn(t)
	got := make(chan []string, 1)
	natstest.Responder(t, nc, "roster.v1.test.echo", func(m *nats.Msg) error {
		got <- m.Header.Values(wire.HeaderTimeout)
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := wire.Call(ctx, nc, "roster.v1.test.echo", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	v := <-got
	if len(v) != 1 {
		t.Fatalf("%s: got %q, want one value", wire.HeaderTimeout, v)
	}
	ms, err := strconv.ParseInt(v[0], 10, 64)
	if err != nil || ms <= 0 || ms > 30000 {
		t.Fatalf("%s: got %q, want the milliseconds left of 30 s", wire.HeaderTimeout, v[0])
	}
	if _, err := wire.ParseTimeout(v[0]); err != nil {
		t.Fatalf("the service refuses what Call sends: %v", err)
	}
	// No deadline, no header (the call waits as long as the responder takes).
	if err := wire.Call(context.WithoutCancel(ctx), nc, "roster.v1.test.echo", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if v := <-got; len(v) != 0 {
		t.Fatalf("without a deadline: %s %q, want none", wire.HeaderTimeout, v)
	}
}

func TestParseTimeout(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"0", 0, true},
		{"1", time.Millisecond, true},
		{"1500", 1500 * time.Millisecond, true},
		{"0120000", wire.MaxTimeout, true},
		{"120001", wire.MaxTimeout, true},
		{"9223372036854775807", wire.MaxTimeout, true}, // would overflow as a Duration
		{"99999999999999999999999999", wire.MaxTimeout, true},
		{"", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{"1.5", 0, false},
		{"1e3", 0, false},
		{"10ms", 0, false},
		{"0x10", 0, false},
		{"１", 0, false}, // a fullwidth digit
	} {
		d, err := wire.ParseTimeout(tt.in)
		if tt.ok && (err != nil || d != tt.want) {
			t.Errorf("ParseTimeout(%q) = %v, %v; want %v", tt.in, d, err, tt.want)
		}
		if !tt.ok && !errors.Is(err, wire.ErrBadRequest) {
			t.Errorf("ParseTimeout(%q) = %v, %v; want bad_request", tt.in, d, err)
		}
	}
}
