package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/schematest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// readAll pages through the events req selects, limit at a time, until a page is
// empty, and returns them.
func readAll(t *testing.T, c *client, req wire.SessionEventsRequest) []wire.StoredSessionEvent {
	t.Helper()
	var out []wire.StoredSessionEvent
	for {
		var resp wire.SessionEventsResponse
		if err := c.call(wire.SubjectSessionEvents, &req, &resp); err != nil {
			t.Fatal(err)
		}
		if len(resp.Events) == 0 {
			return out
		}
		if resp.NextSeq != resp.Events[len(resp.Events)-1].Seq+1 {
			t.Fatalf("next_seq %d after an event at %d", resp.NextSeq, resp.Events[len(resp.Events)-1].Seq)
		}
		out = append(out, resp.Events...)
		req.StartSeq, req.StartTime = resp.NextSeq, nil
	}
}

// kindsOf lists "<session>:<kind>" of events, with names for the sessions.
func kindsOf(evs []wire.StoredSessionEvent, names map[string]string) []string {
	var out []string
	for _, e := range evs {
		out = append(out, names[e.Event.SessionID]+":"+string(e.Event.Kind))
	}
	return out
}

func TestEventsReadFromAPoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	adm := admin(t, nc)
	a, _ := open(t, nc, nil)
	b, _ := open(t, nc, nil)
	if err := a.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Set: map[string]string{"k": "v"}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.call(wire.SubjectSessionClose, &wire.SessionCloseRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	names := map[string]string{adm.id: "admin", a.id: "a", b.id: "b"}
	want := []string{"admin:opened", "a:opened", "b:opened", "a:updated", "b:closed"}
	// Events are published after the replies: wait until all five are stored.
	var all []wire.StoredSessionEvent
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if all = readAll(t, adm, wire.SessionEventsRequest{}); len(all) != len(want) {
			return fmt.Errorf("got %d events, want %d", len(all), len(want))
		}
		return nil
	})
	// The five are in stream order; the registry publishes each session's events in
	// order, and these sessions' requests were sequential.
	if got := kindsOf(all, names); !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i, ev := range all {
		if i > 0 && ev.Seq <= all[i-1].Seq {
			t.Fatalf("sequences out of order: %d after %d", ev.Seq, all[i-1].Seq)
		}
		if ev.Stored.IsZero() {
			t.Fatalf("event %d has no stored time", i)
		}
	}
	if keys := all[3].Event.Keys; !slices.Equal(keys, []string{"k"}) {
		t.Fatalf("updated event keys %v, want [k]", keys)
	}

	body := []byte(`{"limit":2}`)
	schematest.Validate(t, "session.events.request", body)
	reply := rawCall(t, adm, wire.SubjectSessionEvents, body)
	schematest.Validate(t, "session.events.response", reply.Data)

	// Pages of any size read the same events.
	for _, limit := range []int{1, 2, 4} {
		if got := readAll(t, adm, wire.SessionEventsRequest{Limit: limit}); !slices.Equal(kindsOf(got, names), want) {
			t.Fatalf("limit %d: got %v, want %v", limit, kindsOf(got, names), want)
		}
	}
	// From a sequence, and from a time: the stored time of an event starts at it.
	for i := range all {
		got := readAll(t, adm, wire.SessionEventsRequest{StartSeq: all[i].Seq})
		if !slices.Equal(kindsOf(got, names), want[i:]) {
			t.Fatalf("from seq %d: got %v, want %v", all[i].Seq, kindsOf(got, names), want[i:])
		}
		at := all[i].Stored
		got = readAll(t, adm, wire.SessionEventsRequest{StartTime: &at})
		if len(got) == 0 || got[0].Seq > all[i].Seq || got[len(got)-1].Seq != all[len(all)-1].Seq {
			t.Fatalf("from time %v: got %v, want from seq %d on", at, kindsOf(got, names), all[i].Seq)
		}
	}
	// By session and by kind: one kind is a subject filter; several are filtered
	// after reading.
	for _, tc := range []struct {
		req  wire.SessionEventsRequest
		want []string
	}{
		{wire.SessionEventsRequest{SessionID: a.id}, []string{"a:opened", "a:updated"}},
		{wire.SessionEventsRequest{Kinds: []wire.SessionEventKind{wire.EventOpened}}, []string{"admin:opened", "a:opened", "b:opened"}},
		{wire.SessionEventsRequest{Kinds: []wire.SessionEventKind{wire.EventUpdated, wire.EventClosed}}, []string{"a:updated", "b:closed"}},
		{wire.SessionEventsRequest{SessionID: b.id, Kinds: []wire.SessionEventKind{wire.EventClosed}}, []string{"b:closed"}},
		{wire.SessionEventsRequest{SessionID: b.id, Kinds: []wire.SessionEventKind{wire.EventUpdated}}, nil},
		{wire.SessionEventsRequest{Kinds: []wire.SessionEventKind{wire.EventClosed}, Limit: 1}, []string{"b:closed"}},
	} {
		if got := kindsOf(readAll(t, adm, tc.req), names); !slices.Equal(got, tc.want) {
			t.Errorf("%+v: got %v, want %v", tc.req, got, tc.want)
		}
	}
	// Nothing after the end: an empty page keeps the start.
	var resp wire.SessionEventsResponse
	end := all[len(all)-1].Seq + 1
	if err := adm.call(wire.SubjectSessionEvents, &wire.SessionEventsRequest{StartSeq: end}, &resp); err != nil || len(resp.Events) != 0 || resp.NextSeq != end {
		t.Fatalf("at the end: %v, %+v; want no events and next_seq %d", err, resp, end)
	}
}

func TestEventsPermissionsAndBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	user, _ := open(t, nc, nil)
	other, _ := open(t, nc, nil)
	viewer, _ := open(t, nc, &wire.SessionOpenRequest{Credentials: &wire.Credentials{Type: wire.CredentialsPassword, Username: "viewer", Password: "pw"}})

	// Own events need nothing; another session's, or every session's, VIEW_SESSION.
	var resp wire.SessionEventsResponse
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if err := user.call(wire.SubjectSessionEvents, &wire.SessionEventsRequest{SessionID: user.id}, &resp); err != nil {
			return err
		}
		if len(resp.Events) != 1 || resp.Events[0].Event.SessionID != user.id {
			return fmt.Errorf("got %+v, want the own opened event", resp.Events)
		}
		return nil
	})
	wantCode(t, user.call(wire.SubjectSessionEvents, &wire.SessionEventsRequest{SessionID: other.id}, nil), wire.CodeForbidden)
	wantCode(t, user.call(wire.SubjectSessionEvents, &wire.SessionEventsRequest{}, nil), wire.CodeForbidden)
	if err := viewer.call(wire.SubjectSessionEvents, &wire.SessionEventsRequest{SessionID: other.id}, nil); err != nil {
		t.Fatal(err)
	}
	if err := viewer.call(wire.SubjectSessionEvents, &wire.SessionEventsRequest{}, nil); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct{ name, body string }{
		{"malformed JSON", `{"limit":`},
		{"unknown field", `{"start":1}`},
		{"wrong type", `{"start_seq":"1"}`},
		{"seq and time", `{"start_seq":1,"start_time":"2026-01-01T00:00:00Z"}`},
		{"limit too high", `{"limit":1001}`},
		{"negative limit", `{"limit":-1}`},
		{"wait too long", `{"wait_ms":60001}`},
		{"negative wait", `{"wait_ms":-1}`},
		{"unknown kind", `{"kinds":["opened","renamed"]}`},
		{"bad session id", `{"session_id":"a b"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := wire.CallRaw(ctx, nc, wire.SubjectSessionEvents, viewer.header(), []byte(tc.body))
			wantCode(t, err, wire.CodeBadRequest)
		})
	}
	// A token that does not match.
	bad := &client{nc: nc, id: user.id, token: "wrong"}
	wantCode(t, bad.call(wire.SubjectSessionEvents, &wire.SessionEventsRequest{}, nil), wire.CodeInvalidToken)
}

// waitRead sends an events read that waits, and returns a channel for its answer.
func waitRead(c *client, req wire.SessionEventsRequest) <-chan readResult {
	out := make(chan readResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var resp wire.SessionEventsResponse
		err := wire.Call(ctx, c.nc, wire.SubjectSessionEvents, c.header(), &req, &resp)
		out <- readResult{&resp, err}
	}()
	return out
}

type readResult struct {
	resp *wire.SessionEventsResponse
	err  error
}

// heldReads waits until the instance holds n waiting reads.
func heldReads(t *testing.T, inst *instance, n int) {
	t.Helper()
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		inst.waiters.mu.Lock()
		defer inst.waiters.mu.Unlock()
		if len(inst.waiters.held) != n {
			return fmt.Errorf("%d reads held, want %d", len(inst.waiters.held), n)
		}
		return nil
	})
}

func TestEventsWaitForTheNextMatchingEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	// Held reads are read again only when the follower sees a matching event: the
	// periodic re-read, a safety net, must not be what answers them here.
	e.reg.waiters.mu.Lock()
	e.reg.waiters.requery = time.Hour
	e.reg.waiters.mu.Unlock()
	nc := e.srv.ClientConn(t)
	adm := admin(t, nc)
	a, _ := open(t, nc, nil)
	b, _ := open(t, nc, nil)
	var all []wire.StoredSessionEvent
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if all = readAll(t, adm, wire.SessionEventsRequest{}); len(all) != 3 {
			return fmt.Errorf("got %d events, want 3", len(all))
		}
		return nil
	})
	next := all[2].Seq + 1

	forA := waitRead(adm, wire.SessionEventsRequest{StartSeq: next, SessionID: a.id, WaitMS: 50000})
	closedOnly := waitRead(adm, wire.SessionEventsRequest{StartSeq: next, Kinds: []wire.SessionEventKind{wire.EventClosed}, WaitMS: 50000})
	heldReads(t, e.reg, 2)
	// b's update answers neither.
	if err := b.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Set: map[string]string{"k": "1"}}, nil); err != nil {
		t.Fatal(err)
	}
	e.waitEventCount(t, b.id, wire.EventUpdated, 1)
	// a's update answers the first, with a's event only.
	if err := a.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Set: map[string]string{"k": "2"}}, nil); err != nil {
		t.Fatal(err)
	}
	r := <-forA
	if r.err != nil {
		t.Fatal(r.err)
	}
	if len(r.resp.Events) != 1 || r.resp.Events[0].Event.SessionID != a.id || r.resp.Events[0].Event.Kind != wire.EventUpdated {
		t.Fatalf("got %+v, want a's updated event", r.resp.Events)
	}
	select {
	case r := <-closedOnly:
		t.Fatalf("a read for closed events was answered by updates: %+v %v", r.resp, r.err)
	default:
	}
	heldReads(t, e.reg, 1)
	if err := b.call(wire.SubjectSessionClose, &wire.SessionCloseRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	r = <-closedOnly
	if r.err != nil || len(r.resp.Events) != 1 || r.resp.Events[0].Event.Kind != wire.EventClosed || r.resp.Events[0].Event.SessionID != b.id {
		t.Fatalf("got %+v %v, want b's closed event", r.resp, r.err)
	}

	// A read that nothing answers gets an empty page at its deadline, keeping its
	// start.
	far := r.resp.NextSeq + 1000
	r = <-waitRead(adm, wire.SessionEventsRequest{StartSeq: far, WaitMS: 300})
	if r.err != nil || len(r.resp.Events) != 0 || r.resp.NextSeq != far {
		t.Fatalf("got %+v %v, want an empty page with next_seq %d", r.resp, r.err, far)
	}
}

func TestEventsWaitEndsWhenTheReaderCloses(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	adm := admin(t, nc)
	reader, _ := open(t, nc, &wire.SessionOpenRequest{Credentials: &wire.Credentials{Type: wire.CredentialsPassword, Username: "viewer", Password: "pw"}})
	quiet, _ := open(t, nc, nil)
	held := waitRead(reader, wire.SessionEventsRequest{SessionID: quiet.id, Kinds: []wire.SessionEventKind{wire.EventClosed}, WaitMS: 50000})
	heldReads(t, e.reg, 1)
	if err := adm.call(wire.SubjectSessionClose, &wire.SessionCloseRequest{ID: reader.id}, nil); err != nil {
		t.Fatal(err)
	}
	r := <-held
	wantCode(t, r.err, wire.CodeSessionClosed)
	heldReads(t, e.reg, 0)
}

// TestEventsFollowerMissesNothing follows every event with waiting reads while
// sessions open, change and close, and while the registry instance serving the
// reads is replaced: the follower sees every stored event once, in order.
func TestEventsFollowerMissesNothing(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	startAuth(t, srv)
	first := startRegistry(t, srv, Config{})
	nc := srv.ClientConn(t)
	adm := admin(t, nc)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu   sync.Mutex
		seen []uint64
	)
	followed := make(chan error, 1)
	go func() {
		req := wire.SessionEventsRequest{WaitMS: 500, Limit: 7}
		for ctx.Err() == nil {
			var resp wire.SessionEventsResponse
			rctx, rcancel := context.WithTimeout(ctx, 2*time.Second) // the read waits 500 ms
			err := wire.Call(rctx, nc, wire.SubjectSessionEvents, adm.header(), &req, &resp)
			rcancel()
			var we *wire.Error
			switch {
			case ctx.Err() != nil:
				followed <- nil
				return
			case errors.As(err, &we) && we.Code != wire.CodeUnavailable && we.Code != wire.CodeTimeout:
				followed <- err
				return
			case err != nil:
				// No instance at the moment, or a request cut by the restart — one
				// on its way to the stopping instance as it unsubscribed gets no
				// answer at all (timeout): ask again, as the SDK's FollowEvents does.
				time.Sleep(20 * time.Millisecond)
				continue
			}
			mu.Lock()
			for _, ev := range resp.Events {
				seen = append(seen, ev.Seq)
			}
			mu.Unlock()
			if len(resp.Events) > 0 {
				req.StartSeq = resp.NextSeq
			}
		}
		followed <- nil
	}()

	work := func(n int) {
		for range n {
			c, _ := open(t, nc, nil)
			if err := c.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Set: map[string]string{"k": "v"}}, nil); err != nil {
				t.Fatal(err)
			}
			if err := c.call(wire.SubjectSessionClose, &wire.SessionCloseRequest{}, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	work(10)
	// Replace the instance: a second starts, the first stops with reads held.
	second := startRegistry(t, srv, Config{})
	first.stop()
	work(10)
	_ = second

	js := srv.JetStream(t)
	stream, err := js.Stream(context.Background(), EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	// 1 admin opened + 20 × (opened, updated, closed).
	const want = 61
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		info, err := stream.Info(context.Background())
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if info.State.Msgs != want || len(seen) != want {
			return fmt.Errorf("stream holds %d events, the follower saw %d; want %d", info.State.Msgs, len(seen), want)
		}
		return nil
	})
	cancel()
	if err := <-followed; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, seq := range seen {
		if seq != uint64(i+1) {
			t.Fatalf("the follower saw sequence %d at position %d: %v", seq, i, seen)
		}
	}
}

// TestEventsStorageLostIsUnavailable: with the events stream gone (deleted by
// mistake, or its stream unreachable), a read answers unavailable, as storage that
// fails does elsewhere, not internal.
func TestEventsStorageLostIsUnavailable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	a, _ := open(t, nc, nil)
	if err := e.srv.JetStream(t).DeleteStream(context.Background(), EventsStream); err != nil {
		t.Fatal(err)
	}
	err := a.call(wire.SubjectSessionEvents, &wire.SessionEventsRequest{SessionID: a.id}, &wire.SessionEventsResponse{})
	if !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("got %v, want unavailable", err)
	}
}

// TestEventReadHeldWhileStoppingIsAnswered: a read that waits, taken before the
// instance began to stop and held while it drains, is answered (an empty page: the
// reader asks again, perhaps another instance) instead of left to its own timeout.
func TestEventReadHeldWhileStoppingIsAnswered(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	startAuth(t, srv)
	reached, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	in := startRegistry(t, srv, Config{beforeHold: func() {
		once.Do(func() { close(reached) })
		<-release
	}})
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(free) // before the instance's stop, should the test fail
	nc := srv.ClientConn(t)
	c, _ := open(t, nc, nil)
	answered := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var resp wire.SessionEventsResponse
		answered <- wire.Call(ctx, nc, wire.SubjectSessionEvents, c.header(), &wire.SessionEventsRequest{SessionID: c.id, StartSeq: 1 << 40, WaitMS: 15000}, &resp)
	}()
	<-reached
	stopped := make(chan struct{})
	go func() { in.stop(); close(stopped) }()
	// The endpoint no longer takes requests once the stop has begun.
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		_, err := nc.RequestMsg(&nats.Msg{Subject: wire.SubjectSessionGet, Header: c.header(), Data: []byte("{}")}, 5*time.Second)
		if !errors.Is(err, nats.ErrNoResponders) {
			return fmt.Errorf("get while stopping: %v, want no responders", err)
		}
		return nil
	})
	free()
	select {
	case err := <-answered:
		if err != nil {
			t.Fatalf("the held read: %v, want an empty page", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the read held while the instance stopped was never answered")
	}
	<-stopped
}
