package messaging

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestOnePrincipalCannotHoldEveryRequestSlot: a request holds one of the instance's
// handler slots until its receivers answer or its timeout, up to a minute. The bound
// of requests per session (MaxSenderRequests) kept one session from holding every
// slot, but not one principal: a user opening a few sessions of its own (four at the
// defaults, 64 × 4 = 256) asked a receiver that never answers and held them all, and
// every other principal's send and request waited. The sessions of one principal now
// hold at most half of the slots.
func TestOnePrincipalCannotHoldEveryRequestSlot(t *testing.T) {
	forEachView(t, func(t *testing.T, newEnv func(*testing.T, Config) *env) {
		const slots, apiece, sessions = 8, 2, 4 // sessions × apiece = slots
		e := newEnv(t, Config{MaxConcurrent: slots, MaxSenderRequests: apiece})
		sink := e.open(t, "sender", nil)
		r := e.receive(t, sink, nil) // never answers
		t.Cleanup(func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			for _, m := range r.msgs {
				_ = m.Respond(nil)
			}
		})

		replies := make(chan *nats.Msg, sessions*apiece)
		inbox := e.cc.NewInbox()
		sub, err := e.cc.ChanSubscribe(inbox, replies)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
		body, _ := json.Marshal(wire.MsgRequestRequest{Message: wire.Message{SessionID: sink.id, Path: "chat/slow"}, TimeoutMS: wire.MaxRequestTimeoutMS})
		for range sessions {
			s := e.open(t, "sender", nil)
			for range apiece {
				if err := e.cc.PublishMsg(&nats.Msg{Subject: wire.SubjectMsgRequest, Reply: inbox, Header: s.header(), Data: body}); err != nil {
					t.Fatal(err)
				}
			}
		}
		// Every request has been delivered (it holds a slot) or refused.
		var refused []string
		natstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
			for len(replies) > 0 {
				m := <-replies
				if err := wire.ReplyError(m); !errors.Is(err, wire.ErrLimitExceeded) {
					t.Fatalf("a request of the principal: got %v (%s), want limit_exceeded or no answer yet", err, m.Data)
				}
				refused = append(refused, wire.ReplyError(m).Error())
			}
			if n := r.count() + len(refused); n < sessions*apiece {
				return fmt.Errorf("%d of %d requests delivered or refused", n, sessions*apiece)
			}
			return nil
		})
		if got, want := r.count(), slots/2; got != want {
			t.Errorf("requests of one principal holding a slot: got %d, want %d (half of %d); refused: %s", got, want, slots, strings.Join(refused, "; "))
		}
		// Another principal still sends.
		other := e.open(t, "direct", nil)
		reply, err := e.call(other, wire.SubjectMsgSend, wire.MsgSendRequest{Message: wire.Message{SessionID: sink.id, Path: "chat/hello"}})
		if err != nil {
			t.Fatalf("another principal's send while one principal asks a receiver that never answers: %v", err)
		}
		var resp wire.MsgSendResponse
		if err := json.Unmarshal(reply.Data, &resp); err != nil || resp.Delivered != 1 {
			t.Fatalf("another principal's send: got %s, %v; want delivered 1", reply.Data, err)
		}
	})
}
