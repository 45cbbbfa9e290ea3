package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

func TestParseConnKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		key    string
		ok     bool
		server string
		cid    uint64
		start  int64
	}{
		{"n1/12/1a2b", true, "n1", 12, 59699},
		{"a/b/7/zz", true, "a/b", 7, 1295},
		{"n1/12", true, "n1", 12, 0},
		{"n1", false, "", 0, 0},
		{"/12/1a", false, "", 0, 0},
		{"n1/0/1a", false, "", 0, 0},
		{"n1/x/1a", false, "", 0, 0},
		{"", false, "", 0, 0},
	} {
		bc, ok := parseConnKey(tc.key)
		if ok != tc.ok || (ok && (bc.server != tc.server || bc.cid != tc.cid || bc.start != tc.start)) {
			t.Errorf("parseConnKey(%q) = %+v, %v; want %s/%d/%d, %v", tc.key, bc, ok, tc.server, tc.cid, tc.start, tc.ok)
		}
	}
	// The key of a real connection parses back to its parts.
	start := time.Now()
	ri := &wire.RequestInfo{Server: "srv/x", ID: 42, Start: &start}
	bc, ok := parseConnKey(ri.ConnectionKey())
	if !ok || bc.server != "srv/x" || bc.cid != 42 || bc.start != start.UnixNano() {
		t.Fatalf("round trip of %q: %+v, %v", ri.ConnectionKey(), bc, ok)
	}
}

// waitConnGone closes the connection and waits until the server no longer lists it
// and its DISCONNECT advisory has gone out. The server sends the advisory from a
// goroutine of its own, unordered with the listing; a registry subscribed later
// does not receive it.
func waitConnGone(t *testing.T, srv *natstest.Server, nc *nats.Conn) {
	t.Helper()
	cid, err := nc.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	// The registry's own way to the advisories, from SERVICES.
	advisories := make(chan *nats.Msg, 64)
	watch := srv.ServiceConn(t)
	if _, err := watch.ChanSubscribe(SubjectDisconnect, advisories); err != nil {
		t.Fatal(err)
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	nc.Close()
	sys, err := srv.ConnectSystem()
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		body, _ := json.Marshal(connzRequest{CID: cid})
		m, err := sys.Request("$SYS.REQ.ACCOUNT."+embedded.ClientsAccount+".CONNZ", body, time.Second)
		if err != nil {
			return err
		}
		var r connzResponse
		if err := json.Unmarshal(m.Data, &r); err != nil || r.Data == nil {
			return fmt.Errorf("bad answer %s", m.Data)
		}
		if len(r.Data.Conns) > 0 {
			return fmt.Errorf("connection %d still listed", cid)
		}
		return nil
	})
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		for {
			select {
			case m := <-advisories:
				var a disconnectAdvisory
				if json.Unmarshal(m.Data, &a) == nil && a.Client.ID == cid {
					return nil
				}
			default:
				return fmt.Errorf("no DISCONNECT advisory for connection %d yet", cid)
			}
		}
	})
}

func waitState(t *testing.T, e *env, id string, want wire.SessionState) {
	t.Helper()
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if r := e.record(t, id); r.State != want {
			return fmt.Errorf("session %s is %s, want %s", id, r.State, want)
		}
		return nil
	})
}

// TestConnectionLostWhileNoRegistryRan closes a session's connection while no
// registry instance runs, so nobody receives its DISCONNECT advisory: the next
// instance to start finds the connection gone from the server's listing and moves
// the session to RECOVERING, once; a session whose connection lives is left alone.
// Before the connection checks it stayed ACTIVE until its timeout.
func TestConnectionLostWhileNoRegistryRan(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	gone, kept := e.srv.ClientConn(t), e.srv.ClientConn(t)
	lost, _ := open(t, gone, &wire.SessionOpenRequest{TimeoutMS: 3600000})
	live, _ := open(t, kept, &wire.SessionOpenRequest{TimeoutMS: 3600000})
	if r := e.record(t, lost.id); r.Account != embedded.ClientsAccount {
		t.Fatalf("record names account %q, want %s", r.Account, embedded.ClientsAccount)
	}
	e.reg.stop()
	waitConnGone(t, e.srv, gone)

	rounds := watchRounds(t, e)
	startRegistry(t, e.srv, Config{ConnCheckInterval: 50 * time.Millisecond})
	waitState(t, e, lost.id, wire.StateRecovering)
	e.waitEventCount(t, lost.id, wire.EventDisconnected, 1)
	// Three more rounds: the live one stays ACTIVE, the lost one is not told twice.
	// A round asks only about the connections of ACTIVE sessions: the live one's
	// keeps them coming.
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if r := e.record(t, live.id); r.State != wire.StateActive {
			t.Fatalf("the session with a live connection is %s", r.State)
		}
		return rounds(3)()
	})
	if r := e.record(t, live.id); r.State != wire.StateActive {
		t.Fatalf("the session with a live connection is %s", r.State)
	}
	if n := e.eventCount(t, live.id, wire.EventDisconnected); n != 0 {
		t.Fatalf("the session with a live connection has %d DISCONNECTED events", n)
	}
	if n := e.eventCount(t, lost.id, wire.EventDisconnected); n != 1 {
		t.Fatalf("%d DISCONNECTED events, want 1", n)
	}
	// It can still resume from a new connection.
	lost.nc = e.srv.ClientConn(t)
	if err := lost.call(wire.SubjectSessionResume, nil, nil); err != nil {
		t.Fatal(err)
	}
	waitState(t, e, lost.id, wire.StateActive)
}

// rebind points a session at another connection, as a session bound on a server
// that is gone or restarted is.
func rebind(t *testing.T, inst *instance, id, conn, account string) {
	t.Helper()
	_, _, err := inst.modify(context.Background(), id, nil, nil, "", func(r *sessions.Record) (bool, error) {
		r.Connection, r.Account = conn, account
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestConnectionsOfAGoneOrRestartedServer covers what a stopped or restarted server
// never reports: a session bound to a server that no longer answers becomes
// RECOVERING after ServerGoneAfter; one bound to a connection id the server now gives
// a connection that started at another time (the server restarted and counts from 1
// again) becomes RECOVERING at once; one in an account nobody lists stays ACTIVE.
func TestConnectionsOfAGoneOrRestartedServer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{ConnCheckInterval: 50 * time.Millisecond, ServerGoneAfter: time.Second})
	nc := e.srv.ClientConn(t)
	ghost, _ := open(t, nc, &wire.SessionOpenRequest{TimeoutMS: 3600000})
	reused, _ := open(t, nc, &wire.SessionOpenRequest{TimeoutMS: 3600000})
	unlisted, _ := open(t, nc, &wire.SessionOpenRequest{TimeoutMS: 3600000})
	live, _ := open(t, nc, &wire.SessionOpenRequest{TimeoutMS: 3600000})
	cur := e.record(t, live.id).Connection
	bc, ok := parseConnKey(cur)
	if !ok || bc.start == 0 {
		t.Fatalf("connection key %q", cur)
	}
	rebind(t, e.reg, ghost.id, "gone-server/"+strings.TrimPrefix(cur, bc.server+"/"), embedded.ClientsAccount)
	// The same server and id, another start: the connection a restarted server gave
	// that id is not this session's.
	rebind(t, e.reg, reused.id, fmt.Sprintf("%s/%d/%s", bc.server, bc.cid, "1"), embedded.ClientsAccount)
	rebind(t, e.reg, unlisted.id, cur, "NOBODY")
	// A server that restarted answers with a new identity, which has it listed
	// again; this one did not restart, so ask for the listing its new identity would
	// bring. Without it the test passed only when the rebinds beat the instance's
	// first listing of the server (a loaded run took longer and saw reused ACTIVE).
	e.reg.track.conns.relist()
	began := time.Now()

	waitState(t, e, reused.id, wire.StateRecovering)
	waitState(t, e, ghost.id, wire.StateRecovering)
	if waited := time.Since(began); waited < time.Second {
		t.Fatalf("a silent server's connections were taken for lost after %v, before ServerGoneAfter", waited)
	}
	// The check that finds the unlisted account may come a round after the others.
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(e.reg.logs.String(), "nobody answers the account's connection listing") {
			return fmt.Errorf("no warning about the account nobody lists; logs:\n%s", e.reg.logs)
		}
		return nil
	})
	for _, c := range []*client{unlisted, live} {
		if r := e.record(t, c.id); r.State != wire.StateActive {
			t.Fatalf("session %s is %s, want ACTIVE", c.id, r.State)
		}
	}
	e.waitEventCount(t, ghost.id, wire.EventDisconnected, 1)
	e.waitEventCount(t, reused.id, wire.EventDisconnected, 1)
}

// waitRoundsBegunEnded waits until every round of the connection checks begun
// before the call has ended, and a listing of every server begun after it: it asks
// for a relisting and waits until the checks have taken it, twice. The checks take a
// relisting only between rounds, and the round after it lists every server.
func waitRoundsBegunEnded(t *testing.T, e *env) {
	t.Helper()
	c := e.reg.track.conns
	for range 2 {
		c.relist()
		natstest.CheckFor(t, 30*time.Second, time.Millisecond, func() error {
			if len(c.recheck) > 0 {
				return errors.New("the connection checks have not ended their round")
			}
			return nil
		})
	}
}

// TestConnectionListingWhileConnectionsClose lists the server's connections two at a
// time, over and over, while half of them close: a closing connection shifts the
// pages, so a live one can be missing from a listing. None of the live ones' sessions
// may be taken for lost; every closed one's is (by its advisory or the listing).
func TestConnectionListingWhileConnectionsClose(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{ConnCheckInterval: 5 * time.Millisecond, connzPage: 2})
	const n = 40
	conns := make([]*nats.Conn, n)
	ids := make([]string, n)
	for i := range n {
		conns[i] = e.srv.ClientConn(t)
		c, _ := open(t, conns[i], &wire.SessionOpenRequest{TimeoutMS: 3600000})
		ids[i] = c.id
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // list every server again and again
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
				e.reg.track.conns.relist()
			}
		}
	}()
	for i := 0; i < n; i += 2 {
		conns[i].Close()
		time.Sleep(5 * time.Millisecond)
	}
	for i := 0; i < n; i += 2 {
		waitState(t, e, ids[i], wire.StateRecovering)
	}
	close(stop)
	wg.Wait()
	// A listing that began while connections closed writes what it found lost only
	// at its end: let every round begun so far end, and a listing begun now.
	waitRoundsBegunEnded(t, e)
	for i := 1; i < n; i += 2 {
		if r := e.record(t, ids[i]); r.State != wire.StateActive {
			t.Fatalf("session %d, on a live connection, is %s", i, r.State)
		}
	}
}
