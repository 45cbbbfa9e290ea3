package registry

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestActivityWhosePublishFailedIsPublishedLater: flush took the activity out of the
// set it publishes before publishing it, and a publish that failed — the reconnect
// buffer full during a long disconnect, here after the first of three batches —
// lost what was not out: the other instances never heard of that activity, and one
// of them closed such a session a timeout after an earlier request, before its
// timeout. Now what was not published waits for the next flush.
func TestActivityWhosePublishFailedIsPublishedLater(t *testing.T) {
	srv := startServer(t)
	px := natstest.StartPartition(t, srv.ClientURL())
	// A reconnect buffer of one byte takes one message, the first batch, and
	// refuses the next ones while the connection is away.
	nc, err := nats.Connect(px.URL(), nats.UserInfo(embedded.ServiceUser, srv.Config().ServicePassword),
		nats.ReconnectBufSize(1), nats.ReconnectWait(20*time.Millisecond), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	tr, _ := replayTracker(t, nc)
	tr.s.log = slog.New(slog.DiscardHandler)

	seen := make(chan *nats.Msg, 16)
	watch := srv.ServiceConn(t)
	if _, err := watch.ChanSubscribe(wire.SubjectSessionActivity, seen); err != nil {
		t.Fatal(err)
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}

	// More than two batches' worth (maxBatch ids each).
	const n = 2*20000 + 1
	want := map[string]struct{}{}
	for i := range n {
		id := fmt.Sprintf("%0*d", sessions.IDLength, i)
		want[id] = struct{}{}
		tr.activity(id)
	}
	px.Cut()
	natstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if nc.IsConnected() {
			return fmt.Errorf("still connected")
		}
		return nil
	})
	tr.flush()
	px.Heal()
	natstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if !nc.IsConnected() {
			return fmt.Errorf("not reconnected yet")
		}
		return nil
	})
	tr.flush()
	natstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		for len(seen) > 0 {
			var a wire.SessionActivity
			if err := json.Unmarshal((<-seen).Data, &a); err != nil {
				return err
			}
			for _, id := range a.Sessions {
				delete(want, id)
			}
		}
		if len(want) > 0 {
			return fmt.Errorf("%d of %d ids never published", len(want), n)
		}
		return nil
	})
}
