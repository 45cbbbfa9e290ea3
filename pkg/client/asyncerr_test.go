package client_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
)

// TestAsyncErrorsGoToTheLogger: an error NATS reports asynchronously (here a publish
// the connection is not permitted) goes to the logger the application gave, or to
// its own handler when it set one. nats.go's default handler, which the SDK left in
// place, wrote it to the process's stderr past the logger.
func TestAsyncErrorsGoToTheLogger(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	var logs natstest.Buffer
	c, err := client.Connect(p.ClientURL(), client.WithLogger(logs.Logger()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Conn().Close()
	if err := c.Conn().Publish("$JS.API.INFO", nil); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "Permissions Violation") {
			return errors.New("not logged yet")
		}
		return nil
	})

	got := make(chan error, 1)
	var own natstest.Buffer
	c2, err := client.Connect(p.ClientURL(), client.WithLogger(own.Logger()),
		client.WithNATSOptions(nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { got <- err })))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Conn().Close()
	if err := c2.Conn().Publish("$JS.API.INFO", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if !strings.Contains(err.Error(), "Permissions Violation") {
			t.Fatalf("the application's handler got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the application's handler got nothing")
	}
	if strings.Contains(own.String(), "Permissions Violation") {
		t.Errorf("logged as well as handled by the application's handler: %s", own.String())
	}
}
