package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/roster"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// Client.Close closes the sessions opened on the client and leaves the ones taken
// with Attach open: they were opened elsewhere, and their opener goes on using
// them. It used to close them on the server too.
func TestClientCloseLeavesAttachedSessionsOpen(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	opener := open(t, p.ClientURL(), client.Options{})
	c, err := client.Connect(p.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Attach(ctxT(t), opener.ID(), opener.Token(), client.Options{}); err != nil {
		t.Fatalf("attach: %v", err)
	}
	own, err := c.Open(ctxT(t), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(ctxT(t)); err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, err := opener.Refresh(ctxT(t)); err != nil {
		t.Errorf("the attached session after Client.Close: %v; want it open", err)
	}
	if got := own.State(); got != client.StateClosed {
		t.Errorf("the session opened on the client: %s, want CLOSED", got)
	}
}

// An Unlock whose release fails without an answer (the lock service is away) keeps
// the lock tracked: it may still be held, so its loss is still reported, and Unlock
// may be called again. It used to forget the lock.
func TestUnlockThatFailsKeepsTheLockTracked(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t, rostertest.WithConfig(func(c *roster.Config) { c.Services = []string{"auth", "registry"} }))
	// A lock service that grants and then stops answering.
	svc, err := p.Server().ConnectService()
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	if _, err := svc.QueueSubscribe(wire.SubjectLockAcquire, "q", func(m *nats.Msg) {
		data, _ := json.Marshal(wire.LockAcquireResponse{Lock: &wire.Lock{Name: "jobs/1", Mode: wire.LockExclusive, Scope: wire.ScopeSession, Token: 1}})
		_ = m.Respond(data)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.QueueSubscribe(wire.SubjectLockRelease, "q", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := svc.Flush(); err != nil {
		t.Fatal(err)
	}
	s := open(t, p.ClientURL(), client.Options{})
	l, err := s.TryLock(ctxT(t), "jobs/1", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := l.Unlock(ctx); !errors.Is(err, client.ErrTimeout) {
		t.Fatalf("unlock nobody answers: got %v, want ErrTimeout", err)
	}
	if err := s.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Lost():
	default:
		t.Error("the lock whose release failed was not reported lost when its session closed")
	}
}

// TestReleaseForgetsOnlyTheLockItReleased: Session.Release forgot whatever lock of
// the name the session tracked when its answer came, so a grant of the name made
// after the release (a new token) and handled before the release's answer was
// forgotten too: its Lost never closed when the session did.
func TestReleaseForgetsOnlyTheLockItReleased(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t, rostertest.WithConfig(func(c *roster.Config) { c.Services = []string{"auth", "registry"} }))
	// A lock service that grants with a new token every time and answers a release
	// when the test lets it.
	svc, err := p.Server().ConnectService()
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	var token atomic.Uint64
	if _, err := svc.QueueSubscribe(wire.SubjectLockAcquire, "q", func(m *nats.Msg) {
		data, _ := json.Marshal(wire.LockAcquireResponse{Lock: &wire.Lock{Name: "jobs/1", Mode: wire.LockExclusive, Scope: wire.ScopeSession, Token: token.Add(1)}})
		_ = m.Respond(data)
	}); err != nil {
		t.Fatal(err)
	}
	releases := make(chan *nats.Msg, 1)
	if _, err := svc.QueueSubscribe(wire.SubjectLockRelease, "q", func(m *nats.Msg) { releases <- m }); err != nil {
		t.Fatal(err)
	}
	if err := svc.Flush(); err != nil {
		t.Fatal(err)
	}
	s := open(t, p.ClientURL(), client.Options{})
	ctx := ctxT(t)
	first, err := s.TryLock(ctx, "jobs/1", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan error, 1)
	go func() {
		_, err := s.Release(ctx, "jobs/1", 0)
		released <- err
	}()
	var m *nats.Msg
	select {
	case m = <-releases:
	case <-ctx.Done():
		t.Fatal("the release never reached the lock service")
	}
	second, err := s.TryLock(ctx, "jobs/1", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if second.Token() == first.Token() {
		t.Fatalf("the second grant has the first's token %d", first.Token())
	}
	data, _ := json.Marshal(wire.LockReleaseResponse{Lock: &wire.Lock{Name: "jobs/1", Mode: wire.LockExclusive, Scope: wire.ScopeSession, Token: first.Token()}})
	if err := m.Respond(data); err != nil {
		t.Fatal(err)
	}
	if err := within(t, "release", released); err != nil {
		t.Fatalf("release: %v", err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-second.Lost():
	default:
		t.Error("the lock granted after the release was not reported lost when its session closed")
	}
}

// TestHandleOnAClosedConnectionIsUnavailable: once Client.Close has returned, a
// call on a session taken with Attach fails with ErrUnavailable (Client.Close's
// doc). Handle on one already bound here failed with nats' bare "connection
// closed", which matches no SDK error.
func TestHandleOnAClosedConnectionIsUnavailable(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	opener := open(t, p.ClientURL(), client.Options{})
	c, attached := attachClient(t, p.ClientURL(), opener)
	handleInto(t, attached, "jobs/run") // binds the session here
	if err := c.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := attached.Handle("jobs/other", func(context.Context, *client.Message) ([]byte, error) { return nil, nil }); !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("Handle after Client.Close: got %v, want ErrUnavailable", err)
	}
	if _, err := attached.RequestStream(ctxT(t), client.ToSession(opener.ID()), "jobs/run", nil, 0, func(wire.MsgResult) {}); !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("RequestStream after Client.Close: got %v, want ErrUnavailable", err)
	}
}

// TestHandleRacingClientCloseDoesNotOutliveIt: Client.Close stops a session taken
// with Attach without closing it. A Handle that had made its subscription when
// Close stopped the session registered all the same, after the stop: Handle
// returned no error, and the registration's dispatcher waited for deliveries
// forever, with nothing left to stop it. It now fails with ErrUnavailable, and
// leaves nothing running.
func TestHandleRacingClientCloseDoesNotOutliveIt(t *testing.T) {
	p := rostertest.Start(t)
	opener := open(t, p.ClientURL(), client.Options{})
	c, attached := attachClient(t, p.ClientURL(), opener)
	handleInto(t, attached, "jobs/run") // binds the session here
	closeErr := make(chan error, 1)
	var once sync.Once
	t.Cleanup(client.SetHandleRegistering(func() {
		once.Do(func() { closeErr <- c.Close(ctxT(t)) })
	}))
	remove, err := attached.Handle("jobs/other", func(context.Context, *client.Message) ([]byte, error) { return nil, nil })
	if remove != nil {
		t.Cleanup(func() { _ = remove() })
	}
	if err := <-closeErr; err != nil {
		t.Fatal(err)
	}
	if !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("Handle whose registration came after Client.Close stopped the session: got %v, want ErrUnavailable", err)
	}
	// Handle's goroutines: the registration's dispatcher, and its handlers.
	running := func() int {
		buf := make([]byte, 1<<20)
		for {
			n := runtime.Stack(buf, true)
			if n < len(buf) {
				return strings.Count(string(buf[:n]), "client.(*Session).Handle.func")
			}
			buf = make([]byte, 2*len(buf))
		}
	}
	waitFor(t, func() error {
		if n := running(); n > 0 {
			return fmt.Errorf("%d goroutines of Handle still run once Client.Close and Handle have returned", n)
		}
		return nil
	})
}

// TestClientCloseWithdrawsAnAttachedSessionsLockWait: Client.Close leaves a session
// taken with Attach open on the server, and ends the Lock calls waiting on it. Their
// request was withdrawn by a goroutine that raced the connection's close, and lost:
// the request stayed queued, and once the lock was free the still-open session was
// granted it, with nobody to use or release it.
func TestClientCloseWithdrawsAnAttachedSessionsLockWait(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	opener := open(t, p.ClientURL(), client.Options{})
	holder := open(t, p.ClientURL(), client.Options{})
	ctx := ctxT(t)
	held, err := holder.Lock(ctx, "jobs/wanted", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Connect(p.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	attached, err := c.Attach(ctx, opener.ID(), opener.Token(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() {
		_, err := attached.Lock(context.Background(), "jobs/wanted", client.LockOptions{})
		waitErr <- err
	}()
	waitFor(t, func() error { return waiters(ctx, holder, "jobs/wanted", 1) })
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := within(t, "the Lock call", waitErr); !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("the Lock call waiting when Client.Close ran: got %v, want ErrUnavailable", err)
	}
	if err := waiters(ctx, holder, "jobs/wanted", 0); err != nil {
		t.Errorf("once Client.Close returned: %v", err)
	}
	if err := held.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	waitFree(t, open(t, p.ClientURL(), client.Options{}), "jobs/wanted", "the lock its holder released")
}

// waitFree waits until s can take the lock name (and gives it back): it has been
// released. what names the lock in the error.
func waitFree(t *testing.T, s *client.Session, name, what string) {
	t.Helper()
	waitFor(t, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		l, err := s.TryLock(ctx, name, client.LockOptions{})
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return l.Unlock(ctx)
	})
}

// A session closed while a Lock of it waits is closed with the reason the close
// had: by_client for its own Close, by_server for another session's. The lock
// service answers the waiting acquire session_closed without a reason, and that
// answer, coming before the close's own, used to close the session on this side as
// failed: OnStateChange and Info said failed for a session the application closed.
func TestACloseWithALockWaitingKeepsItsReason(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	holder := open(t, p.ClientURL(), client.Options{})
	admin := open(t, p.ClientURL(), client.Options{})
	if _, err := holder.Lock(ctxT(t), "busy", client.LockOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		reason wire.CloseReason
		close  func(*client.Session) error
	}{
		{wire.ClosedByClient, func(s *client.Session) error { return s.Close(ctxT(t)) }},
		{wire.ClosedByServer, func(s *client.Session) error {
			_, err := admin.CloseSessions(ctxT(t), wire.SessionCloseRequest{ID: s.ID()})
			return err
		}},
	} {
		t.Run(string(tc.reason), func(t *testing.T) {
			s := open(t, p.ClientURL(), client.Options{})
			changes := make(chan client.StateChange, 4)
			s.OnStateChange(func(ch client.StateChange) { changes <- ch })
			lockErr := make(chan error, 1)
			go func() {
				_, err := s.Lock(context.Background(), "busy", client.LockOptions{})
				lockErr <- err
			}()
			waitFor(t, func() error { return waiters(ctxT(t), holder, "busy", 1) })
			if err := tc.close(s); err != nil {
				t.Fatal(err)
			}
			if err := within(t, "lock", lockErr); !errors.Is(err, client.ErrSessionClosed) {
				t.Errorf("the waiting Lock: got %v, want ErrSessionClosed", err)
			}
			ch := nextState(t, changes)
			if ch.New != client.StateClosed || ch.Reason != tc.reason {
				t.Errorf("state change: got %s -> %s (%s) %v, want CLOSED (%s)", ch.Old, ch.New, ch.Reason, ch.Err, tc.reason)
			}
			if got := s.Info().CloseReason; got != tc.reason {
				t.Errorf("Info().CloseReason: got %s, want %s", got, tc.reason)
			}
		})
	}
}

// A request in flight when its own session is closed (its Close, from another
// goroutine) fails with an error matching ErrSessionClosed, as every later call
// does and as RequestStream's does. It failed with ErrUnavailable alone, saying
// "connection to NATS lost during the request" about the connection Close had
// closed once the request had waited its 5 s: an application closing its session
// at shutdown was told Roster had gone away.
func TestARequestInFlightWhenItsSessionClosesSaysSo(t *testing.T) {
	t.Parallel()
	_, s, silent := inFlight(t, false)
	reqErr := s.request(silent)
	if err := s.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := within(t, "request", reqErr); !errors.Is(err, client.ErrSessionClosed) {
		t.Errorf("request in flight at Close: got %v, want ErrSessionClosed", err)
	}
}

// TestClientCloseReportsAnAttachedSessionsConnectionLocksLost: a session taken with
// Attach (and bound here by Handle) stays open on the server when its Client closes, and so do its
// session-scoped locks; its connection-scoped ones go with the connection Close
// closes — the server releases them and grants them to the next session. Close
// stopped serving the session here (finish) without a word to its locks, and the
// closed connection's handler no longer found the session: the *Lock of a
// connection-scoped hold kept its Lost open for good, its holder unaware that
// another session held the lock.
func TestClientCloseReportsAnAttachedSessionsConnectionLocksLost(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	opener := open(t, p.ClientURL(), client.Options{})
	ctx := ctxT(t)
	c, err := client.Connect(p.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	attached, err := c.Attach(ctx, opener.ID(), opener.Token(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Handle binds the session to this client's connection, where a
	// connection-scoped lock of it is then taken.
	if _, err := attached.Handle("jobs/notices", func(context.Context, *client.Message) ([]byte, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	conn, err := attached.Lock(ctx, "jobs/conn", client.LockOptions{Scope: wire.ScopeConnection})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := attached.Lock(ctx, "jobs/sess", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// The server released the connection-scoped lock with the connection.
	waitFree(t, open(t, p.ClientURL(), client.Options{}), "jobs/conn", "the connection-scoped lock of the closed client")
	select {
	case <-conn.Lost():
		if err := conn.Err(); !errors.Is(err, client.ErrLockLost) || !errors.Is(err, client.ErrUnavailable) {
			t.Errorf("the connection-scoped lock: Err %v, want ErrLockLost and ErrUnavailable", err)
		}
	default:
		t.Error("the connection-scoped lock of an attached session whose Client closed is not reported lost; the server released it")
	}
	select {
	case <-sess.Lost():
		t.Errorf("the session-scoped lock, which the open session still holds, is reported lost: %v", sess.Err())
	default:
	}
}
