package client_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestAnswerOverMaxPayloadIsAnError: a handler answers a request with more bytes
// than the server's max_payload, or with an error whose message is that long. NATS
// refuses to publish the reply, and the SDK only recorded that on its span: the
// requester heard nothing and waited out its timeout, to be told the receiver did
// not answer. The receiver answers too_large instead, and an error keeps its code.
func TestAnswerOverMaxPayloadIsAnError(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	receiver := open(t, p.ClientURL(), client.Options{})
	limit := int(receiver.Client().Conn().MaxPayload())
	if _, err := receiver.Handle("report", func(context.Context, *client.Message) ([]byte, error) {
		return make([]byte, limit+1), nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := receiver.Handle("refuse", func(context.Context, *client.Message) ([]byte, error) {
		return nil, wire.Errorf(wire.CodeForbidden, "%s", strings.Repeat("x", limit))
	}); err != nil {
		t.Fatal(err)
	}
	requester := open(t, p.ClientURL(), client.Options{})
	for _, c := range []struct {
		path string
		want error
	}{
		{"report", client.ErrTooLarge},
		{"refuse", client.ErrForbidden},
	} {
		res, err := requester.Request(ctxT(t), client.ToSession(receiver.ID()), c.path, nil, 2*time.Second)
		if err != nil || len(res.Results) != 1 {
			t.Fatalf("request on %s: got %+v, %v; want one result", c.path, res, err)
		}
		if r := res.Results[0]; r.Status != wire.StatusError || !errors.Is(r.Error, c.want) {
			t.Errorf("request on %s: got %s %v, want error %v", c.path, r.Status, r.Error, c.want)
		}
	}
}

// TestAnswerCarriesItsContentType: a handler could not say what its answer is: the
// result's content_type was always empty. It sets Message.AnswerContentType; an
// error answer has none.
func TestAnswerCarriesItsContentType(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	receiver := open(t, p.ClientURL(), client.Options{})
	if _, err := receiver.Handle("report", func(_ context.Context, m *client.Message) ([]byte, error) {
		m.AnswerContentType = "application/json"
		if string(m.Payload) == "fail" {
			return nil, wire.Errorf(wire.CodeNotFound, "no report")
		}
		return []byte(`{"ok":true}`), nil
	}); err != nil {
		t.Fatal(err)
	}
	requester := open(t, p.ClientURL(), client.Options{})
	res, err := requester.Request(ctxT(t), client.ToSession(receiver.ID()), "report", nil, 5*time.Second)
	if err != nil || len(res.Results) != 1 {
		t.Fatalf("request: got %+v, %v; want one result", res, err)
	}
	if r := res.Results[0]; r.Status != wire.StatusOK || r.ContentType != "application/json" || string(r.Payload) != `{"ok":true}` {
		t.Fatalf("got %s %q %s, want ok application/json {\"ok\":true}", r.Status, r.ContentType, r.Payload)
	}
	res, err = requester.Request(ctxT(t), client.ToSession(receiver.ID()), "report", []byte("fail"), 5*time.Second)
	if err != nil || len(res.Results) != 1 {
		t.Fatalf("request: got %+v, %v; want one result", res, err)
	}
	if r := res.Results[0]; !errors.Is(r.Error, client.ErrNotFound) || r.ContentType != "" {
		t.Fatalf("error answer: got %v with content type %q, want not_found and none", r.Error, r.ContentType)
	}
}
