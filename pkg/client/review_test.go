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
	"github.com/seed-3c836eab/roster/services/lock"
)

// TestRequestStreamAfterCloseIsSessionClosed: once a session opened with Open is
// closed, its connection closes too; RequestStream then failed with ErrUnavailable
// ("connection to NATS closed") or a bare subscribe error, not with
// ErrSessionClosed as every other call does.
func TestRequestStreamAfterCloseIsSessionClosed(t *testing.T) {
	t.Parallel()
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

// TestInfoIsTheCallersCopy: Info and Refresh return a copy of the session, but it
// shared its properties, fixed properties and roles with the session's own state,
// so a caller changing its copy changed what Properties, Roles and Info return to
// every other goroutine (and raced with them).
func TestInfoIsTheCallersCopy(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	s := open(t, p.ClientURL(), client.Options{Properties: map[string]string{"Desk": "FX"}})
	ctx := ctxT(t)
	mess := func(info wire.Session) {
		info.Properties["Desk"] = "changed"
		info.Fixed["$SessionId"] = "changed"
		info.Roles[0] = "changed"
	}
	check := func(after string) {
		t.Helper()
		if got := s.Properties()["Desk"]; got != "FX" {
			t.Errorf("Desk after changing the copy %s returned: got %q, want FX", after, got)
		}
		if got := s.Properties()["$SessionId"]; got != s.ID() {
			t.Errorf("%s after changing the copy %s returned: got %q, want %s", "$SessionId", after, got, s.ID())
		}
		if got := s.Roles(); len(got) == 0 || got[0] == "changed" {
			t.Errorf("roles after changing the copy %s returned: got %v", after, got)
		}
	}
	mess(s.Info())
	check("Info")
	info, err := s.Refresh(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mess(info)
	check("Refresh")
}

// TestTryLockGivenUpLeavesNoLock: a TryLock whose context ends before the answer
// comes (a slow or failing lock service) leaves nothing behind: a grant the caller
// never saw is withdrawn. TryLock sent no request id and withdrew nothing, so the
// lock was granted to the session after TryLock had returned ErrTimeout, and stayed
// held, unknown to the caller, for as long as the session lived.
func TestTryLockGivenUpLeavesNoLock(t *testing.T) {
	p := rostertest.Start(t, rostertest.WithConfig(func(c *roster.Config) { c.Services = []string{"auth", "registry"} }))
	s := open(t, p.ClientURL(), client.Options{HeartbeatInterval: 100 * time.Millisecond})
	other := open(t, p.ClientURL(), client.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// A slow lock service: it takes the try-once request now and hands it to a
	// lock instance only after the caller gave up.
	slow, err := p.Server().ConnectService()
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	taken := make(chan *nats.Msg, 1)
	sub, err := slow.Subscribe(wire.SubjectLockAcquire, func(m *nats.Msg) {
		select {
		case taken <- m:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := slow.Flush(); err != nil {
		t.Fatal(err)
	}
	tctx, tcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = s.TryLock(tctx, "slow", client.LockOptions{})
	tcancel()
	if !errors.Is(err, client.ErrTimeout) {
		t.Fatalf("TryLock nobody answers in time: got %v, want ErrTimeout", err)
	}
	var m *nats.Msg
	select {
	case m = <-taken:
	case <-ctx.Done():
		t.Fatal("the acquire never reached the slow service")
	}
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	startLockInstance(t, p, lock.Config{})
	// The request reaches a lock instance now, as it was sent; its answer no
	// longer has anyone waiting for it. Granted or refused, the lock must end up
	// free: the caller gave up on it.
	reply, err := slow.RequestMsgWithContext(ctx, &nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the late request was answered: %s %s", reply.Header.Get(wire.HeaderErrorCode), reply.Data)
	waitFree(t, other, "slow", "lock slow is not free")
}

// TestRequestOverMaxPayloadIsTooLarge: a request larger than the server's
// max_payload (here a send of 900 KB, 1.2 MB as JSON) is refused by the NATS
// client before it is sent. The error matched no SDK error (roster send exited 1),
// while a slightly smaller payload the messaging service refuses is ErrTooLarge
// (exit 2).
func TestRequestOverMaxPayloadIsTooLarge(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	s := open(t, p.ClientURL(), client.Options{})
	_, err := s.Send(ctxT(t), client.ToSession(s.ID()), "big", make([]byte, 900<<10))
	if !errors.Is(err, client.ErrTooLarge) {
		t.Fatalf("send of 900 KB: got %v, want ErrTooLarge", err)
	}
	if !errors.Is(err, nats.ErrMaxPayload) {
		t.Errorf("send of 900 KB: got %v, want it to wrap nats.ErrMaxPayload", err)
	}
}

// TestRequestStreamInFlightWhenItsSessionClosesIsSessionClosed: a RequestStream
// waiting for results when another goroutine closes its session (opened with Open,
// so its connection closes too) fails with ErrSessionClosed; it failed with nats.go's
// bare "nats: connection closed", which matched no SDK error (found by review).
func TestRequestStreamInFlightWhenItsSessionClosesIsSessionClosed(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	silent := open(t, p.ClientURL(), client.Options{})
	block := make(chan struct{})
	defer close(block)
	asked := make(chan struct{}, 1)
	if _, err := silent.Handle("ping", func(context.Context, *client.Message) ([]byte, error) {
		asked <- struct{}{}
		<-block
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	s, err := client.Open(ctx, p.ClientURL(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.RequestStream(ctx, client.ToSession(silent.ID()), "ping", nil, 30*time.Second, func(wire.MsgResult) {})
		done <- err
	}()
	<-asked // the stream is open, its one result outstanding
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, client.ErrSessionClosed) {
		t.Errorf("RequestStream when its session closed: got %v, want ErrSessionClosed", err)
	}
}
