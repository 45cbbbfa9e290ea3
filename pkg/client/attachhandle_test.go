package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
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
