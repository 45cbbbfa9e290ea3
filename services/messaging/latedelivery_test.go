package messaging

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestNothingIsDeliveredAfterTheSendersDeadline: a send or request to one session
// is held between its authentication and its publish past the deadline its sender
// gave (here the index's lock is held; in service, the bucket read of a session the
// view does not hold yet, up to 2 s whatever the deadline). Its sender has given up
// and, told timeout, may send again: the first copy was delivered all the same,
// after the sender had been told it failed, so the receiver got the message twice
// (once without a message id to drop it by). It is now answered timeout and
// delivers nothing; only a publish already begun is seen through.
func TestNothingIsDeliveredAfterTheSendersDeadline(t *testing.T) {
	for _, tc := range []struct {
		name, subject string
		body          func(to string) any
	}{
		{"send", wire.SubjectMsgSend, func(to string) any {
			return wire.MsgSendRequest{Message: wire.Message{SessionID: to, Path: "chat/late"}}
		}},
		{"request", wire.SubjectMsgRequest, func(to string) any {
			return wire.MsgRequestRequest{Message: wire.Message{SessionID: to, Path: "chat/late"}, TimeoutMS: 5000}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Config{})
			from := e.open(t, "sender", nil)
			to := e.open(t, "quick", nil)
			r := e.receive(t, to, func(m *nats.Msg) { _ = m.Respond([]byte("ok")) })

			e.msg.ix.mu.Lock() // the target's lookup waits here
			held := true
			defer func() {
				if held {
					e.msg.ix.mu.Unlock()
				}
			}()
			answered := make(chan error, 1)
			go func() {
				answered <- natstest.CallGivingTimeout(t, e.cc, tc.subject, from.header(), tc.body(to.id), 300, nil)
			}()
			// The scenario itself, not a wait for a condition: the lookup ends after
			// the sender's deadline.
			<-time.After(time.Second)
			e.msg.ix.mu.Unlock()
			held = false
			if err := <-answered; wire.CodeOf(err) != wire.CodeTimeout {
				t.Fatalf("%s held past its deadline: got %v, want timeout", tc.name, err)
			}

			// A send made now reaches the receiver after anything the late one
			// published (one publishing connection, one subscriber: in order).
			reply, err := e.call(from, wire.SubjectMsgSend, wire.MsgSendRequest{Message: wire.Message{SessionID: to.id, Path: "chat/marker"}})
			if err != nil {
				t.Fatal(err)
			}
			var sent wire.MsgSendResponse
			if err := json.Unmarshal(reply.Data, &sent); err != nil || sent.Delivered != 1 {
				t.Fatalf("marker send: %s, %v", reply.Data, err)
			}
			if m := r.next(t); !strings.HasSuffix(m.Subject, ".chat.marker") {
				t.Fatalf("first delivery on %s, want the marker: the %s was delivered after its sender's deadline", m.Subject, tc.name)
			}
		})
	}
}
