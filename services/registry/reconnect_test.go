package registry

import (
	"fmt"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// A reconnect of the registry's own NATS connection (a blip of a few ms) makes
// every session count as active at the reconnect, although the activity batches
// published meanwhile are in the activity stream: a session silent since before the
// blip is closed up to a whole timeout late.
func TestReconnectCatchesUpOnActivity(t *testing.T) {
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	c, _ := open(t, nc, &wire.SessionOpenRequest{TimeoutMS: testTimeout.Milliseconds()})
	sent, replied := keepaliveTimes(t, c)
	time.Sleep(1500 * time.Millisecond) // silent since
	if err := e.reg.nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if r := e.record(t, c.id); !r.Closed() {
			return fmt.Errorf("session %s is %s", c.id, r.State)
		}
		return nil
	})
	r := e.record(t, c.id)
	if late := r.ClosedAt.Sub(replied) - testTimeout; late > time.Second {
		t.Fatalf("closed %v after its timeout (last keepalive sent %v before the close): want within 1 s", late, r.ClosedAt.Sub(sent))
	}
}
