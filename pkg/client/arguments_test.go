package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestNonsenseArgumentsAreBadRequest: arguments no call can mean fail with
// ErrBadRequest before anything is sent. Before:
//   - Request with a negative timeout waited for the service's default (5 s) when
//     small, and failed at once with ErrTimeout when below -10 s; RequestStream
//     took any negative timeout for the default;
//   - an Options.Timeout below a millisecond opened a session with the server's
//     default timeout (60 s) instead of the one asked for;
//   - a negative HeartbeatInterval was taken for the default;
//   - Handle with a nil handler succeeded, and the first delivery panicked in the
//     SDK's goroutine, ending the process; RequestStream with a nil fn panicked at
//     the first result.
func TestNonsenseArgumentsAreBadRequest(t *testing.T) {
	p := rostertest.Start(t)
	url := p.ClientURL()
	s := open(t, url, client.Options{})
	c := connect(t, url)
	noResult := func(wire.MsgResult) {}
	tests := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"Request timeout -1s", func(ctx context.Context) error {
			_, err := s.Request(ctx, client.ToSession(s.ID()), "p", nil, -time.Second)
			return err
		}},
		{"Request timeout -1h", func(ctx context.Context) error {
			_, err := s.Request(ctx, client.ToSession(s.ID()), "p", nil, -time.Hour)
			return err
		}},
		{"RequestStream timeout -1s", func(ctx context.Context) error {
			_, err := s.RequestStream(ctx, client.ToSession(s.ID()), "p", nil, -time.Second, noResult)
			return err
		}},
		{"RequestStream nil fn", func(ctx context.Context) error {
			_, err := s.RequestStream(ctx, client.ToSession(s.ID()), "p", nil, time.Second, nil)
			return err
		}},
		{"Handle nil handler", func(context.Context) error {
			remove, err := s.Handle("p", nil)
			if err == nil {
				_ = remove()
			}
			return err
		}},
		{"Open Timeout -1s", func(ctx context.Context) error {
			return openAndClose(ctx, url, client.Options{Timeout: -time.Second})
		}},
		{"Open Timeout 500µs", func(ctx context.Context) error {
			return openAndClose(ctx, url, client.Options{Timeout: 500 * time.Microsecond})
		}},
		{"Open HeartbeatInterval -1s", func(ctx context.Context) error {
			return openAndClose(ctx, url, client.Options{HeartbeatInterval: -time.Second})
		}},
		{"Client.Open HeartbeatInterval -1s", func(ctx context.Context) error {
			o, err := c.Open(ctx, client.Options{HeartbeatInterval: -time.Second})
			if err == nil {
				_ = o.Close(ctx)
			}
			return err
		}},
		{"Attach HeartbeatInterval -1s", func(ctx context.Context) error {
			// Not closed when taken: that would close s. c's Close stops serving it.
			_, err := c.Attach(ctx, s.ID(), s.Token(), client.Options{HeartbeatInterval: -time.Second})
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			err := tc.call(ctx)
			if !errors.Is(err, client.ErrBadRequest) {
				t.Errorf("got %v after %v, want ErrBadRequest", err, time.Since(start).Round(time.Millisecond))
			}
		})
	}
}

func openAndClose(ctx context.Context, url string, opts client.Options) error {
	s, err := client.Open(ctx, url, opts)
	if err == nil {
		_ = s.Close(ctx)
	}
	return err
}
