package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/schematest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

func TestClientControl(t *testing.T) {
	t.Parallel()
	p := startSecured(t)
	ctx := ctxT(t)
	admin := open(t, p.ClientURL(), client.Options{Credentials: client.Password("root", "toor")})
	guest := open(t, p.ClientURL(), client.Options{})
	payroll1 := open(t, p.ClientURL(), client.Options{Properties: map[string]string{"Department": "Payroll"}})
	payroll2 := open(t, p.ClientURL(), client.Options{Properties: map[string]string{"Department": "Payroll"}})

	got, err := admin.GetSession(ctx, payroll1.ID())
	if err != nil || got.ID != payroll1.ID() || got.Properties["Department"] != "Payroll" {
		t.Fatalf("get: got %+v, %v", got, err)
	}
	page, err := admin.ListSessions(ctx, wire.SessionListRequest{Filter: `Department is "Payroll"`})
	if err != nil || page.Total != 2 || len(page.Sessions) != 2 {
		t.Fatalf("list: got %+v, %v; want the two Payroll sessions", page, err)
	}
	n, err := admin.UpdateSessions(ctx, wire.SessionUpdateRequest{Filter: `Department is "Payroll"`, Set: map[string]string{"Status": "Closing"}})
	if err != nil || n != 2 {
		t.Fatalf("update by filter: got %d, %v; want 2", n, err)
	}
	if info, err := payroll2.Refresh(ctx); err != nil || info.Properties["Status"] != "Closing" {
		t.Errorf("payroll2 after the update: got %v, %v", info.Properties, err)
	}
	if n, err := admin.UpdateSessions(ctx, wire.SessionUpdateRequest{ID: payroll1.ID(), Remove: []string{"Status"}}); err != nil || n != 1 {
		t.Errorf("update by id: got %d, %v; want 1", n, err)
	}
	if n, err := admin.CloseSessions(ctx, wire.SessionCloseRequest{Filter: `Department is "Payroll"`}); err != nil || n != 2 {
		t.Fatalf("close by filter: got %d, %v; want 2", n, err)
	}
	if err := payroll1.Keepalive(ctx); !errors.Is(err, client.ErrSessionClosed) {
		t.Errorf("closed session: got %v, want ErrSessionClosed", err)
	}
	if payroll1.State() != client.StateClosed || payroll1.Info().State != client.StateClosed {
		t.Errorf("closed session state: got %s", payroll1.State())
	}

	// An error about another session leaves the caller's own session alone.
	if _, err := admin.GetSession(ctx, payroll1.ID()); !errors.Is(err, client.ErrSessionClosed) {
		t.Errorf("get a closed session: got %v, want ErrSessionClosed", err)
	}
	if _, err := admin.Send(ctx, client.ToSession(payroll2.ID()), "news", nil); !errors.Is(err, client.ErrSessionClosed) {
		t.Errorf("send to a closed session: got %v, want ErrSessionClosed", err)
	}
	if _, err := admin.GetSession(ctx, "0000000000000000000000"); !errors.Is(err, client.ErrSessionNotFound) {
		t.Errorf("get an unknown session: got %v, want ErrSessionNotFound", err)
	}
	if got := admin.State(); got != client.StateActive {
		t.Errorf("the caller after errors about others: got %s, want ACTIVE", got)
	}
	if err := admin.Keepalive(ctx); err != nil {
		t.Errorf("the caller after errors about others: %v", err)
	}

	// The guest role has none of these permissions.
	if _, err := guest.GetSession(ctx, admin.ID()); !errors.Is(err, client.ErrForbidden) {
		t.Errorf("guest get: got %v, want ErrForbidden", err)
	}
	if _, err := guest.ListSessions(ctx, wire.SessionListRequest{}); !errors.Is(err, client.ErrForbidden) {
		t.Errorf("guest list: got %v, want ErrForbidden", err)
	}
	if _, err := guest.CloseSessions(ctx, wire.SessionCloseRequest{ID: admin.ID()}); !errors.Is(err, client.ErrForbidden) {
		t.Errorf("guest close: got %v, want ErrForbidden", err)
	}
	if _, err := guest.ListLocks(ctx, wire.LockListRequest{}); !errors.Is(err, client.ErrForbidden) {
		t.Errorf("guest list locks: got %v, want ErrForbidden", err)
	}
}

func TestFollowEvents(t *testing.T) {
	t.Parallel()
	p := startSecured(t)
	ctx := ctxT(t)
	admin := open(t, p.ClientURL(), client.Options{Credentials: client.Password("root", "toor")})
	guest := open(t, p.ClientURL(), client.Options{})

	// A guest reads its own events; every session's needs VIEW_SESSION.
	if _, err := guest.Events(ctx, wire.SessionEventsRequest{}); !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("guest reading every event: got %v, want ErrForbidden", err)
	}
	if _, err := guest.Events(ctx, wire.SessionEventsRequest{SessionID: guest.ID()}); err != nil {
		t.Fatalf("guest reading its own events: %v", err)
	}

	// The admin follows the closed events from now on; sessions open and close.
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	now := time.Now()
	got := make(chan wire.StoredSessionEvent, 10)
	done := make(chan error, 1)
	go func() {
		done <- admin.FollowEvents(fctx, wire.SessionEventsRequest{StartTime: &now, Kinds: []wire.SessionEventKind{wire.EventClosed}},
			func(ev wire.StoredSessionEvent) error { got <- ev; return nil })
	}()
	var want []string
	for range 3 {
		s := open(t, p.ClientURL(), client.Options{})
		want = append(want, s.ID())
		if err := s.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i, id := range want {
		select {
		case ev := <-got:
			if ev.Event.SessionID != id || ev.Event.Kind != wire.EventClosed || ev.Event.Reason != wire.ClosedByClient {
				t.Fatalf("event %d: got %+v, want %s closed by_client", i, ev.Event, id)
			}
		case err := <-done:
			t.Fatalf("FollowEvents ended: %v", err)
		case <-ctx.Done():
			t.Fatalf("event %d of %d not followed", i, len(want))
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("FollowEvents after cancel: got %v, want context.Canceled", err)
	}
}

// TestCloseByAnotherIsKnownAtOnce: a session closed by another session (or the
// server) learns it from the registry's notice to its connection, not at its next
// keepalive (a third of its 10-minute timeout away here), and its listeners are told
// why; a session closing itself is not cut off by the notice of its own close.
func TestCloseByAnotherIsKnownAtOnce(t *testing.T) {
	t.Parallel()
	p := startSecured(t)
	ctx := ctxT(t)
	admin := open(t, p.ClientURL(), client.Options{Credentials: client.Password("root", "toor")})
	// On a client of its own, whose connection outlives the session.
	cl, err := client.Connect(p.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cl.Close(context.Background()) }()
	target, err := cl.Open(ctx, client.Options{Timeout: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	changes := make(chan client.StateChange, 4)
	target.OnStateChange(func(ch client.StateChange) { changes <- ch })
	// The notice itself, as the connection receives it, against its schema.
	notices, err := cl.Conn().SubscribeSync(wire.SessionStateSubject(cl.Key(), target.ID()))
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CloseSessions(ctx, wire.SessionCloseRequest{ID: target.ID()}); err != nil {
		t.Fatal(err)
	}
	select {
	case ch := <-changes:
		if ch.New != client.StateClosed || ch.Reason != wire.ClosedByServer || !errors.Is(ch.Err, client.ErrSessionClosed) {
			t.Fatalf("got change %+v, want CLOSED by_server with ErrSessionClosed", ch)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the closed session did not learn of its close within 10s")
	}
	if err := target.Keepalive(ctx); !errors.Is(err, client.ErrSessionClosed) {
		t.Errorf("a call after the notice: got %v, want ErrSessionClosed", err)
	}
	if m, err := notices.NextMsg(5 * time.Second); err != nil {
		t.Errorf("the notice on %s: %v", notices.Subject, err)
	} else {
		schematest.Validate(t, "session.state", m.Data)
	}

	for range 20 {
		own := open(t, p.ClientURL(), client.Options{})
		if err := own.Close(ctx); err != nil {
			t.Fatalf("closing a session of its own: %v", err)
		}
		if own.State() != client.StateClosed {
			t.Fatalf("after Close: got state %s", own.State())
		}
	}
}

// TestCallInFlightWhenClosedByAnother: a session opened with Open owns its
// connection, which its close also closes. Closed by another session while a call of
// its own waits (here a Lock queued behind another holder), the call gets the
// service's answer — session_closed — rather than having its connection closed under
// it (unavailable).
func TestCallInFlightWhenClosedByAnother(t *testing.T) {
	t.Parallel()
	p := startSecured(t)
	ctx := ctxT(t)
	admin := open(t, p.ClientURL(), client.Options{Credentials: client.Password("root", "toor")})
	if _, err := admin.Lock(ctx, "orders/1", client.LockOptions{}); err != nil {
		t.Fatal(err)
	}
	owner := open(t, p.ClientURL(), client.Options{Credentials: client.Password("alice", "wonderland")})
	done := make(chan error, 1)
	go func() {
		_, err := owner.Lock(ctx, "orders/1", client.LockOptions{})
		done <- err
	}()
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		locks, err := admin.ListLocks(ctx, wire.LockListRequest{})
		if err != nil {
			return err
		}
		for _, l := range locks.Locks {
			if len(l.Waiters) == 1 {
				return nil
			}
		}
		return errors.New("the owner's Lock is not waiting yet")
	})
	if _, err := admin.CloseSessions(ctx, wire.SessionCloseRequest{ID: owner.ID()}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, client.ErrSessionClosed) {
			t.Fatalf("the waiting Lock of a session closed by another: got %v, want ErrSessionClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting Lock did not return within 10s of its session's close")
	}
}

// TestRepliesCannotPoseAsDeliveriesOrNotices: a client may name any subject as the
// reply subject of a request, and the service's reply lands there — in another
// connection's deliveries, say. Such a reply carries neither the messaging service's
// Roster-Sender nor the registry's Roster-Notice: the victim neither hands it to a
// handler nor takes it for the notice that its session closed, whatever its body.
// (A service stands in here that answers with the body an attacker would want.)
func TestRepliesCannotPoseAsDeliveriesOrNotices(t *testing.T) {
	t.Parallel()
	p := startSecured(t)
	ctx := ctxT(t)
	cl, err := client.Connect(p.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cl.Close(context.Background()) }()
	victim, err := cl.Open(ctx, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *client.Message, 4)
	remove, err := victim.Handle("*", func(_ context.Context, m *client.Message) ([]byte, error) {
		got <- m
		return nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = remove() }()

	svc, err := p.Server().ConnectService()
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	notice := fmt.Sprintf(`{"session_id":%q,"state":"CLOSED","reason":"by_server"}`, victim.ID())
	sub, err := svc.Subscribe(wire.LockPrefix+".echo", func(m *nats.Msg) { _ = m.Respond([]byte(notice)) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := svc.Flush(); err != nil {
		t.Fatal(err)
	}

	attacker, err := client.Connect(p.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = attacker.Close(context.Background()) }()
	for _, reply := range []string{
		wire.SessionStateSubject(cl.Key(), victim.ID()),
		wire.DeliverSubject(cl.Key(), victim.ID(), "chat"),
	} {
		if err := attacker.Conn().PublishRequest(wire.LockPrefix+".echo", reply, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := attacker.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	// A real delivery after the spoofed ones: once it arrives, they have too.
	sender := open(t, p.ClientURL(), client.Options{})
	if _, err := sender.Send(ctx, client.ToSession(victim.ID()), "chat", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if string(m.Payload) != "hello" || m.Sender != sender.ID() {
			t.Fatalf("the handler got %q from %q, want the real delivery from %s", m.Payload, m.Sender, sender.ID())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the real delivery did not arrive")
	}
	if victim.State() != client.StateActive {
		t.Fatalf("the victim's session is %s after a reply posing as the registry's notice, want ACTIVE", victim.State())
	}
	select {
	case m := <-got:
		t.Fatalf("the handler also got %q from %q", m.Payload, m.Sender)
	default:
	}
}

// TestStreamInFlightWhenClosedByAnother: as TestCallInFlightWhenClosedByAnother, for
// a RequestStream collecting results when its session is closed by another: the
// results still come, on the connection left open until the stream ends.
func TestStreamInFlightWhenClosedByAnother(t *testing.T) {
	t.Parallel()
	p := startSecured(t)
	ctx := ctxT(t)
	admin := open(t, p.ClientURL(), client.Options{Credentials: client.Password("root", "toor")})
	receiver := open(t, p.ClientURL(), client.Options{Properties: map[string]string{"Desk": "slow"}})
	release, asked := make(chan struct{}), make(chan struct{}, 1)
	if _, err := receiver.Handle("quotes/ask", func(context.Context, *client.Message) ([]byte, error) {
		asked <- struct{}{}
		<-release
		return []byte("1.08"), nil
	}); err != nil {
		t.Fatal(err)
	}
	owner := open(t, p.ClientURL(), client.Options{Credentials: client.Password("root", "toor")})
	type outcome struct {
		n       int
		err     error
		results []wire.MsgResult
	}
	done := make(chan outcome, 1)
	go func() {
		var o outcome
		o.n, o.err = owner.RequestStream(ctx, client.ToFilter(`Desk is "slow"`), "quotes/ask", nil, 20*time.Second, func(r wire.MsgResult) { o.results = append(o.results, r) })
		done <- o
	}()
	select {
	case <-asked:
	case <-time.After(10 * time.Second):
		t.Fatal("the receiver was not asked")
	}
	if _, err := admin.CloseSessions(ctx, wire.SessionCloseRequest{ID: owner.ID()}); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if owner.State() != client.StateClosed {
			return errors.New("the owner has not learnt its close yet")
		}
		return nil
	})
	close(release)
	select {
	case o := <-done:
		if o.err != nil || o.n != 1 || len(o.results) != 1 || string(o.results[0].Payload) != "1.08" {
			t.Fatalf("the stream of a session closed by another: got %d expected, results %+v, err %v; want the one answer", o.n, o.results, o.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not end")
	}
}
