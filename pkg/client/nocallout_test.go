package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/roster"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
)

// TestWithoutTheCallout: a NATS server that does not authenticate its clients
// through Roster's callout (roster serve --auth-callout=false, or a NATS configured
// by its operator) sends no nonce, and the SDK's connection key could not be
// proved: Connect failed with nats' "nkeys not supported by the server", so neither
// the SDK nor the command line could reach such a deployment. The connection now
// goes without a key, and its sessions receive under the keyless delivery prefix.
func TestWithoutTheCallout(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t, rostertest.WithConfig(func(c *roster.Config) { c.Auth.DisableCallout = true }))
	receiver := open(t, p.ClientURL(), client.Options{})
	if k := receiver.Client().Key(); k != "" {
		t.Fatalf("connection key %q on a server that cannot check one", k)
	}
	got := make(chan string, 1)
	if _, err := receiver.Handle("chat/room1", func(_ context.Context, m *client.Message) ([]byte, error) {
		got <- string(m.Payload)
		return []byte("ok"), nil
	}); err != nil {
		t.Fatal(err)
	}
	sender := open(t, p.ClientURL(), client.Options{})
	if _, err := sender.Send(ctxT(t), client.ToSession(receiver.ID()), "chat/room1", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m != "hello" {
			t.Fatalf("got %q, want hello", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the message sent was not received")
	}
	res, err := sender.Request(ctxT(t), client.ToSession(receiver.ID()), "chat/room1", []byte("q"), 5*time.Second)
	if err != nil || len(res.Results) != 1 || string(res.Results[0].Payload) != "ok" {
		t.Fatalf("request: got %+v, %v; want the answer ok", res, err)
	}
}
