package natstest

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// CallGivingTimeout sends req as JSON to subject on nc, with hdr and a Roster-Timeout
// of timeoutMS, and waits for the answer far longer than that (30 s): it shows what
// a service does at a deadline its caller gives and does not keep itself. No answer
// at all fails the test. It returns the wire error the answer carries, or decodes
// the answer into resp (if not nil).
func CallGivingTimeout(t testing.TB, nc *nats.Conn, subject string, hdr nats.Header, req any, timeoutMS int, resp any) error {
	t.Helper()
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	m := &nats.Msg{Subject: subject, Header: nats.Header{}, Data: body}
	for k, v := range hdr {
		m.Header[k] = v
	}
	m.Header.Set(wire.HeaderTimeout, strconv.Itoa(timeoutMS))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reply, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		t.Fatalf("%s: no answer within 30 s to a request giving %d ms: %v", subject, timeoutMS, err)
	}
	if err := wire.ReplyError(reply); err != nil {
		return err
	}
	if resp != nil {
		if err := json.Unmarshal(reply.Data, resp); err != nil {
			t.Fatalf("%s: decode the answer: %v", subject, err)
		}
	}
	return nil
}
