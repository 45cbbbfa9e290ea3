package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// replayTracker opens the registry's streams on nc and returns a tracker of an
// instance on it, not started, and a context ending within 10 s.
func replayTracker(t *testing.T, nc *nats.Conn) (*tracker, context.Context) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{}.WithDefaults()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	if _, err := openStore(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	return newTracker(&Service{cfg: cfg, nc: nc, js: js}), ctx
}

// silencer hands nats.go in-process connections to a server that go silent — what
// the server sends is dropped — from the first write holding trigger on. To the
// client it is a server that stopped answering without closing the connection: a
// cluster node holding the replay's consumer gone away, a stream between leaders.
type silencer struct {
	srv     *server.Server
	trigger []byte
	silent  atomic.Bool
}

func (s *silencer) InProcessConn() (net.Conn, error) {
	c, err := s.srv.InProcessConn()
	if err != nil {
		return nil, err
	}
	return &silencedConn{Conn: c, s: s}, nil
}

type silencedConn struct {
	net.Conn
	s *silencer
}

func (c *silencedConn) Write(b []byte) (int, error) {
	if bytes.Contains(b, c.s.trigger) {
		c.s.silent.Store(true)
	}
	return c.Conn.Write(b)
}

func (c *silencedConn) Read(b []byte) (int, error) {
	for {
		n, err := c.Conn.Read(b)
		if n > 0 && err == nil && c.s.silent.Load() {
			continue
		}
		return n, err
	}
}

// TestReplayDoesNotTakeSilenceForCaughtUp: a replay whose fetch hears nothing has not
// caught up while the stream holds activity it has not read. A fetch that no server
// answers ends, like one the server ends empty, with no message and no error, and
// replay took that for the end of the stream: the instance went on with the
// activity of the last persist interval missing, and expired sessions that were in
// use. Now an empty fetch asks the consumer what is left, and replay ends with an
// error (the caller retries, or counts every session active) unless nothing is.
func TestReplayDoesNotTakeSilenceForCaughtUp(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	sil := &silencer{srv: srv.Server.Server, trigger: []byte("$JS.API.CONSUMER.MSG.NEXT." + ActivityStream + ".")}
	tr, ctx := replayTracker(t, srv.ServiceConn(t, nats.InProcessServer(sil)))
	pub := srv.JetStream(t)
	data, _ := json.Marshal(wire.SessionActivity{Sessions: []string{strings.Repeat("a", wire.SessionIDLength)}})
	for range 3 {
		if _, err := pub.Publish(ctx, wire.SubjectSessionActivity, data); err != nil {
			t.Fatal(err)
		}
	}
	rctx, rcancel := context.WithTimeout(ctx, 4*time.Second)
	defer rcancel()
	err := tr.replay(rctx, time.Time{})
	if !sil.silent.Load() {
		t.Fatal("replay never fetched")
	}
	if err == nil {
		t.Fatalf("got a replay caught up, having read %d of 3 batches from a server that did not answer; want an error", len(tr.last))
	}
}

// TestReplayReadsTheActivity: replay reads every batch the stream holds, and on an
// empty stream ends at once as caught up.
func TestReplayReadsTheActivity(t *testing.T) {
	t.Parallel()
	tr, ctx := replayTracker(t, natstest.Start(t).ServiceConn(t))
	js := tr.s.js
	if err := tr.replay(ctx, time.Time{}); err != nil {
		t.Fatalf("replay of an empty stream: got %v, want caught up", err)
	}
	for _, c := range "abc" {
		id := strings.Repeat(string(c), wire.SessionIDLength)
		data, _ := json.Marshal(wire.SessionActivity{Sessions: []string{id}})
		if _, err := js.Publish(ctx, wire.SubjectSessionActivity, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.replay(ctx, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if got := len(tr.last); got != 3 {
		t.Fatalf("got activity of %d sessions, want 3", got)
	}
	stream, err := js.Stream(ctx, ActivityStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := stream.Info(ctx); err != nil || info.State.Consumers != 0 {
		t.Fatalf("consumers left on %s after replay: got %+v (%v), want 0", ActivityStream, info, err)
	}
}
