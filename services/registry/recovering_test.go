package registry

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

func TestRecoveringAndResume(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{ReconnectWindow: 2 * time.Second})
	first := e.srv.ClientConn(t)
	resumed, _ := open(t, first, &wire.SessionOpenRequest{TimeoutMS: 60000})
	lost, _ := open(t, first, &wire.SessionOpenRequest{TimeoutMS: 60000})
	oldConn := e.record(t, resumed.id).Connection
	first.Close()

	for _, c := range []*client{resumed, lost} {
		natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
			if r := e.record(t, c.id); r.State != wire.StateRecovering {
				return fmt.Errorf("session is %s, want RECOVERING", r.State)
			}
			return nil
		})
		e.waitEventCount(t, c.id, wire.EventDisconnected, 1)
	}

	second := e.srv.ClientConn(t)
	resumed.nc, lost.nc = second, second
	var resp wire.SessionResumeResponse
	if err := resumed.call(wire.SubjectSessionResume, nil, &resp); err != nil {
		t.Fatal(err)
	}
	r := e.record(t, resumed.id)
	if resp.Session.State != wire.StateActive || r.State != wire.StateActive || r.Connection == oldConn || r.Connection == "" {
		t.Fatalf("got state %s on %q, want ACTIVE on a new connection (was %q)", r.State, r.Connection, oldConn)
	}
	e.waitEventCount(t, resumed.id, wire.EventReconnected, 1)

	// The other one misses its window and is closed as failed.
	natstest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if r := e.record(t, lost.id); !r.Closed() {
			return fmt.Errorf("session is %s", r.State)
		}
		return nil
	})
	if r := e.record(t, lost.id); r.CloseReason != wire.ClosedFailed {
		t.Fatalf("got reason %q, want failed", r.CloseReason)
	}
	wantCode(t, lost.call(wire.SubjectSessionResume, nil, nil), wire.CodeSessionClosed)
	if r := e.record(t, resumed.id); r.State != wire.StateActive {
		t.Fatalf("resumed session is %s, want ACTIVE", r.State)
	}
}

// TestManyConnectionsLostAtOnce drops 1,500 connections together, as a NATS server
// restart does: more advisories than the first version's buffer held (1,024, beyond
// which they were dropped), and handled concurrently. Every session ends RECOVERING
// with one DISCONNECTED event.
func TestManyConnectionsLostAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1,500 connections")
	}
	t.Parallel()
	e := newEnv(t, Config{ReconnectWindow: time.Minute, Limits: Limits{SessionsPerPrincipal: 2000}})
	const n = 1500
	conns := make([]*nats.Conn, n)
	ids := make([]string, n)
	for i := range n {
		conns[i] = e.srv.ClientConn(t)
		c, _ := open(t, conns[i], &wire.SessionOpenRequest{TimeoutMS: 600000})
		ids[i] = c.id
	}
	for _, nc := range conns {
		nc.Close()
	}
	natstest.CheckFor(t, 60*time.Second, 100*time.Millisecond, func() error {
		active := 0
		e.reg.track.rangeRecords(func(r *sessions.Record) {
			if r.State != wire.StateRecovering {
				active++
			}
		})
		if active > 0 {
			return fmt.Errorf("%d of %d sessions not RECOVERING yet", active, n)
		}
		return nil
	})
	for _, id := range []string{ids[0], ids[n/2], ids[n-1]} {
		if r := e.record(t, id); r.State != wire.StateRecovering {
			t.Fatalf("session %s is %s in the bucket, want RECOVERING", id, r.State)
		}
		e.waitEventCount(t, id, wire.EventDisconnected, 1)
	}
}
