package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/roster"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// A Lock whose deadline passes returns then, not once the lock service answers the
// withdrawal of its request: a service slow to answer (here: never) used to hold
// the caller up to the withdrawal's own bound.
func TestLockReturnsAtItsDeadlineWhileTheWithdrawalWaits(t *testing.T) {
	defer client.SetAbandonTimeout(time.Minute)()
	p := rostertest.Start(t, rostertest.WithConfig(func(c *roster.Config) { c.Services = []string{"auth", "registry"} }))
	slow, err := p.Server().ConnectService()
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	cancels := make(chan struct{}, 1)
	if _, err := slow.QueueSubscribe(wire.SubjectLockAcquire, "q", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if _, err := slow.QueueSubscribe(wire.SubjectLockCancel, "q", func(*nats.Msg) {
		select {
		case cancels <- struct{}{}:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := slow.Flush(); err != nil {
		t.Fatal(err)
	}
	s, err := client.Open(context.Background(), p.ClientURL(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close(context.Background()) }()

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := s.Lock(ctx, "x", client.LockOptions{})
		done <- err
	}()
	select {
	case <-cancels:
	case <-time.After(10 * time.Second):
		t.Fatal("no withdrawal was sent")
	}
	select {
	case err := <-done:
		if !errors.Is(err, client.ErrTimeout) {
			t.Errorf("got %v, want ErrTimeout", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Lock waits for the answer to its withdrawal (bounded by a minute here)")
	}
}
