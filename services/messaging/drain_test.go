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

// TestStopDrainsTheRequestsInProgress: a stopping instance waits up to its
// DrainTimeout for the requests in flight, and a request is in flight until its
// results are in, though its handler returned once the deliveries were out
// (ErrReplyLater). The gathering ran on the endpoint's context, which is cancelled as
// soon as the handlers are done: every request in progress was answered at once with
// unavailable for each receiver that had not answered yet — on every rolling restart,
// receivers answering within milliseconds were reported failed, and their answers
// lost, while the drain had seconds to spare. Streamed requests likewise.
func TestStopDrainsTheRequestsInProgress(t *testing.T) {
	for _, streamed := range []bool{false, true} {
		name := "reply"
		if streamed {
			name = "streamed"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, Config{DrainTimeout: 30 * time.Second})
			from := e.open(t, "sender", nil)
			to := e.open(t, "sender", nil)
			r := e.receive(t, to, nil)

			req := wire.MsgRequestRequest{Message: wire.Message{SessionID: to.id, Path: "chat/ask"}, TimeoutMS: 20_000}
			answers := make(chan *nats.Msg, 8)
			var sub *nats.Subscription
			var err error
			if streamed {
				req.StreamID = "drain"
				sub, err = e.cc.ChanSubscribe(wire.ResultSubject("", from.id, req.StreamID), answers)
			} else {
				inbox := e.cc.NewInbox()
				sub, err = e.cc.ChanSubscribe(inbox, answers)
				if err == nil {
					body, _ := json.Marshal(req)
					err = e.cc.PublishMsg(&nats.Msg{Subject: wire.SubjectMsgRequest, Reply: inbox, Header: from.header(), Data: body})
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = sub.Unsubscribe() })
			if streamed {
				if _, err := e.call(from, wire.SubjectMsgRequest, req); err != nil {
					t.Fatalf("streamed request: %v", err)
				}
			}
			delivery := r.next(t)

			// Stop the instance while the receiver works on its answer, and answer
			// once the endpoint has stopped taking requests and its handlers are done.
			stopped := make(chan struct{})
			go func() { defer close(stopped); e.stop() }()
			natstest.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
				if e.msg.svc.Context().Err() == nil {
					return errors.New("the endpoint has not stopped yet")
				}
				return nil
			})
			if err := delivery.Respond([]byte("done")); err != nil {
				t.Fatal(err)
			}

			var result *wire.MsgResult
			deadline := time.After(10 * time.Second)
			for result == nil {
				select {
				case m := <-answers:
					if streamed {
						var it wire.MsgStreamItem
						if err := json.Unmarshal(m.Data, &it); err != nil {
							t.Fatal(err)
						}
						result = it.Result
						continue
					}
					var resp wire.MsgRequestResponse
					if err := wire.ReplyError(m); err != nil {
						t.Fatalf("reply: got %v, want the results", err)
					}
					if err := json.Unmarshal(m.Data, &resp); err != nil || len(resp.Results) != 1 {
						t.Fatalf("reply: got %s, %v; want one result", m.Data, err)
					}
					result = &resp.Results[0]
				case <-deadline:
					t.Fatal("no result within 10s")
				}
			}
			if result.Status != wire.StatusOK || string(result.Payload) != "done" {
				t.Errorf("result of a request answered while its instance drained: got %s %v %q, want ok \"done\"", result.Status, result.Error, result.Payload)
			}
			<-stopped
		})
	}
}

// TestStopEndsTheRequestsInProgressAtTheDrainsEnd: the drain waits for a request's
// receivers no longer than DrainTimeout; those that have not answered then are
// reported unavailable, and Run returns.
func TestStopEndsTheRequestsInProgressAtTheDrainsEnd(t *testing.T) {
	e := newEnv(t, Config{DrainTimeout: 200 * time.Millisecond})
	from := e.open(t, "sender", nil)
	to := e.open(t, "sender", nil)
	r := e.silentReceiver(t, to)
	inbox := e.cc.NewInbox()
	replies := natstest.Subscribe(t, e.cc, inbox, 1)
	body, _ := json.Marshal(wire.MsgRequestRequest{Message: wire.Message{SessionID: to.id, Path: "chat/ask"}, TimeoutMS: wire.MaxRequestTimeoutMS})
	if err := e.cc.PublishMsg(&nats.Msg{Subject: wire.SubjectMsgRequest, Reply: inbox, Header: from.header(), Data: body}); err != nil {
		t.Fatal(err)
	}
	r.next(t)
	e.stop() // returns once the drain has ended the request
	select {
	case m := <-replies:
		var resp wire.MsgRequestResponse
		if err := json.Unmarshal(m.Data, &resp); err != nil || len(resp.Results) != 1 {
			t.Fatalf("reply: got %s, %v; want one result", m.Data, err)
		}
		if got := resp.Results[0]; got.Status != wire.StatusError || got.Error == nil || got.Error.Code != wire.CodeUnavailable {
			t.Errorf("a receiver that had not answered by the drain's end: got %s %v, want error unavailable", got.Status, got.Error)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no reply within 10s of the stop")
	}
}
