package registry

import (
	"fmt"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
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
