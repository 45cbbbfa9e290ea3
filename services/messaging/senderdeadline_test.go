package messaging

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/filter"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestSelectionEndsAtTheSendersDeadline: a send with an expensive filter over
// 10,000 sessions (16 KiB of "ne" clauses: seconds of CEL) stops selecting when
// the deadline its sender gave (Roster-Timeout) passes, and says so; nothing is
// delivered. Before, the request carried no deadline: the selection went on to the
// last candidate and the send delivered to a sender that had long given up.
func TestSelectionEndsAtTheSendersDeadline(t *testing.T) {
	e := newEnv(t, Config{})
	from := e.open(t, "sender", nil)
	// The selection reads the instance's index only: entries put there directly
	// stand for sessions (no connection receives their deliveries).
	for i := range 10000 {
		e.msg.ix.upsert(fmt.Sprintf("fake%d", i), "-", map[string]string{"Desk": fmt.Sprint(i % 50)})
	}
	var b strings.Builder
	b.WriteString(`Desk ne "x0"`)
	for i := 1; b.Len() < filter.MaxLength-30; i++ {
		fmt.Fprintf(&b, ` and Desk ne "x%d"`, i)
	}
	body, err := json.Marshal(wire.MsgSendRequest{Message: wire.Message{Filter: b.String(), Path: "chat/x"}})
	if err != nil {
		t.Fatal(err)
	}
	h := from.header()
	h.Set(wire.HeaderTimeout, "100")
	// The sender waits longer than it told the service, to see what it answers.
	reply, err := e.cc.RequestMsg(&nats.Msg{Subject: wire.SubjectMsgSend, Header: h, Data: body}, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	err = wire.ReplyError(reply)
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeTimeout || !strings.Contains(we.Message, "deadline passed") {
		t.Fatalf("send with a 100 ms deadline: got %v (%s), want timeout: the request's deadline passed", err, reply.Data)
	}
}
