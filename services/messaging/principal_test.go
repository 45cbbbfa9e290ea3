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

// TestOnePrincipalCannotHoldEveryRequestSlot: a request is in progress until its
// receivers answer or its timeout, up to a minute. The bound of requests per session
// (MaxSenderRequests) kept one session from taking every request the instance
// gathers, but not one principal: a user opening a few sessions of its own asked a
// receiver that never answers and took them all, and every other principal's
// request waited (each held a handler slot then: sends too). The sessions of one
// principal now take at most half.
func TestOnePrincipalCannotHoldEveryRequestSlot(t *testing.T) {
	forEachView(t, func(t *testing.T, newEnv func(*testing.T, Config) *env) {
		const slots, apiece, sessions = 8, 2, 4 // sessions × apiece = slots
		e := newEnv(t, Config{MaxRequests: slots, MaxSenderRequests: apiece})
		sink := e.open(t, "sender", nil)
		r := e.silentReceiver(t, sink)

		inbox := e.cc.NewInbox()
		replies := natstest.Subscribe(t, e.cc, inbox, sessions*apiece)
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

// TestRequestsInProgressHoldNoHandlerSlot: requests waiting for receivers that never
// answer do not hold the endpoint's handler slots, so that however many are in
// progress — two principals taking every one the instance gathers — another
// principal's send is handled at once, and its request is refused limit_exceeded at
// once rather than left waiting. Each request held a handler slot until its
// receivers answered, up to a minute: two principals at their bound held every slot,
// and every other send and request on the instance waited.
func TestRequestsInProgressHoldNoHandlerSlot(t *testing.T) {
	const slots, gathered, apiece = 2, 8, 2
	e := newEnv(t, Config{MaxConcurrent: slots, MaxRequests: gathered, MaxSenderRequests: apiece})
	sink := e.open(t, "sender", nil)
	r := e.silentReceiver(t, sink)
	inbox := e.cc.NewInbox()
	replies := natstest.Subscribe(t, e.cc, inbox, gathered)
	body, _ := json.Marshal(wire.MsgRequestRequest{Message: wire.Message{SessionID: sink.id, Path: "chat/slow"}, TimeoutMS: wire.MaxRequestTimeoutMS})
	for _, principal := range []string{"sender", "direct"} {
		for range gathered / 2 / apiece {
			s := e.open(t, principal, nil)
			for range apiece {
				if err := e.cc.PublishMsg(&nats.Msg{Subject: wire.SubjectMsgRequest, Reply: inbox, Header: s.header(), Data: body}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	natstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if n := r.count(); n != gathered {
			return fmt.Errorf("%d requests delivered, want %d", n, gathered)
		}
		return nil
	})
	if len(replies) != 0 {
		t.Fatalf("a request in progress was answered: %s", (<-replies).Data)
	}
	other := e.open(t, "bystander", nil)
	reply, err := e.call(other, wire.SubjectMsgSend, wire.MsgSendRequest{Message: wire.Message{SessionID: sink.id, Path: "chat/hello"}})
	if err != nil {
		t.Fatalf("a send while %d requests are in progress: %v", gathered, err)
	}
	var resp wire.MsgSendResponse
	if err := json.Unmarshal(reply.Data, &resp); err != nil || resp.Delivered != 1 {
		t.Fatalf("the send: got %s, %v; want delivered 1", reply.Data, err)
	}
	if _, err := e.call(other, wire.SubjectMsgRequest, wire.MsgRequestRequest{Message: wire.Message{SessionID: sink.id, Path: "chat/more"}, TimeoutMS: 1000}); !errors.Is(err, wire.ErrLimitExceeded) {
		t.Fatalf("a request while the instance gathers %d: got %v, want limit_exceeded", gathered, err)
	}
}

// silentReceiver receives the deliveries to s and answers none of them until the
// test ends, when it answers every request it holds.
func (e *env) silentReceiver(t *testing.T, s session) *receiver {
	r := e.receive(t, s, nil)
	t.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, m := range r.msgs {
			_ = m.Respond(nil)
		}
	})
	return r
}

// TestTwoPrincipalsCannotHoldEveryStreamAtTheDefaults: streamed requests were
// gathered in a pool of 256 per instance, and one principal's sessions may have 128
// requests in progress: two principals asking receivers that never answer (the
// anonymous users together are one) took every stream for up to a minute, again and
// again, and everyone else's RequestStream was refused limit_exceeded. At the
// defaults, as for requests without stream_id, it now takes 32 principals at their
// bound.
func TestTwoPrincipalsCannotHoldEveryStreamAtTheDefaults(t *testing.T) {
	e := newEnv(t, Config{})
	// Two receivers: each takes at most DefaultMaxInFlight deliveries at once.
	sinks := []session{e.open(t, "sink", nil), e.open(t, "sink", nil)}
	rs := []*receiver{e.silentReceiver(t, sinks[0]), e.silentReceiver(t, sinks[1])}
	delivered := func() int { return rs[0].count() + rs[1].count() }
	inbox := e.cc.NewInbox()
	replies := natstest.Subscribe(t, e.cc, inbox, 2*DefaultMaxPrincipalRequests)
	streamed := func(n int) []byte {
		to := sinks[n%2].id
		body, _ := json.Marshal(wire.MsgRequestRequest{Message: wire.Message{SessionID: to, Path: "chat/slow"}, TimeoutMS: wire.MaxRequestTimeoutMS, StreamID: fmt.Sprint(n)})
		return body
	}
	n := 0
	for _, principal := range []string{"sender", "direct"} {
		for range DefaultMaxPrincipalRequests / DefaultMaxSenderRequests {
			s := e.open(t, principal, nil)
			for range DefaultMaxSenderRequests {
				n++
				if err := e.cc.PublishMsg(&nats.Msg{Subject: wire.SubjectMsgRequest, Reply: inbox, Header: s.header(), Data: streamed(n)}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// Each is in progress (its reply says the stream started) or refused.
	answered := 0
	natstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		for len(replies) > 0 {
			m := <-replies
			if err := wire.ReplyError(m); err != nil {
				t.Fatalf("a streamed request of two principals at their bound: %v", err)
			}
			answered++
		}
		if answered < n || delivered() < n {
			return fmt.Errorf("%d of %d streamed requests answered, %d delivered", answered, n, delivered())
		}
		return nil
	})
	bystander := e.open(t, "bystander", nil)
	if _, err := e.call(bystander, wire.SubjectMsgRequest, wire.MsgRequestRequest{Message: wire.Message{SessionID: sinks[0].id, Path: "chat/more"}, TimeoutMS: 1000, StreamID: "mine"}); err != nil {
		t.Fatalf("another principal's streamed request while two principals hold %d: %v", n, err)
	}
}
