package client_test

import (
	"errors"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestRequestStreamAfterCloseIsSessionClosed: once a session opened with Open is
// closed, its connection closes too; RequestStream then failed with ErrUnavailable
// ("connection to NATS closed") or a bare subscribe error, not with
// ErrSessionClosed as every other call does.
func TestRequestStreamAfterCloseIsSessionClosed(t *testing.T) {
	p := rostertest.Start(t)
	ctx := ctxT(t)
	s, err := client.Open(ctx, p.ClientURL(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() error {
		if !s.Client().Conn().IsClosed() {
			return errors.New("the session's own connection is not closed yet")
		}
		return nil
	})
	_, err = s.RequestStream(ctx, client.ToSession("x"), "ping", nil, time.Second, func(wire.MsgResult) {})
	if !errors.Is(err, client.ErrSessionClosed) {
		t.Errorf("RequestStream after close: got %v, want ErrSessionClosed", err)
	}
}
