package client_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

func TestSendToFilterAndSession(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	accounts := open(t, p.ClientURL(), client.Options{Properties: map[string]string{"Department": "Accounts"}})
	sales := open(t, p.ClientURL(), client.Options{Properties: map[string]string{"Department": "Sales"}})
	sender := open(t, p.ClientURL(), client.Options{})
	ctx := ctxT(t)

	got := make(chan *client.Message, 8)
	for _, s := range []*client.Session{accounts, sales} {
		if _, err := s.Handle("chat/room1", func(_ context.Context, m *client.Message) ([]byte, error) {
			got <- m
			return nil, nil
		}); err != nil {
			t.Fatalf("handle: %v", err)
		}
	}
	n, err := sender.Send(ctx, client.ToFilter(`Department is "Accounts"`), "chat/room1", []byte("hello"),
		client.ContentType("text/plain"), client.Header("X-Trace", "1"))
	if err != nil || n != 1 {
		t.Fatalf("send to filter: got %d, %v; want 1, nil", n, err)
	}
	m := receive(t, got)
	if m.Path != "chat/room1" || m.Sender != sender.ID() || m.ContentType != "text/plain" || string(m.Payload) != "hello" || m.Headers["X-Trace"] != "1" || m.IsRequest {
		t.Errorf("delivery: got %+v", m)
	}
	if n, err := sender.Send(ctx, client.ToSession(sales.ID()), "chat/room1", []byte("direct")); err != nil || n != 1 {
		t.Fatalf("send to session: got %d, %v; want 1, nil", n, err)
	}
	if m := receive(t, got); string(m.Payload) != "direct" {
		t.Errorf("direct delivery: got %q, want direct", m.Payload)
	}
	select {
	case m := <-got:
		t.Errorf("unexpected extra delivery %q", m.Payload)
	default:
	}
	if _, err := sender.Send(ctx, client.ToFilter(`Department is`), "chat/room1", nil); !errors.Is(err, client.ErrInvalidFilter) {
		t.Errorf("bad filter: got %v, want ErrInvalidFilter", err)
	}
	if _, err := sender.Send(ctx, client.ToFilter("all"), "bad path", nil); !errors.Is(err, client.ErrInvalidName) {
		t.Errorf("bad path: got %v, want ErrInvalidName", err)
	}
}

func receive(t *testing.T, ch <-chan *client.Message) *client.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery within 10s")
		return nil
	}
}

func TestRequestAndHandle(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	ctx := ctxT(t)
	echo := open(t, p.ClientURL(), client.Options{Properties: map[string]string{"Role": "echo"}})
	refuser := open(t, p.ClientURL(), client.Options{Properties: map[string]string{"Role": "refuser"}})
	requester := open(t, p.ClientURL(), client.Options{})
	stop, err := echo.Handle("*", func(_ context.Context, m *client.Message) ([]byte, error) {
		return append([]byte(m.Path+":"), m.Payload...), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := refuser.Handle("calc/add", func(context.Context, *client.Message) ([]byte, error) {
		return nil, wire.Errorf(wire.CodeForbidden, "not for you")
	}); err != nil {
		t.Fatal(err)
	}

	res, err := requester.Request(ctx, client.ToFilter("has Role"), "calc/add", []byte("1+1"), 5*time.Second)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	if res.Expected != 2 || len(res.Results) != 2 {
		t.Fatalf("results: got expected %d, %d results; want 2, 2", res.Expected, len(res.Results))
	}
	for _, r := range res.Results {
		switch r.SessionID {
		case echo.ID():
			if r.Status != wire.StatusOK || string(r.Payload) != "calc/add:1+1" {
				t.Errorf("echo: got %s %q, want ok calc/add:1+1", r.Status, r.Payload)
			}
		case refuser.ID():
			if r.Status != wire.StatusError || !errors.Is(r.Error, client.ErrForbidden) {
				t.Errorf("refuser: got %s %v, want error forbidden", r.Status, r.Error)
			}
		default:
			t.Errorf("result from unexpected session %s", r.SessionID)
		}
	}

	var streamed []string
	n, err := requester.RequestStream(ctx, client.ToSession(echo.ID()), "ping", []byte("x"), 5*time.Second, func(r wire.MsgResult) {
		streamed = append(streamed, string(r.Payload))
	})
	if err != nil || n != 1 || !slices.Equal(streamed, []string{"ping:x"}) {
		t.Errorf("streamed request: got %d %v %v, want 1 [ping:x] nil", n, streamed, err)
	}

	// Once the handler is removed the session has nobody on the path: gone.
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	res, err = requester.Request(ctx, client.ToSession(echo.ID()), "ping", nil, time.Second)
	if err != nil || len(res.Results) != 1 || res.Results[0].Status != wire.StatusGone {
		t.Errorf("request without a handler: got %+v, %v; want one gone result", res, err)
	}
}
