package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestOnePrincipalCannotHoldEveryEventRead: an instance holds at most 4,096 waiting
// event reads, 16 of one session. Every session may read its own events, so a user
// opening 256 sessions of its own held them all, and every other reader's waiting
// read was refused limit_exceeded until they ended (up to a minute, and asked
// again). The sessions of one principal now hold at most half.
func TestOnePrincipalCannotHoldEveryEventRead(t *testing.T) {
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	const sessions = maxEventWaiters / maxEventWaitersApiece
	replies := make(chan *nats.Msg, maxEventWaiters)
	inbox := nc.NewInbox()
	sub, err := nc.ChanSubscribe(inbox, replies)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	flood := &wire.Credentials{Type: wire.CredentialsPassword, Username: "flood", Password: "pw"}
	// Held reads are read again every eventsRequery: 4,096 of them at once, on a
	// loaded machine, made reads time out.
	e.reg.waiters.mu.Lock()
	e.reg.waiters.requery = time.Hour
	e.reg.waiters.mu.Unlock()
	const far = 1 << 40 // a sequence no event reaches: every read waits
	refused := 0
	// settled waits until n reads are held or refused.
	settled := func(n int) {
		natstest.CheckFor(t, 30*time.Second, time.Millisecond, func() error {
			for len(replies) > 0 {
				m := <-replies
				if err := wire.ReplyError(m); !errors.Is(err, wire.ErrLimitExceeded) {
					t.Fatalf("a waiting read of the principal: got %v (%s), want limit_exceeded or no answer yet", err, m.Data)
				}
				refused++
			}
			e.reg.waiters.mu.Lock()
			held := len(e.reg.waiters.held)
			e.reg.waiters.mu.Unlock()
			if held+refused < n {
				return fmt.Errorf("%d reads held and %d refused, want %d in all", held, refused, n)
			}
			return nil
		})
	}
	for i := range sessions {
		c, _ := open(t, nc, &wire.SessionOpenRequest{Credentials: flood})
		body, _ := json.Marshal(wire.SessionEventsRequest{SessionID: c.id, StartSeq: far, WaitMS: 60000})
		for range maxEventWaitersApiece {
			if err := nc.PublishMsg(&nats.Msg{Subject: wire.SubjectSessionEvents, Reply: inbox, Header: c.header(), Data: body}); err != nil {
				t.Fatal(err)
			}
		}
		settled((i + 1) * maxEventWaitersApiece)
	}
	if want := maxEventWaiters / 2; refused != want {
		t.Errorf("waiting reads of one principal refused: got %d, want %d (half of %d held)", refused, want, maxEventWaiters)
	}
	// Another principal's reader still waits.
	other, _ := open(t, nc, nil)
	held := waitRead(other, wire.SessionEventsRequest{SessionID: other.id, StartSeq: far, WaitMS: 300})
	if r := <-held; r.err != nil {
		t.Fatalf("another principal's waiting read: %v", r.err)
	}
}
