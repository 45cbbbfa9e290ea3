package client_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestHandlerPanicFailsOnlyItsMessage: a handler that panics fails its own message
// — a request is answered internal at once, a copy of it gets that answer again —
// and the registration goes on handling the next. The handler runs on a goroutine
// of the SDK, where an unrecovered panic ended the process, every session of it
// with it (the services' endpoints recover theirs: TestPanicsAreAnsweredInternal).
func TestHandlerPanicFailsOnlyItsMessage(t *testing.T) {
	p := rostertest.Start(t)
	ctx := ctxT(t)
	var logs natstest.Buffer
	recv, err := connect(t, p.ClientURL(), client.WithLogger(logs.Logger())).Open(ctx, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := recv.Handle("work", func(_ context.Context, m *client.Message) ([]byte, error) {
		if string(m.Payload) == "boom" {
			panic("the handler's own bug")
		}
		return m.Payload, nil
	}); err != nil {
		t.Fatal(err)
	}
	sender := open(t, p.ClientURL(), client.Options{})

	one := func(payload string, opts ...client.MessageOption) wire.MsgResult {
		t.Helper()
		res, err := sender.Request(ctx, client.ToSession(recv.ID()), "work", []byte(payload), 5*time.Second, opts...)
		if err != nil || len(res.Results) != 1 {
			t.Fatalf("request %q: got %+v, %v", payload, res, err)
		}
		return res.Results[0]
	}
	start := time.Now()
	r := one("boom", client.MessageID("boom-1"))
	if r.Status != wire.StatusError || !errors.Is(r.Error, client.ErrInternal) {
		t.Fatalf("request whose handler panicked: got %s %v, want an internal error", r.Status, r.Error)
	}
	if strings.Contains(r.Error.Message, "the handler's own bug") {
		t.Errorf("the panic's value reached the requester: %q", r.Error.Message)
	}
	if waited := time.Since(start); waited >= 5*time.Second {
		t.Errorf("answered after %v: the requester waited out its timeout", waited)
	}
	// A copy of it is answered with what the first got, not handled again.
	if r := one("boom", client.MessageID("boom-1")); r.Status != wire.StatusError || !errors.Is(r.Error, client.ErrInternal) {
		t.Errorf("copy of the request whose handler panicked: got %s %v, want internal again", r.Status, r.Error)
	}
	// A send whose handler panics, then the registration still works.
	if _, err := sender.Send(ctx, client.ToSession(recv.ID()), "work", []byte("boom")); err != nil {
		t.Fatal(err)
	}
	if r := one("fine"); r.Status != wire.StatusOK || string(r.Payload) != "fine" {
		t.Errorf("request after the panics: got %s %q %v, want ok fine", r.Status, r.Payload, r.Error)
	}
	// The receiver's log has the panic, with its value and where it was.
	if l := logs.String(); !strings.Contains(l, "the handler's own bug") || !strings.Contains(l, "receive_test.go") {
		t.Errorf("the panic is not logged with its value and stack:\n%s", l)
	}
}
