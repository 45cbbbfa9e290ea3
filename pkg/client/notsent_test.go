package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestARequestMadeWhileReconnectingIsNeverSent: a request made after nats.go noticed
// that the connection was lost, but before the SDK's disconnect callback ran, fails
// with ErrUnavailable saying it was not sent, and never reaches the server. nats.go
// runs its callbacks one at a time on one goroutine, so the callback comes late
// whenever another holds that goroutine; here the application's error handler does,
// until the request's outcome is known. Before, nats.go kept the request in its
// reconnect buffer (8 MB by default) and sent it once it reconnected: its caller,
// which gave up meanwhile (it cancels its context once the request waits in that
// buffer), had been told it failed, and the request arrived all the same.
func TestARequestMadeWhileReconnectingIsNeverSent(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	// No service answers: what reaches the request's subject is counted instead.
	arrived := make(chan string, 16)
	svc := srv.ServiceConn(t)
	if _, err := svc.Subscribe(wire.SubjectSessionOpen, func(m *nats.Msg) { arrived <- string(m.Data) }); err != nil {
		t.Fatal(err)
	}
	if err := svc.Flush(); err != nil {
		t.Fatal(err)
	}
	proxy := natstest.StartPartition(t, srv.ClientURL())

	release, held := make(chan struct{}), make(chan struct{}, 1)
	released := false
	unblock := func() {
		if !released {
			released = true
			close(release)
		}
	}
	defer unblock() // before the cleanups close the connection
	c := connect(t, proxy.URL(), client.WithNATSOptions(nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {
		select {
		case held <- struct{}{}:
		default:
		}
		<-release
	})))
	nc := c.Conn()
	// A subscription nobody reads is a slow consumer at its first message: the
	// error handler it calls holds nats.go's callback goroutine.
	if _, err := nc.ChanSubscribe("probe.hold", make(chan *nats.Msg)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("probe.hold", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the error handler was not called")
	}

	proxy.Cut()
	waitFor(t, func() error {
		if st := nc.Status(); st != nats.RECONNECTING {
			return fmt.Errorf("connection %v, want RECONNECTING", st)
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := c.Open(ctx, client.Options{Properties: map[string]string{"Probe": "while reconnecting"}})
		done <- err
	}()
	var err error
	waitFor(t, func() error {
		select {
		case err = <-done:
			return nil
		default:
		}
		if n, _ := nc.Buffered(); n > 0 {
			cancel() // the request waits in nats.go's buffer: its caller gives up
			err = <-done
			return nil
		}
		return errors.New("the open neither returned nor waits in nats.go's buffer")
	})
	if !errors.Is(err, client.ErrUnavailable) || !errors.Is(err, client.ErrNotSent) {
		t.Errorf("open while reconnecting: got %v, want ErrUnavailable (not sent)", err)
	}

	unblock()
	proxy.Heal()
	waitFor(t, func() error {
		if !nc.IsConnected() {
			return errors.New("not reconnected yet")
		}
		return nil
	})
	// Published after the reconnect on the same connection, the sentinel arrives
	// after anything nats.go sent for the request when it reconnected.
	if err := nc.Publish(wire.SubjectSessionOpen, []byte("sentinel")); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case data := <-arrived:
			if data == "sentinel" {
				return
			}
			t.Fatalf("the request its caller was told had failed reached the server after the reconnect: %s", data)
		case <-time.After(10 * time.Second):
			t.Fatal("the sentinel did not arrive")
		}
	}
}
