package messaging

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/schematest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestMessageIDOnEveryDelivery: the sender's message id reaches every delivery of a
// send to a filter and of a request, as Roster-Message-Id, unchanged, and a message
// without one has no such header. Receivers de-duplicate on it (pkg/client).
func TestMessageIDOnEveryDelivery(t *testing.T) {
	e := newEnv(t, Config{})
	from := e.open(t, "sender", nil)
	a := e.open(t, "a", map[string]string{"Group": "g"})
	b := e.open(t, "b", map[string]string{"Group": "g"})
	answer := func(m *nats.Msg) { _ = m.Respond([]byte("ok")) }
	ra, rb := e.receive(t, a, answer), e.receive(t, b, answer)

	send := wire.MsgSendRequest{Message: wire.Message{Filter: `Group is "g"`, Path: "chat/room1", Payload: []byte("x"), MessageID: "order-42_v1"}}
	body, _ := json.Marshal(send)
	schematest.Validate(t, "msg.send.request", body)
	if _, err := e.call(from, wire.SubjectMsgSend, send); err != nil {
		t.Fatalf("send: %v", err)
	}
	for _, r := range []*receiver{ra, rb} {
		if got := r.next(t).Header.Get(wire.HeaderMessageID); got != "order-42_v1" {
			t.Errorf("send delivery: got %s %q, want order-42_v1", wire.HeaderMessageID, got)
		}
	}

	req := wire.MsgRequestRequest{Message: wire.Message{SessionID: a.id, Path: "orders/ask", MessageID: "q1"}, TimeoutMS: 2000}
	body, _ = json.Marshal(req)
	schematest.Validate(t, "msg.request.request", body)
	if _, err := e.call(from, wire.SubjectMsgRequest, req); err != nil {
		t.Fatalf("request: %v", err)
	}
	if got := ra.next(t).Header.Get(wire.HeaderMessageID); got != "q1" {
		t.Errorf("request delivery: got %s %q, want q1", wire.HeaderMessageID, got)
	}

	if _, err := e.call(from, wire.SubjectMsgSend, wire.MsgSendRequest{Message: wire.Message{SessionID: b.id, Path: "chat/room1"}}); err != nil {
		t.Fatalf("send without id: %v", err)
	}
	if got := rb.next(t).Header.Values(wire.HeaderMessageID); len(got) != 0 {
		t.Errorf("a delivery of a message without id: got %s %q, want none", wire.HeaderMessageID, got)
	}
}

// TestBadMessageID: a message id that is empty, too long or has a character outside
// A-Z a-z 0-9 - _ is bad_request naming message_id, before anything is delivered.
func TestBadMessageID(t *testing.T) {
	e := newEnv(t, Config{})
	from := e.open(t, "sender", nil)
	to := e.open(t, "a", nil)
	r := e.receive(t, to, nil)
	cases := []struct {
		name string
		body string
	}{
		{"empty", `""`},
		{"too long", `"` + strings.Repeat("a", wire.MaxMessageIDLength+1) + `"`},
		{"dot", `"a.b"`},
		{"space", `"a b"`},
		{"line break", `"a\r\nRoster-Sender: x"`},
		{"not ASCII", `"é"`},
		{"not a string", `7`},
	}
	for _, c := range cases {
		for _, subject := range []string{wire.SubjectMsgSend, wire.SubjectMsgRequest} {
			t.Run(c.name+" "+subject, func(t *testing.T) {
				body := json.RawMessage(`{"session_id":"` + to.id + `","path":"chat/x","message_id":` + c.body + `}`)
				_, err := e.call(from, subject, body)
				var we *wire.Error
				if !errors.As(err, &we) || we.Code != wire.CodeBadRequest || !strings.Contains(we.Message, "message_id") {
					t.Fatalf("message_id %s: got %v, want bad_request naming message_id", c.body, err)
				}
				if schematest.Check("msg.send.request", body) == nil {
					t.Errorf("the schema accepts message_id %s, which the service refuses", c.body)
				}
			})
		}
	}
	longest := strings.Repeat("Z", wire.MaxMessageIDLength)
	if _, err := e.call(from, wire.SubjectMsgSend, wire.MsgSendRequest{Message: wire.Message{SessionID: to.id, Path: "chat/x", MessageID: longest}}); err != nil {
		t.Fatalf("a %d-character id: %v", len(longest), err)
	}
	if m := r.next(t); m.Header.Get(wire.HeaderMessageID) != longest {
		t.Errorf("got %s %q, want %q", wire.HeaderMessageID, m.Header.Get(wire.HeaderMessageID), longest)
	}
	if n := r.count(); n != 1 {
		t.Errorf("the receiver got %d deliveries, want only the valid one", n)
	}
}
