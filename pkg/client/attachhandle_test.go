package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/roster"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestHandleOnAnAttachedSessionTakesItsDeliveries: a session's deliveries go to the
// connection it is bound to. Handle on a session attached from another process
// subscribed on that process's connection while the session stayed bound to the
// opener's, so it received nothing while the sender was told delivered: 1. Handle
// now binds the session to the attaching connection first, as a resume does.
func TestHandleOnAnAttachedSessionTakesItsDeliveries(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	opener := open(t, p.ClientURL(), client.Options{})
	attached := attachElsewhere(t, p.ClientURL(), opener)
	got := handleInto(t, attached, "jobs/run")
	sender := open(t, p.ClientURL(), client.Options{})
	sendAndReceive(t, sender, opener.ID(), got, "go")
}

// attachElsewhere attaches s on a client connection of its own, as another process
// would.
func attachElsewhere(t *testing.T, url string, s *client.Session) *client.Session {
	t.Helper()
	_, attached := attachClient(t, url, s)
	return attached
}

// attachClient connects another Client to url, closed when the test ends, and
// attaches s to it.
func attachClient(t *testing.T, url string, s *client.Session) (*client.Client, *client.Session) {
	t.Helper()
	other, err := client.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close(context.Background()) })
	attached, err := other.Attach(ctxT(t), s.ID(), s.Token(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return other, attached
}

// handleInto registers a handler on path passing the payloads it receives.
func handleInto(t *testing.T, s *client.Session, path string) <-chan string {
	t.Helper()
	got := make(chan string, 1)
	if _, err := s.Handle(path, func(_ context.Context, m *client.Message) ([]byte, error) {
		got <- string(m.Payload)
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// sendAndReceive sends payload to session id on jobs/run and waits until got has it.
func sendAndReceive(t *testing.T, sender *client.Session, id string, got <-chan string, payload string) {
	t.Helper()
	if _, err := sender.Send(ctxT(t), client.ToSession(id), "jobs/run", []byte(payload)); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m != payload {
			t.Fatalf("got %q, want %q", m, payload)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the handler did not receive %q", payload)
	}
}

// TestTakenOverSessionTellsItsOpener: when another client takes a session over (a
// resume on its connection: Handle on an attached session), the lock service
// releases the connection-scoped locks taken on the opener's connection, but the
// opener was not told: their Lost never closed, and the opener went on believing
// it held them. The registry now tells the opener's connection, whose SDK marks
// them lost; the opener takes the session back with Handle, and a notice of the
// first move arriving after that changes nothing.
func TestTakenOverSessionTellsItsOpener(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	opener := open(t, p.ClientURL(), client.Options{})
	held, err := opener.Lock(ctxT(t), "jobs/batch", client.LockOptions{Scope: wire.ScopeConnection})
	if err != nil {
		t.Fatal(err)
	}
	kept, err := opener.Lock(ctxT(t), "jobs/config", client.LockOptions{}) // session scope: stays
	if err != nil {
		t.Fatal(err)
	}
	attached := attachElsewhere(t, p.ClientURL(), opener)
	if _, err := attached.Handle("jobs/run", func(context.Context, *client.Message) ([]byte, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held.Lost():
		if err := held.Err(); !errors.Is(err, client.ErrLockLost) || !errors.Is(err, client.ErrUnavailable) {
			t.Fatalf("lost lock's error: %v, want lock_lost and unavailable", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the opener's connection-scoped lock was released, and its Lost never closed")
	}
	select {
	case <-kept.Lost():
		t.Fatalf("the session-scoped lock was lost: %v", kept.Err())
	default:
	}
	// The opener takes the session back; deliveries come to it again.
	got := handleInto(t, opener, "jobs/run")
	sender := open(t, p.ClientURL(), client.Options{})
	sendAndReceive(t, sender, opener.ID(), got, "back")
}

// TestGrantAfterTheSessionMovedIsLost: a connection-scoped grant whose answer the
// opener handles after the registry told it that another client took the session
// over was released with the move; the notice found nothing to mark lost, and the
// grant was then tracked with its Lost open for as long as the session lived.
func TestGrantAfterTheSessionMovedIsLost(t *testing.T) {
	p := rostertest.Start(t, rostertest.WithConfig(func(c *roster.Config) { c.Services = []string{"auth", "registry"} }))
	// A lock service that grants what it is asked, with the scope asked, and
	// holds its answer to "jobs/late" until the test lets it go.
	svc, err := p.Server().ConnectService()
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	late := make(chan *nats.Msg, 1)
	grant := func(m *nats.Msg, req *wire.LockAcquireRequest, token uint64) {
		data, _ := json.Marshal(wire.LockAcquireResponse{Lock: &wire.Lock{Name: req.Name, Mode: wire.LockExclusive, Scope: req.Scope, Token: token}})
		_ = m.Respond(data)
	}
	if _, err := svc.QueueSubscribe(wire.SubjectLockAcquire, "q", func(m *nats.Msg) {
		var req wire.LockAcquireRequest
		_ = json.Unmarshal(m.Data, &req)
		if req.Name == "jobs/late" {
			late <- m
			return
		}
		grant(m, &req, 1)
	}); err != nil {
		t.Fatal(err)
	}
	if err := svc.Flush(); err != nil {
		t.Fatal(err)
	}
	opener := open(t, p.ClientURL(), client.Options{})
	ctx := ctxT(t)
	// A lock held when the session moves: its Lost tells the notice was handled.
	before, err := opener.TryLock(ctx, "jobs/before", client.LockOptions{Scope: wire.ScopeConnection})
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		l   *client.Lock
		err error
	}
	granted := make(chan result, 1)
	go func() {
		l, err := opener.TryLock(ctx, "jobs/late", client.LockOptions{Scope: wire.ScopeConnection})
		granted <- result{l, err}
	}()
	var m *nats.Msg
	select {
	case m = <-late:
	case <-ctx.Done():
		t.Fatal("the acquire never reached the lock service")
	}
	attached := attachElsewhere(t, p.ClientURL(), opener)
	if _, err := attached.Handle("jobs/run", func(context.Context, *client.Message) ([]byte, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-before.Lost():
	case <-ctx.Done():
		t.Fatal("the opener was not told that the session moved")
	}
	grant(m, &wire.LockAcquireRequest{Name: "jobs/late", Scope: wire.ScopeConnection}, 2)
	var r result
	select {
	case r = <-granted:
	case <-ctx.Done():
		t.Fatal("TryLock did not return")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	select {
	case <-r.l.Lost():
		if err := r.l.Err(); !errors.Is(err, client.ErrLockLost) || !errors.Is(err, client.ErrUnavailable) {
			t.Errorf("the late grant's error: %v, want lock_lost and unavailable", err)
		}
	default:
		t.Error("a connection-scoped grant handled after the session moved away is not reported lost")
	}
}
