package messaging

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

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

// TestSlowFanOutStillAnswersBeforeTheRequestersDeadline holds a request's publishing
// back (as a long fan-out or a loaded machine does) while its requester, which gave
// 2 s, waits: the answer must still reach the requester before it gives up, with
// the receiver that could not answer in time reported timeout. The service counted
// its whole wait from the end of the publishes, so the answer came that much after
// the requester's deadline, and the requester lost every result (timeout).
func TestSlowFanOutStillAnswersBeforeTheRequestersDeadline(t *testing.T) {
	const deadline = 2 * time.Second
	e := newEnv(t, Config{})
	from := e.open(t, "sender", nil)
	quick := e.open(t, "quick", map[string]string{"Group": "g"})
	silent := e.open(t, "silent", map[string]string{"Group": "g"})
	e.receive(t, quick, func(m *nats.Msg) { _ = m.Respond([]byte("at once")) })
	silentR := e.receive(t, silent, nil)

	// The fan-out takes each receiver's in-flight slot just before publishing to
	// it: holding the counter's lock holds the publishes back.
	e.msg.fan.inflight.mu.Lock()
	locked := true
	defer func() {
		if locked {
			e.msg.fan.inflight.mu.Unlock()
		}
	}()
	type outcome struct {
		reply *nats.Msg
		err   error
	}
	done := make(chan outcome, 1)
	go func() {
		body, _ := json.Marshal(wire.MsgRequestRequest{Message: wire.Message{Filter: `Group is "g"`, Path: "orders/ask"}, TimeoutMS: 60000})
		// The requester waits as long as it told the service (Roster-Timeout).
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		reply, err := wire.CallRaw(ctx, e.cc, wire.SubjectMsgRequest, from.header(), body)
		done <- outcome{reply, err}
	}()
	natstest.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		e.msg.fan.mu.Lock()
		defer e.msg.fan.mu.Unlock()
		if len(e.msg.fan.gathers) == 0 {
			return errors.New("the request has not begun its fan-out")
		}
		return nil
	})
	// The scenario itself, not a wait for a condition: the publishes come three
	// quarters of the requester's time after the fan-out began.
	<-time.After(deadline * 3 / 4)
	e.msg.fan.inflight.mu.Unlock()
	locked = false

	o := <-done
	if o.err != nil {
		t.Fatalf("the requester gave %v and got no answer in that time: %v", deadline, o.err)
	}
	var resp wire.MsgRequestResponse
	if err := json.Unmarshal(o.reply.Data, &resp); err != nil {
		t.Fatal(err)
	}
	want := map[string]wire.MsgStatus{quick.id: wire.StatusOK, silent.id: wire.StatusTimeout}
	if len(resp.Results) != len(want) {
		t.Fatalf("got %d results, want %d", len(resp.Results), len(want))
	}
	for _, r := range resp.Results {
		if r.Status != want[r.SessionID] {
			t.Errorf("session %s: got %s (%v), want %s", r.SessionID, r.Status, r.Error, want[r.SessionID])
		}
	}
	// Published at least three quarters of the way, a receiver has at most the
	// last quarter, and is told no more.
	d := silentR.next(t)
	if ms, err := strconv.Atoi(d.Header.Get(wire.HeaderTimeout)); err != nil || ms > int((deadline/4).Milliseconds()) {
		t.Errorf("a receiver published after %v of the requester's %v was given %q ms to answer", deadline*3/4, deadline, d.Header.Get(wire.HeaderTimeout))
	}
}
