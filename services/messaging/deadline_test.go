package messaging

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestReceiverHasItsTimeoutFromThePublish holds a request's publishing back for longer
// than its timeout, as a long fan-out (or a loaded machine) holds back the deliveries
// to its last receivers: a receiver answering at once, well within the Roster-Timeout
// it was given, gets its answer counted. The service counted the timeout from before
// its publishes, so such a receiver was reported timeout, its answer dropped, though
// its handler had the whole timeout left.
func TestReceiverHasItsTimeoutFromThePublish(t *testing.T) {
	const timeout = time.Second
	e := newEnv(t, Config{})
	from := e.open(t, "sender", nil)
	to := e.open(t, "quick", nil)
	answered := make(chan string, 1)
	e.receive(t, to, func(m *nats.Msg) {
		answered <- m.Header.Get(wire.HeaderTimeout)
		_ = m.Respond([]byte("at once"))
	})

	// The fan-out takes the receiver's in-flight slot just before publishing to it:
	// holding the counter's lock holds the publish back.
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
		reply, err := e.call(from, wire.SubjectMsgRequest, wire.MsgRequestRequest{
			Message: wire.Message{SessionID: to.id, Path: "chat/x"}, TimeoutMS: timeout.Milliseconds()})
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
	// The scenario itself, not a wait for a condition: the publish comes later than
	// the timeout after the fan-out began.
	<-time.After(timeout + timeout/2)
	e.msg.fan.inflight.mu.Unlock()
	locked = false

	o := <-done
	if o.err != nil {
		t.Fatalf("request: %v", o.err)
	}
	var resp wire.MsgRequestResponse
	if err := json.Unmarshal(o.reply.Data, &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.Results) != 1 {
		t.Fatalf("got %d results, want 1", len(resp.Results))
	}
	if r := resp.Results[0]; r.Status != wire.StatusOK || string(r.Payload) != "at once" {
		t.Fatalf("got %s (%v), want ok with the receiver's answer: it answered at once, within the %v it was given", r.Status, r.Error, timeout)
	}
	select {
	case got := <-answered:
		if want := "1000"; got != want {
			t.Errorf("delivery's %s: got %q, want %q", wire.HeaderTimeout, got, want)
		}
	default:
		t.Error("the receiver got no delivery")
	}
}
