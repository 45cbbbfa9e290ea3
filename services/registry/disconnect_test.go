package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	// no more. Listed later, the closed connection would be found by its listing.
	listed := watchListings(t, e)
	open(t, e.srv.ClientConn(t), &wire.SessionOpenRequest{TimeoutMS: 3600000})
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, listed)
	nc := e.srv.ClientConn(t)
	cid, err := nc.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(&wire.SessionOpenRequest{TimeoutMS: 3600000,
		Credentials: &wire.Credentials{Type: wire.CredentialsPassword, Username: "dave", Password: "slowpw"}})
	if err := nc.PublishRequest(wire.SubjectSessionOpen, nc.NewInbox(), data); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	waitConnGone(t, e.srv, nc) // while the auth service holds the open (500 ms)
	// The advisory must be handled before the open binds its session: later, it
	// finds the session bound and the test passes by the ordinary path.
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		tr := e.reg.track
		tr.mu.Lock()
		defer tr.mu.Unlock()
		for conn := range tr.closedConns {
			if bc, ok := parseConnKey(conn); ok && bc.cid == cid {
				if len(tr.byConn[conn]) > 0 {
					t.Fatalf("a session was bound to connection %s when its advisory was seen handled: the open was not in progress", conn)
				}
				return nil
			}
		}
		return fmt.Errorf("the registry has not handled the advisory of connection %d", cid)
	})

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
	listed := watchListings(t, e)
	c, _ := open(t, nc, &wire.SessionOpenRequest{TimeoutMS: 3600000})
	// Listed later, the closed connection would be found by its listing, not by
	// the retry of its advisory.
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, listed)
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
