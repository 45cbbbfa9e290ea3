package registry

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// An open whose connection closes while the open is in progress (here: while the
// auth service takes its time) binds the session to a connection whose DISCONNECT
// advisory the registry has already handled, when no session was bound to it. The
// session must still become RECOVERING, as it would had the advisory come a moment
// later; it stayed ACTIVE (for good, had it been permanent: the connection checks
// list a server only when it is new or restarted).
func TestOpenFromAConnectionClosedMeanwhile(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{ConnCheckInterval: 50 * time.Millisecond})
	// A session on the server already: the connection checks know it, and list it
	// no more.
	open(t, e.srv.ClientConn(t), &wire.SessionOpenRequest{TimeoutMS: 3600000})
	time.Sleep(300 * time.Millisecond)
	nc := e.srv.ClientConn(t)
	data, _ := json.Marshal(&wire.SessionOpenRequest{TimeoutMS: 3600000,
		Credentials: &wire.Credentials{Type: wire.CredentialsPassword, Username: "dave", Password: "slowpw"}})
	if err := nc.PublishRequest(wire.SubjectSessionOpen, nc.NewInbox(), data); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	waitConnGone(t, e.srv, nc) // while the auth service holds the open (500 ms)

	var id string
	natstest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		keys, err := e.kv.ListKeys(context.Background())
		if err != nil {
			return err
		}
		for k := range keys.Keys() {
			if r := e.record(t, k); r.Principal == "dave" {
				id = k
			}
		}
		if id == "" {
			return errors.New("no session of dave yet")
		}
		return nil
	})
	if !sessions.ValidID(id) {
		t.Fatalf("key %q", id)
	}
	waitState(t, e, id, wire.StateRecovering)
	e.waitEventCount(t, id, wire.EventDisconnected, 1)
}
