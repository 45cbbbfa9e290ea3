package client

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
)

// TestWaitsForOtherCallsEndAsRequestsDo: a ChangePrincipal waits for the one before
// it, and an Attach for the one running beside it, before sending anything. A
// deadline that passes meanwhile must give what a request's passing deadline gives
// (ErrTimeout), not the bare context error, which matches no SDK error.
func TestWaitsForOtherCallsEndAsRequestsDo(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	c, err := Connect(p.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	s, err := c.Open(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.changing <- struct{}{} // a change of principal in flight
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.ChangePrincipal(ctx, nil); !errors.Is(err, ErrTimeout) {
		t.Errorf("ChangePrincipal behind another, past its deadline: got %v, want ErrTimeout", err)
	}
	<-s.changing

	pending := &Session{c: c, id: "attaching", attaching: make(chan struct{})} // an Attach still checking
	if _, err := pending.share(ctx, "token"); !errors.Is(err, ErrTimeout) {
		t.Errorf("Attach beside another, past its deadline: got %v, want ErrTimeout", err)
	}
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := pending.share(cctx, "token"); !errors.Is(err, context.Canceled) {
		t.Errorf("Attach beside another, cancelled: got %v, want context.Canceled", err)
	}
}
