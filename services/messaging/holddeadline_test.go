package messaging

import (
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestRequestAnswersBeforeTheRequestersDeadline: a request whose requester gives a
// deadline (Roster-Timeout, 3 s) shorter than its timeout_ms (60 s) is answered
// before that deadline with the results in by then — the receiver that has not
// answered reported timeout — and the receivers are told the shorter time. Before,
// the service waited the whole 60 s for the slow receiver and answered after its
// requester had given up, and the receivers were given 60 s.
func TestRequestAnswersBeforeTheRequestersDeadline(t *testing.T) {
	e := newEnv(t, Config{})
	from := e.open(t, "sender", nil)
	ok := e.open(t, "ok", map[string]string{"Group": "g"})
	slow := e.open(t, "slow", map[string]string{"Group": "g"})
	e.receive(t, ok, func(m *nats.Msg) { _ = m.Respond([]byte("pong")) })
	silent := e.receive(t, slow, nil)
	var resp wire.MsgRequestResponse
	if err := natstest.CallGivingTimeout(t, e.cc, wire.SubjectMsgRequest, from.header(),
		wire.MsgRequestRequest{Message: wire.Message{Filter: `Group is "g"`, Path: "orders/ask", Payload: []byte("ping")}, TimeoutMS: 60000}, 3000, &resp); err != nil {
		t.Fatal(err)
	}
	want := map[string]wire.MsgStatus{ok.id: wire.StatusOK, slow.id: wire.StatusTimeout}
	if len(resp.Results) != len(want) {
		t.Fatalf("got %d results, want %d", len(resp.Results), len(want))
	}
	for _, r := range resp.Results {
		if r.Status != want[r.SessionID] {
			t.Errorf("session %s: got %s, want %s", r.SessionID, r.Status, want[r.SessionID])
		}
	}
	silent.mu.Lock()
	defer silent.mu.Unlock()
	if len(silent.msgs) != 1 {
		t.Fatalf("the silent receiver got %d deliveries, want 1", len(silent.msgs))
	}
	for _, d := range silent.msgs {
		if ms, err := strconv.Atoi(d.Header.Get(wire.HeaderTimeout)); err != nil || ms > 3000 {
			t.Errorf("a receiver was given %q ms to answer, want at most the requester's 3000", d.Header.Get(wire.HeaderTimeout))
		}
	}
}
