package client

import (
	"context"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestAReplyAfterTheCloseLeavesInfoClosed: a reply to a Refresh, SetProperties or
// resume sent before the session was closed here, and handled after, carries the
// ACTIVE record of before; taken as the session's info, Info said ACTIVE while
// State said CLOSED (found by review; the interleaving is left to the scheduler in
// a real run, so the reply's handling is called here directly).
func TestAReplyAfterTheCloseLeavesInfoClosed(t *testing.T) {
	srv := rostertest.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, srv.ClientURL(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	before, err := s.Refresh(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	s.learnInfo(&before) // the late reply
	if info := s.Info(); info.State != wire.StateClosed || s.State() != StateClosed {
		t.Errorf("after a late reply: Info().State %s, State() %s; want both CLOSED", info.State, s.State())
	}
}
