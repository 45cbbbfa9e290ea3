package registry

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
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
// timeout. Now what the server has not received waits for the next flush (and
// nothing is published while the connection is away).
func TestActivityWhosePublishFailedIsPublishedLater(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	px := natstest.StartPartition(t, srv.ClientURL())
	// A reconnect buffer of one byte takes one message, the first batch, and
	// refuses the next ones while the connection is away (flush now publishes
	// nothing then; it used to).
	nc, tr := trackerThrough(t, srv, px, nats.ReconnectBufSize(1))

	seen := watchActivity(t, srv)

	// More than two batches' worth (maxBatch ids each).
	const n = 2*20000 + 1
	want := map[string]struct{}{}
	for i := range n {
		id := fmt.Sprintf("%0*d", sessions.IDLength, i)
		want[id] = struct{}{}
		tr.activity(id)
	}
	px.Cut()
	natstest.WaitConnected(t, nc, false)
	tr.flush()
	px.Heal()
	natstest.WaitConnected(t, nc, true)
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

// TestActivityPublishedIntoALostConnectionIsPublishedAgain: a publish that nats.go
// takes is not a delivery — what it had not yet written, or what the network lost,
// when the connection failed is gone — and flush counted the batch out once
// published: the other instances never heard of that activity. Now a batch counts as
// out once the server has answered a ping sent after it; one it has not answered
// goes with the next batch.
func TestActivityPublishedIntoALostConnectionIsPublishedAgain(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	px := natstest.StartPartition(t, srv.ClientURL())
	nc, tr := trackerThrough(t, srv, px)

	seen := watchActivity(t, srv)

	id := fmt.Sprintf("%0*d", sessions.IDLength, 7)
	tr.activity(id)
	// The batch goes into a connection that drops it, and that fails after.
	px.Freeze()
	published := make(chan struct{})
	go func() { tr.flush(); close(published) }()
	// The flush has handed the batch to the connection (the frozen link drops it)
	// once it waits for the server's answer to its ping, or has returned.
	natstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		select {
		case <-published:
			return nil
		default:
		}
		tr.mu.Lock()
		defer tr.mu.Unlock()
		if len(tr.broadcast) > 0 {
			return fmt.Errorf("the batch is not taken yet")
		}
		return nil
	})
	px.Heal()
	<-published
	natstest.WaitConnected(t, nc, true)
	tr.flush()
	natstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		for len(seen) > 0 {
			var a wire.SessionActivity
			if err := json.Unmarshal((<-seen).Data, &a); err != nil {
				return err
			}
			if slices.Contains(a.Sessions, id) {
				return nil
			}
		}
		return fmt.Errorf("the activity of %s never reached the server", id)
	})
}

// watchActivity returns the activity batches published on srv from now on.
func watchActivity(t *testing.T, srv *natstest.Server) <-chan *nats.Msg {
	t.Helper()
	return natstest.Subscribe(t, srv.ServiceConn(t), wire.SubjectSessionActivity, 16)
}

// trackerThrough returns a tracker whose service connection to srv goes through px
// and reconnects at once, with the options given.
func trackerThrough(t *testing.T, srv *natstest.Server, px *natstest.Partition, opts ...nats.Option) (*nats.Conn, *tracker) {
	t.Helper()
	nc, err := nats.Connect(px.URL(), append([]nats.Option{nats.UserInfo(embedded.ServiceUser, srv.Config().ServicePassword),
		nats.ReconnectWait(20 * time.Millisecond), nats.MaxReconnects(-1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	tr, _ := replayTracker(t, nc)
	tr.s.log = slog.New(slog.DiscardHandler)
	return nc, tr
}
