package endpoint_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestReplyLater: held requests free their slot at once (MaxConcurrent 1 holds
// five), and are answered later from another connection, with a body or an error.
func TestReplyLater(t *testing.T) {
	var mu sync.Mutex
	held := map[string]string{} // text -> reply subject
	f := setup(t, endpoint.Config{MaxConcurrent: 1}, func(_ context.Context, c *endpoint.Call, req *echoRequest) (*echoResponse, error) {
		mu.Lock()
		held[req.Text] = c.Reply
		mu.Unlock()
		return nil, endpoint.ErrReplyLater
	})
	results := make(map[string]chan error)
	var resps sync.Map
	for i := range 5 {
		text := fmt.Sprintf("r%d", i)
		ch := make(chan error, 1)
		results[text] = ch
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var resp echoResponse
			err := wire.Call(ctx, f.client, "roster.v1.session.echo", nil, &echoRequest{Text: text}, &resp)
			resps.Store(text, resp.Text)
			ch <- err
		}()
	}
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(held) != 5 {
			return fmt.Errorf("%d requests held, want 5", len(held))
		}
		return nil
	})
	other := f.server.ServiceConn(t)
	mu.Lock()
	for text, reply := range held {
		var err error
		if text == "r0" {
			err = endpoint.ReplyError(other, reply, wire.Errorf(wire.CodeTimeout, "waited too long"))
		} else {
			err = endpoint.Reply(other, reply, &echoResponse{Text: "late " + text})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	mu.Unlock()
	for text, ch := range results {
		err := <-ch
		if text == "r0" {
			if !errors.Is(err, wire.ErrTimeout) {
				t.Fatalf("r0: got %v, want timeout", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		if got, _ := resps.Load(text); got != "late "+text {
			t.Fatalf("%s: got %q", text, got)
		}
	}
}
