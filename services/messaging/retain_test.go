package messaging

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestRequestsInProgressDoNotHoldTheirPayloads: a request in progress waits up to a
// minute for its receivers, and the instance gathers thousands at once (MaxRequests
// and MaxStreams, 4,096 each): each held its payload, up to max_payload, until its
// results were in, though every delivery was out (nats.go copies what it publishes).
// Here 64 requests of 256 KiB to a receiver that does not answer, half of them
// streamed, must not keep the 16 MiB of their payloads.
func TestRequestsInProgressDoNotHoldTheirPayloads(t *testing.T) {
	const n, size = 64, 256 << 10
	e := newEnv(t, Config{DrainTimeout: time.Second})
	sink := e.open(t, "sink", nil)
	// The receiver keeps the reply subjects only: the deliveries' payloads are not
	// what is measured.
	var mu sync.Mutex
	var pending []string
	rc := e.srv.ClientConn(t)
	if _, err := rc.Subscribe(wire.SessionDeliverPrefix("", sink.id)+".>", func(m *nats.Msg) {
		mu.Lock()
		pending = append(pending, m.Reply)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := rc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range pending {
			_ = rc.Publish(r, nil)
		}
	})
	delivered := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(pending)
	}
	inbox := e.cc.NewInbox()
	replies := natstest.Subscribe(t, e.cc, inbox, n)
	senders := []session{e.open(t, "sender", nil), e.open(t, "direct", nil)}

	before := heapInUse()
	for i := range n {
		req := wire.MsgRequestRequest{Message: wire.Message{SessionID: sink.id, Path: "chat/big", Payload: make([]byte, size)}, TimeoutMS: wire.MaxRequestTimeoutMS}
		if i%2 == 1 {
			req.StreamID = fmt.Sprint(i)
		}
		req.Payload[0] = byte(i) // each its own
		body, _ := json.Marshal(req)
		if err := e.cc.PublishMsg(&nats.Msg{Subject: wire.SubjectMsgRequest, Reply: inbox, Header: senders[i%2].header(), Data: body}); err != nil {
			t.Fatal(err)
		}
	}
	natstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if got := delivered(); got < n {
			return fmt.Errorf("%d of %d requests delivered", got, n)
		}
		return nil
	})
	held := heapInUse() - before
	if limit := uint64(n * size / 4); held > limit {
		t.Fatalf("%d requests of %d KiB in progress hold %.1f MiB, more than a quarter of their payloads (%.1f MiB)", n, size>>10, float64(held)/(1<<20), float64(limit)/(1<<20))
	}
	t.Logf("%d requests of %d KiB in progress hold %.1f MiB", n, size>>10, float64(held)/(1<<20))
	if len(replies) > n/2 { // only the streamed ones are answered (stream started)
		t.Fatalf("%d answers before any receiver answered", len(replies))
	}
}
