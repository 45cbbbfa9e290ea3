package registry

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestEventsWaitEndsBeforeTheReadersDeadline: a held read of events whose reader
// gives a deadline (Roster-Timeout) shorter than its wait_ms is answered, with an
// empty page, before that deadline. Before, it was held for the whole wait (here
// 50 s) and answered after its reader had given up.
func TestEventsWaitEndsBeforeTheReadersDeadline(t *testing.T) {
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	adm := admin(t, nc)
	far := uint64(1 << 40)
	body, err := json.Marshal(&wire.SessionEventsRequest{StartSeq: far, WaitMS: 50000})
	if err != nil {
		t.Fatal(err)
	}
	m := &nats.Msg{Subject: wire.SubjectSessionEvents, Header: adm.header(), Data: body}
	m.Header.Set(wire.HeaderTimeout, "1000")
	// The test listens far longer than it said it would: the answer must come anyway.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	reply, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		t.Fatalf("no answer to a held read by its reader's deadline: %v", err)
	}
	if err := wire.ReplyError(reply); err != nil {
		t.Fatal(err)
	}
	var resp wire.SessionEventsResponse
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.Events) != 0 || resp.NextSeq != far {
		t.Fatalf("got %+v, want an empty page with next_seq %d", resp, far)
	}
}
