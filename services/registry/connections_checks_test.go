package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// fakeServer answers the connection listing as a NATS server named name with
// identity id and no connection at all, from the services account (where the
// registry's requests also reach it). While fail is set, it answers listings with an
// error, as a server too busy to answer does, and counts those in refused.
func fakeServer(t *testing.T, e *env, name, id string, fail *atomic.Bool) (refused *atomic.Int64) {
	t.Helper()
	refused = &atomic.Int64{}
	nc := e.srv.ServiceConn(t)
	_, err := nc.Subscribe(embedded.ClientConnections, func(m *nats.Msg) {
		var req connzRequest
		_ = json.Unmarshal(m.Data, &req)
		if req.ServerName != "" && req.ServerName != name {
			return
		}
		var resp connzResponse
		resp.Server.Name, resp.Server.ID = name, id
		if req.ServerName != "" && fail.Load() {
			refused.Add(1)
			resp.Error = &struct {
				Description string `json:"description"`
			}{"busy"}
		} else {
			resp.Data = &struct {
				Total int `json:"total"`
				Conns []struct {
					CID   uint64    `json:"cid"`
					Start time.Time `json:"start"`
				} `json:"connections"`
			}{}
		}
		data, _ := json.Marshal(resp)
		_ = m.Respond(data)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return refused
}

// A server seen for the first time (or restarted) is listed once. If that listing
// fails — a server just restarted is busy with its reconnecting clients — it must be
// listed again at the next round: the connections it lost are found by no other
// means. The listing used to be skipped for good once the server's identity was
// noted, and the session stayed ACTIVE.
func TestFailedListingIsRetried(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{ConnCheckInterval: 50 * time.Millisecond})
	var fail atomic.Bool
	fail.Store(true)
	refused := fakeServer(t, e, "fake", "FAKE1", &fail)
	c, _ := open(t, e.srv.ClientConn(t), &wire.SessionOpenRequest{TimeoutMS: 3600000})
	rebind(t, e.reg, c.id, "fake/7/"+"1a2b", embedded.ClientsAccount)
	// Let two rounds fail to list it: the listing must have failed before it may
	// succeed, or nothing was retried.
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := refused.Load(); n < 2 {
			return fmt.Errorf("the server's listing was refused %d times, want 2", n)
		}
		return nil
	})
	if r := e.record(t, c.id); r.State != wire.StateActive {
		t.Fatalf("session is %s while its server's listing fails, want ACTIVE", r.State)
	}
	fail.Store(false)
	waitState(t, e, c.id, wire.StateRecovering)
}

// While the instance is cut off from NATS it asks no server anything, so that time
// must not count as a server's silence: once back, a server that does not answer
// the first question at once is not taken for gone before ServerGoneAfter. It used
// to be, when the instance had been cut off for longer than ServerGoneAfter: every
// session on a server slow to answer after the reconnect became RECOVERING.
func TestServerSilenceNotCountedWhileCutOff(t *testing.T) {
	t.Parallel()
	const goneAfter = 5 * time.Second
	e := newEnv(t, Config{ConnCheckInterval: 50 * time.Millisecond, ServerGoneAfter: goneAfter})
	c, _ := open(t, e.srv.ClientConn(t), &wire.SessionOpenRequest{TimeoutMS: 3600000})
	const key = "ghost/7/1a2b"
	bc, _ := parseConnKey(key)
	// The ghost answers, listing the session's connection open, until it dies
	// with the instance cut off. asked counts the rounds' questions for identities.
	var dead atomic.Bool
	var asked, listed atomic.Int64
	nc := e.srv.ServiceConn(t)
	_, err := nc.Subscribe(connzSubject(embedded.ClientsAccount), func(m *nats.Msg) {
		var req connzRequest
		_ = json.Unmarshal(m.Data, &req)
		if req.ServerName == "" {
			asked.Add(1)
		}
		if dead.Load() || (req.ServerName != "" && req.ServerName != "ghost") {
			return
		}
		var resp connzResponse
		resp.Server.Name, resp.Server.ID = "ghost", "GHOST1"
		resp.Data = &struct {
			Total int `json:"total"`
			Conns []struct {
				CID   uint64    `json:"cid"`
				Start time.Time `json:"start"`
			} `json:"connections"`
		}{}
		if req.ServerName == "ghost" {
			listed.Add(1)
			resp.Data.Total = 1
			resp.Data.Conns = append(resp.Data.Conns, struct {
				CID   uint64    `json:"cid"`
				Start time.Time `json:"start"`
			}{bc.cid, time.Unix(0, bc.start)})
		}
		data, _ := json.Marshal(resp)
		_ = m.Respond(data)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	rebind(t, e.reg, c.id, key, embedded.ClientsAccount)
	// A round that lists the ghost has noted its answer: its silence counts from
	// before the cut.
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if listed.Load() == 0 {
			return errors.New("no round has listed the ghost yet")
		}
		return nil
	})
	if r := e.record(t, c.id); r.State != wire.StateActive {
		t.Fatalf("session is %s while the ghost lists its connection, want ACTIVE", r.State)
	}
	dead.Store(true)
	e.reg.track.cutOff()
	time.Sleep(goneAfter + time.Second)
	e.reg.track.reconnected()
	back, before := time.Now(), asked.Load()
	// A question asked after the first one since the reconnect means a round
	// ended since, having judged the ghost's silence.
	judged := false
	for time.Since(back) < goneAfter-500*time.Millisecond {
		ended := asked.Load()-before >= 2
		if r := e.record(t, c.id); r.State != wire.StateActive {
			t.Fatalf("session is %s %v after the reconnect, before ServerGoneAfter (%v)", r.State, time.Since(back), goneAfter)
		}
		judged = judged || ended
		time.Sleep(100 * time.Millisecond)
	}
	if !judged {
		t.Fatalf("no round of the connection checks ended within %v of the reconnect: nothing was checked", goneAfter-500*time.Millisecond)
	}
	waitState(t, e, c.id, wire.StateRecovering)
}

// watchListings returns a condition that holds once a round of the connection checks
// has listed a server and ended (a question for identities followed the listing):
// the checks then know that server and list it no more. Call it before any session
// is bound, or the listing may be missed.
func watchListings(t *testing.T, e *env) func() error {
	t.Helper()
	return watchRounds(t, e)(0)
}

// watchRounds returns conditions on the rounds of the connection checks: rounds(n)
// holds once a round has listed a server, and it and n rounds after it have ended.
// A round begins with its question for identities, so the question after a round's
// is asked once that round has ended and what it found lost is written. Call it
// before any session is bound, or the listing may be missed.
func watchRounds(t *testing.T, e *env) func(n int) func() error {
	t.Helper()
	var mu sync.Mutex
	listed, questions := false, 0 // questions for identities since the first listing
	nc := e.srv.ServiceConn(t)
	_, err := nc.Subscribe(connzSubject(embedded.ClientsAccount), func(m *nats.Msg) {
		var req connzRequest
		_ = json.Unmarshal(m.Data, &req)
		mu.Lock()
		defer mu.Unlock()
		if req.ServerName != "" {
			listed = true
		} else if listed {
			questions++
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return func(n int) func() error {
		return func() error {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case !listed:
				return errors.New("no round of the connection checks has listed a server")
			case questions < n+1:
				return fmt.Errorf("%d of the round that listed a server and the %d after it have ended", questions, n)
			}
			return nil
		}
	}
}
