package registry

import (
	"testing"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestEventsWaitEndsBeforeTheReadersDeadline: a held read of events whose reader
// gives a deadline (Roster-Timeout) shorter than its wait_ms is answered, with an
// empty page, before that deadline. Before, it was held for the whole wait (here
// 50 s) and answered after its reader had given up.
func TestEventsWaitEndsBeforeTheReadersDeadline(t *testing.T) {
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	adm := admin(t, nc)
	far := uint64(1 << 40)
	var resp wire.SessionEventsResponse
	if err := natstest.CallGivingTimeout(t, nc, wire.SubjectSessionEvents, adm.header(),
		&wire.SessionEventsRequest{StartSeq: far, WaitMS: 50000}, 1000, &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.Events) != 0 || resp.NextSeq != far {
		t.Fatalf("got %+v, want an empty page with next_seq %d", resp, far)
	}
}
