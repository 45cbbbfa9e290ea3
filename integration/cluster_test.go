package integration

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/kvstore"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// open opens an anonymous session on a client connected to url.
func open(t *testing.T, url string, props map[string]string) *client.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := client.Open(ctx, url, client.Options{Properties: props, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("open on %s: %v", url, err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Close(cctx)
	})
	return s
}

// TestClusterServesSessionsLocksAndMessages runs Roster as it runs in production: a
// 3-node NATS cluster with R3 storage and two instances of each service as separate
// processes; sessions on different nodes lock and message each other.
func TestClusterServesSessionsLocksAndMessages(t *testing.T) {
	c := startCluster(t, 3)
	c.startServices(2)

	for _, bucket := range []string{"KV_ROSTER_SESSIONS", "KV_roster_locks", "KV_roster_policy"} {
		nc, err := c.serviceConn()
		if err != nil {
			t.Fatal(err)
		}
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := js.Stream(ctx, bucket)
		if err != nil {
			cancel()
			nc.Close()
			t.Fatalf("%s: %v", bucket, err)
		}
		info, err := s.Info(ctx)
		cancel()
		nc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.Replicas != 3 {
			t.Errorf("%s: got %d replicas, want 3", bucket, info.Config.Replicas)
		}
	}
	// In a cluster, reads go to the stream's leader, even for a bucket with one
	// replica: a replica added later answers direct gets before it has caught up.
	func() {
		nc, err := c.serviceConn()
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "r1_probe"}); err != nil {
			t.Fatal(err)
		}
		defer js.DeleteKeyValue(ctx, "r1_probe")
		r, err := kvstore.NewReader(ctx, js, "r1_probe")
		if err != nil {
			t.Fatal(err)
		}
		if r.Direct() {
			t.Error("a Reader in a cluster uses direct gets")
		}
	}()

	a := open(t, c.nodes[0].url(), map[string]string{"Desk": "FX"})
	b := open(t, c.nodes[2].url(), map[string]string{"Desk": "Rates"})

	got := make(chan string, 1)
	unhandle, err := b.Handle("chat/room1", func(_ context.Context, m *client.Message) ([]byte, error) {
		got <- string(m.Payload) + " from " + m.Sender
		return []byte("ack"), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unhandle()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// b was opened through another node a moment ago: a messaging instance learns of
	// it through its watch of the bucket, within the design's second (more on a
	// loaded machine). Send again while nothing matched.
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		n, err := a.Send(ctx, client.ToFilter(`Desk is "Rates"`), "chat/room1", []byte("hello"))
		switch {
		case err == nil && n == 0:
			return errors.New("send by filter: no session matched yet")
		case err != nil || n != 1:
			t.Fatalf("send by filter: got %d, %v; want 1 delivery", n, err)
		}
		return nil
	})
	select {
	case msg := <-got:
		if want := "hello from " + a.ID(); msg != want {
			t.Fatalf("got %q, want %q", msg, want)
		}
	case <-ctx.Done():
		t.Fatal("the message sent by filter did not arrive across nodes")
	}

	la, err := a.Lock(ctx, "orders/42", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.TryLock(ctx, "orders/42", client.LockOptions{}); err == nil {
		t.Fatal("two sessions on different nodes hold one exclusive lock")
	}
	if err := la.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	lb, err := b.Lock(ctx, "orders/42", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if lb.Token() <= la.Token() {
		t.Fatalf("fencing token went from %d to %d, want it to increase", la.Token(), lb.Token())
	}

	// Session events from the replicated stream: b follows a's updates with a read
	// that waits (a follower consumer on the R3 stream wakes it), from a's opened event.
	var opened *wire.SessionEventsResponse
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		var err error
		opened, err = b.Events(ctx, wire.SessionEventsRequest{SessionID: a.ID()})
		if err == nil && len(opened.Events) != 1 {
			err = fmt.Errorf("got %d events of a, want its opened event", len(opened.Events))
		}
		return err
	})
	held := make(chan *wire.SessionEventsResponse, 1)
	go func() {
		resp, err := b.Events(ctx, wire.SessionEventsRequest{SessionID: a.ID(), StartSeq: opened.NextSeq, WaitMS: 15000})
		if err != nil {
			t.Error(err)
		}
		held <- resp
	}()
	time.Sleep(200 * time.Millisecond) // let the read be held first; either order must work
	if err := a.SetProperties(ctx, map[string]string{"Desk": "Credit"}); err != nil {
		t.Fatal(err)
	}
	if resp := <-held; resp == nil || len(resp.Events) != 1 || resp.Events[0].Event.Kind != wire.EventUpdated {
		t.Fatalf("the waiting read got %+v, want a's updated event", resp)
	}
}
