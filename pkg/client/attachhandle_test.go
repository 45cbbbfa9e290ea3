package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestHandleOnAnAttachedSessionTakesItsDeliveries: a session's deliveries go to the
// connection it is bound to. Handle on a session attached from another process
// subscribed on that process's connection while the session stayed bound to the
// opener's, so it received nothing while the sender was told delivered: 1. Handle
// now binds the session to the attaching connection first, as a resume does.
func TestHandleOnAnAttachedSessionTakesItsDeliveries(t *testing.T) {
	p := rostertest.Start(t)
	opener := open(t, p.ClientURL(), client.Options{})
	other, err := client.Connect(p.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close(context.Background()) })
	attached, err := other.Attach(ctxT(t), opener.ID(), opener.Token(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	if _, err := attached.Handle("jobs/run", func(_ context.Context, m *client.Message) ([]byte, error) {
		got <- string(m.Payload)
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	sender := open(t, p.ClientURL(), client.Options{})
	if _, err := sender.Send(ctxT(t), client.ToSession(opener.ID()), "jobs/run", []byte("go")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m != "go" {
			t.Fatalf("got %q, want go", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the attached session's handler received nothing")
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
	other, err := client.Connect(p.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close(context.Background()) })
	attached, err := other.Attach(ctxT(t), opener.ID(), opener.Token(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
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
	got := make(chan string, 1)
	if _, err := opener.Handle("jobs/run", func(_ context.Context, m *client.Message) ([]byte, error) {
		got <- string(m.Payload)
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	sender := open(t, p.ClientURL(), client.Options{})
	if _, err := sender.Send(ctxT(t), client.ToSession(opener.ID()), "jobs/run", []byte("back")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m != "back" {
			t.Fatalf("got %q, want back", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the opener did not get the session back")
	}
}
