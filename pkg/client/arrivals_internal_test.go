package client

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

// TestWaitingDeliveriesAreBoundedInBytesWithTheirHeaders: a registration's queue of
// deliveries waiting for a handler slot holds at most maxWaitingBytes, and a
// delivery's headers are bytes it holds as much as its payload. The bound counted
// payloads alone, so deliveries carrying their weight in headers (32 of 4,096
// characters each, all a sender may add) with no payload passed it freely: 255 of
// them, 32 MiB with ASCII values and four times that with 4-byte characters, where
// the bound says 16 MiB.
//
// The queue is filled to its bound, then offered more with an ended context: a
// put over the bound returns at once without queueing, while a put within it may
// queue (the ended context and the free room are both ready).
func TestWaitingDeliveriesAreBoundedInBytesWithTheirHeaders(t *testing.T) {
	t.Parallel()
	heavy := func(i int) *nats.Msg {
		m := nats.NewMsg(fmt.Sprintf("roster.v1.deliver.k.s.work.%d", i))
		for h := range 32 {
			m.Header.Set(fmt.Sprintf("X-H%d", h), strings.Repeat("v", 4096))
		}
		return m
	}
	size := heavy(0).Size()
	fit := maxWaitingBytes / size
	if fit >= maxHandlers {
		t.Fatalf("a delivery of %d bytes: %d fit in the bound, not fewer than the queue's %d places", size, fit, maxHandlers)
	}
	q := newArrivals()
	ctx := context.Background()
	for i := range fit {
		q.put(ctx, arrival{m: heavy(i)})
	}
	ended, cancel := context.WithCancel(ctx)
	cancel()
	for i := range 20 {
		q.put(ended, arrival{m: heavy(fit + i)})
	}
	if n := len(q.ch); n > fit {
		t.Errorf("the queue holds %d deliveries of %d bytes (%d MiB); its bound is %d MiB (%d of them)",
			n, size, n*size>>20, maxWaitingBytes>>20, fit)
	}
}
