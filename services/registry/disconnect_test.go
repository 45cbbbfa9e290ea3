package registry

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
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

// setMaxMsgSize changes the sessions bucket's largest message: a small one makes
// every record write fail, as writes do while the bucket has no leader.
func setMaxMsgSize(t *testing.T, e *env, size int32) {
	t.Helper()
	st, err := e.js.Stream(context.Background(), "KV_"+sessions.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.MaxMsgSize = size
	if _, err := e.js.UpdateStream(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
}

// A DISCONNECT advisory whose write fails (the bucket has no leader for a few
// seconds after a node died, say) is retried: the session still becomes RECOVERING
// once writes succeed again. It stayed ACTIVE, bound to a closed connection, until
// its timeout (for good, had it been permanent).
func TestDisconnectWhoseWriteFailedIsRetried(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{ConnCheckInterval: 50 * time.Millisecond})
	nc := e.srv.ClientConn(t)
	c, _ := open(t, nc, &wire.SessionOpenRequest{TimeoutMS: 3600000})
	time.Sleep(300 * time.Millisecond) // the connection checks have listed the server
	setMaxMsgSize(t, e, 16)
	waitConnGone(t, e.srv, nc)
	natstest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(e.reg.logs.String(), "marking a session recovering") {
			return errors.New("the write of the advisory has not failed yet")
		}
		return nil
	})
	setMaxMsgSize(t, e, -1)
	waitState(t, e, c.id, wire.StateRecovering)
	e.waitEventCount(t, c.id, wire.EventDisconnected, 1)
}
