package client_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/roster"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// onFixedAddress keeps the server's port and storage across a restart.
func onFixedAddress(t *testing.T) rostertest.Option {
	listen, dir := hostPort(freePort(t)), t.TempDir()
	return rostertest.WithConfig(func(c *roster.Config) {
		c.Embedded.Listen = listen
		c.Embedded.DataDir = dir
	})
}

// TestReconnectResumesSession restarts the NATS server (and the services) under an
// open session: the SDK reconnects and resumes the same session; the
// connection-scoped lock is gone (and reported lost), the session-scoped one held.
func TestReconnectResumesSession(t *testing.T) {
	t.Parallel()
	fixed := onFixedAddress(t)
	p := rostertest.Start(t, fixed)
	s := open(t, p.ClientURL(), client.Options{HeartbeatInterval: 100 * time.Millisecond})
	states := make(chan client.StateChange, 16)
	s.OnStateChange(func(ch client.StateChange) { states <- ch })
	ctx := ctxT(t)
	connLock, err := s.Lock(ctx, "reconnect/connection", client.LockOptions{Scope: wire.ScopeConnection})
	if err != nil {
		t.Fatal(err)
	}
	sessLock, err := s.Lock(ctx, "reconnect/session", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id := s.ID()
	// A wait in flight when the server stops fails with ErrUnavailable; the SDK
	// withdraws it once the session is back, so it is never granted unseen.
	holder := open(t, p.ClientURL(), client.Options{})
	if _, err := holder.Lock(ctx, "reconnect/wanted", client.LockOptions{}); err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := s.Lock(wctx, "reconnect/wanted", client.LockOptions{})
		waitErr <- err
	}()
	waitFor(t, func() error { return waiters(ctx, holder, "reconnect/wanted", 1) })

	if err := p.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := within(t, "lock wait", waitErr); !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("lock wait in flight: got %v, want ErrUnavailable", err)
	}
	if ch := nextState(t, states); ch.New != client.StateRecovering {
		t.Fatalf("after the server stopped: got %+v, want RECOVERING", ch)
	}
	select {
	case <-connLock.Lost():
	case <-ctx.Done():
		t.Fatal("the connection-scoped lock was not reported lost")
	}
	if !errors.Is(connLock.Err(), client.ErrLockLost) {
		t.Errorf("connection-scoped lock: Err got %v, want ErrLockLost", connLock.Err())
	}

	p = rostertest.Start(t, fixed)
	if ch := nextState(t, states); ch.Old != client.StateRecovering || ch.New != client.StateActive {
		t.Fatalf("after the restart: got %+v, want RECOVERING -> ACTIVE", ch)
	}
	info, err := s.Refresh(ctx)
	if err != nil || info.ID != id || info.State != client.StateActive {
		t.Fatalf("the resumed session: got %s %s, %v; want %s ACTIVE", info.ID, info.State, err, id)
	}
	select {
	case <-sessLock.Lost():
		t.Fatalf("the session-scoped lock was reported lost: %v", sessLock.Err())
	default:
	}

	waitFor(t, func() error { return waiters(ctx, holder, "reconnect/wanted", 0) })

	other := open(t, p.ClientURL(), client.Options{})
	// The server released the connection-scoped lock when the session came back on
	// another connection.
	waitFor(t, func() error {
		l, err := other.TryLock(ctx, "reconnect/connection", client.LockOptions{})
		if err != nil {
			return err
		}
		return l.Unlock(ctx)
	})
	if _, err := other.TryLock(ctx, "reconnect/session", client.LockOptions{}); !errors.Is(err, client.ErrTimeout) {
		t.Errorf("the session-scoped lock is free after the restart: got %v, want ErrTimeout", err)
	}
	again, err := s.TryLock(ctx, "reconnect/session", client.LockOptions{})
	if err != nil || again.Token() != sessLock.Token() {
		t.Errorf("the session-scoped lock after the restart: got token %v, %v; want %d", again, err, sessLock.Token())
	}
	if err := sessLock.Unlock(ctx); err != nil {
		t.Errorf("unlock after the restart: %v", err)
	}
}

func nextState(t *testing.T, ch <-chan client.StateChange) client.StateChange {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(20 * time.Second):
		t.Fatal("no state change within 20s")
		return client.StateChange{}
	}
}

// TestServerGoneFailsCallsInFlight stops the server while a request to a handler
// that never answers and a lock wait are in flight: both return promptly with an
// error (seed 003: server exit completes outstanding requests with an error),
// long before their own timeouts of 30 s and a minute.
func TestServerGoneFailsCallsInFlight(t *testing.T) {
	t.Parallel()
	t.Run("connection to the server lost", func(t *testing.T) {
		_, s, silent := inFlight(t, true)
		reqErr, lockErr := s.request(silent), s.lock()
		waitFor(t, func() error { return waiters(ctxT(t), s.holder, "gone", 1) })
		s.proxy.Close()
		for name, ch := range map[string]<-chan error{"request": reqErr, "lock": lockErr} {
			err := within(t, name, ch)
			if !errors.Is(err, client.ErrUnavailable) {
				t.Errorf("%s: got %v, want ErrUnavailable", name, err)
			}
			// The caller cancelled nothing: an error matching context.Canceled
			// would say it gave up itself.
			if errors.Is(err, context.Canceled) {
				t.Errorf("%s: got %v, which matches context.Canceled", name, err)
			}
		}
		// Calls made while the server is away fail at once too.
		if err := s.Keepalive(context.Background()); !errors.Is(err, client.ErrUnavailable) {
			t.Errorf("keepalive with no server: got %v, want ErrUnavailable", err)
		}
	})
	t.Run("Roster stops", func(t *testing.T) {
		// The services drain first: the messaging service answers the request
		// with an unavailable result for the silent session, the lock service the
		// wait with unavailable; then the server goes.
		p, s, silent := inFlight(t, false)
		results, lockErr := make(chan *client.Results, 1), s.lock()
		reqErr := make(chan error, 1)
		go func() {
			res, err := s.Request(context.Background(), client.ToSession(silent.ID()), "never", nil, 30*time.Second)
			results <- res
			reqErr <- err
		}()
		waitFor(t, func() error { return waiters(ctxT(t), s.holder, "gone", 1) })
		if err := p.Stop(); err != nil {
			t.Fatalf("stop: %v", err)
		}
		if err := within(t, "lock", lockErr); !errors.Is(err, client.ErrUnavailable) {
			t.Errorf("lock: got %v, want ErrUnavailable", err)
		}
		err := within(t, "request", reqErr)
		res := <-results
		switch {
		case errors.Is(err, client.ErrUnavailable):
		case err != nil:
			t.Errorf("request: got %v, want ErrUnavailable or an unavailable result", err)
		case len(res.Results) != 1 || !errors.Is(res.Results[0].Error, client.ErrUnavailable):
			t.Errorf("request: got results %+v, want one unavailable result", res.Results)
		}
	})
}

// TestRequestStreamFailsWhenTheConnectionIsLost: a streamed request waiting for
// its results when the connection drops fails at once with ErrUnavailable, like
// every other call in flight. It used to wait out its own bound (the request's
// timeout + 10 s) for results that could no longer come, then fail with a bare
// context error.
func TestRequestStreamFailsWhenTheConnectionIsLost(t *testing.T) {
	t.Parallel()
	_, s, silent := inFlight(t, true)
	errc := make(chan error, 1)
	go func() {
		_, err := s.RequestStream(context.Background(), client.ToSession(silent.ID()), "never", nil, 30*time.Second, func(wire.MsgResult) {})
		errc <- err
	}()
	<-s.blocked
	s.proxy.Close()
	err := within(t, "streamed request", errc)
	if !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("streamed request: got %v, want ErrUnavailable", err)
	}
	if errors.Is(err, context.Canceled) {
		t.Errorf("streamed request: got %v, which matches context.Canceled", err)
	}
}

type inFlightSession struct {
	*client.Session
	holder  *client.Session
	blocked chan struct{}
	proxy   *natstest.Partition // the session's way to the server, when asked for
}

// inFlight starts Roster with a session whose handler on "never" never answers
// while the server lives, a session holding the lock "gone", and a third session
// to make calls from, connected through a proxy when viaProxy is set.
func inFlight(t *testing.T, viaProxy bool) (p *roster.Process, s *inFlightSession, silent *client.Session) {
	p = rostertest.Start(t, rostertest.WithConfig(func(c *roster.Config) { c.DrainTimeout = 500 * time.Millisecond }))
	ctx := ctxT(t)
	silent = open(t, p.ClientURL(), client.Options{})
	blocked := make(chan struct{}, 1)
	stop, err := silent.Handle("never", func(ctx context.Context, _ *client.Message) ([]byte, error) {
		blocked <- struct{}{}
		<-ctx.Done() // ends when the session closes
		return nil, ctx.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop() })
	holder := open(t, p.ClientURL(), client.Options{})
	if _, err := holder.Lock(ctx, "gone", client.LockOptions{}); err != nil {
		t.Fatal(err)
	}
	s = &inFlightSession{holder: holder, blocked: blocked}
	url := p.ClientURL()
	if viaProxy {
		s.proxy = natstest.StartPartition(t, url)
		url = s.proxy.URL()
	}
	s.Session = open(t, url, client.Options{})
	return p, s, silent
}

// request sends a request to silent's handler and returns once it is being handled.
func (s *inFlightSession) request(silent *client.Session) <-chan error {
	errc := make(chan error, 1)
	go func() {
		_, err := s.Request(context.Background(), client.ToSession(silent.ID()), "never", nil, 30*time.Second)
		errc <- err
	}()
	<-s.blocked
	return errc
}

// lock waits for the lock "gone" for up to a minute; it returns once the wait is
// queued.
func (s *inFlightSession) lock() <-chan error {
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := s.Lock(ctx, "gone", client.LockOptions{})
		errc <- err
	}()
	return errc
}

func within(t *testing.T, name string, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(15 * time.Second):
		t.Fatalf("%s still in flight 15s after the server stopped", name)
		return nil
	}
}

// TestReconnectToForgottenSessionCloses restarts the server on empty storage: the
// session cannot be resumed, so it becomes CLOSED with the reason.
func TestReconnectToForgottenSessionCloses(t *testing.T) {
	t.Parallel()
	listen := hostPort(freePort(t))
	onPort := rostertest.WithConfig(func(c *roster.Config) { c.Embedded.Listen = listen })
	p := rostertest.Start(t, onPort)
	s := open(t, p.ClientURL(), client.Options{HeartbeatInterval: 100 * time.Millisecond})
	states := make(chan client.StateChange, 16)
	s.OnStateChange(func(ch client.StateChange) { states <- ch })
	l, err := s.Lock(ctxT(t), "forgotten", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if ch := nextState(t, states); ch.New != client.StateRecovering {
		t.Fatalf("after the server stopped: got %+v, want RECOVERING", ch)
	}
	rostertest.Start(t, onPort) // a new data directory: the session is unknown
	ch := nextState(t, states)
	if ch.New != client.StateClosed || ch.Reason != wire.ClosedFailed || !errors.Is(ch.Err, client.ErrSessionNotFound) {
		t.Fatalf("after the restart: got %+v, want CLOSED (failed) with ErrSessionNotFound", ch)
	}
	if !errors.Is(l.Err(), client.ErrLockLost) {
		t.Errorf("the session's lock: Err got %v, want ErrLockLost", l.Err())
	}
	if _, err := s.Refresh(ctxT(t)); !errors.Is(err, client.ErrSessionClosed) {
		t.Errorf("refresh: got %v, want ErrSessionClosed", err)
	}
}

// TestHeartbeatsKeepSessionAlive leaves two sessions with a 1 s inactivity timeout
// idle: the one whose heartbeats run every hour expires, the one with the SDK's
// default heartbeats stays open.
func TestHeartbeatsKeepSessionAlive(t *testing.T) {
	p := rostertest.Start(t)
	s := open(t, p.ClientURL(), client.Options{Timeout: time.Second})
	other := open(t, p.ClientURL(), client.Options{})
	ctx := ctxT(t)
	// A session without heartbeats expires: what the heartbeats prevent.
	raw := connect(t, p.ClientURL())
	stopped, err := raw.Open(ctx, client.Options{Timeout: time.Second, HeartbeatInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() error {
		info, err := other.GetSession(ctx, stopped.ID())
		if errors.Is(err, client.ErrSessionClosed) {
			return nil
		}
		if err != nil {
			return err
		}
		return errors.New("the session without heartbeats is still " + string(info.State))
	})
	info, err := other.GetSession(ctx, s.ID())
	if err != nil || info.State != client.StateActive {
		t.Fatalf("the heartbeating session after its timeout passed: got %s, %v; want ACTIVE", info.State, err)
	}
}

// TestHeartbeatResumesASessionTheRegistryCountsAsLost attaches to a session opened on
// another connection, then closes that connection: the registry moves the session to
// RECOVERING although this client's connection works and never dropped. The
// heartbeat learns it from the keepalive's answer and resumes the session on this
// connection; before, the session went unresumed and closed when its reconnect
// window ended.
func TestHeartbeatResumesASessionTheRegistryCountsAsLost(t *testing.T) {
	p := rostertest.Start(t)
	ctx := ctxT(t)
	raw, err := nats.Connect(p.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	var opened wire.SessionOpenResponse
	if err := wire.Call(ctx, raw, wire.SubjectSessionOpen, nil, &wire.SessionOpenRequest{TimeoutMS: 600000}, &opened); err != nil {
		t.Fatal(err)
	}
	c := connect(t, p.ClientURL())
	s, err := c.Attach(ctx, opened.Session.ID, opened.Token, client.Options{HeartbeatInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	states := make(chan client.StateChange, 16)
	s.OnStateChange(func(ch client.StateChange) { states <- ch })
	raw.Close()
	if ch := nextState(t, states); ch.New != client.StateRecovering {
		t.Fatalf("after the opener's connection closed: got %+v, want RECOVERING", ch)
	}
	if ch := nextState(t, states); ch.New != client.StateActive {
		t.Fatalf("next: got %+v, want ACTIVE", ch)
	}
	other := open(t, p.ClientURL(), client.Options{})
	info, err := other.GetSession(ctx, s.ID())
	if err != nil || info.State != client.StateActive {
		t.Fatalf("the session on the server: %v, %v; want ACTIVE", info, err)
	}
}

// TestHeartbeatsFollowANewReconnectWindow: Roster restarted with a reconnect window
// far below the one the session was opened under. The SDK's default keepalives
// follow the new bound (a third of it), so the resumed session's lock stays held
// and is not reported lost. Before, the interval was fixed when the session opened
// (5 s, from the 30 s window): once resumed, the lock was reported lost each time
// the 1.5 s bound passed between two keepalives, and released by its token.
//
// The new window counts from the restarted registry's finding the session's
// connection gone, and the client must reconnect and resume within it: on a loaded
// machine (CI, -race, every package at once) that took longer than 1.5 s once, and
// the registry rightly closed the session. That says nothing about the keepalives,
// so the scenario is run again with the window doubled, up to 6 s.
func TestHeartbeatsFollowANewReconnectWindow(t *testing.T) {
	for _, window := range []time.Duration{1500 * time.Millisecond, 3 * time.Second, 6 * time.Second} {
		if heartbeatsFollowWindow(t, window) {
			return
		}
		t.Logf("the session was not resumed within the %v window after the restart; again with a longer one", window)
	}
	t.Fatal("the session was never resumed within the new window after the restart")
}

// heartbeatsFollowWindow runs TestHeartbeatsFollowANewReconnectWindow's scenario
// with the restart's window; false when the session closed before it was resumed.
func heartbeatsFollowWindow(t *testing.T, window time.Duration) (resumed bool) {
	listen, dir := hostPort(freePort(t)), t.TempDir()
	with := func(window time.Duration) rostertest.Option {
		return rostertest.WithConfig(func(c *roster.Config) {
			c.Embedded.Listen, c.Embedded.DataDir = listen, dir
			c.Registry.ReconnectWindow = window
		})
	}
	p := rostertest.Start(t, with(30*time.Second)) // each stopped when the test ends
	s := open(t, p.ClientURL(), client.Options{})
	states := make(chan client.StateChange, 16)
	s.OnStateChange(func(ch client.StateChange) { states <- ch })
	ctx := ctxT(t)
	l, err := s.Lock(ctx, "window/held", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if ch := nextState(t, states); ch.New != client.StateRecovering {
		t.Fatalf("after the server stopped: got %+v, want RECOVERING", ch)
	}
	p = rostertest.Start(t, with(window))
	switch ch := nextState(t, states); {
	case ch.New == client.StateClosed && ch.Reason == wire.ClosedFailed:
		return false
	case ch.New != client.StateActive:
		t.Fatalf("after the restart: got %+v, want ACTIVE", ch)
	}
	time.Sleep(4 * window) // several bounds of the new window
	select {
	case <-l.Lost():
		t.Fatalf("the lock of the resumed session was reported lost: %v", l.Err())
	default:
	}
	other := open(t, p.ClientURL(), client.Options{})
	if _, err := other.TryLock(ctx, "window/held", client.LockOptions{}); !errors.Is(err, client.ErrTimeout) {
		t.Errorf("another session's TryLock: got %v, want ErrTimeout (still held)", err)
	}
	return true
}

// TestFollowEventsGoesOnWhenTheSessionIsBack: a follower whose reads fail while
// Roster restarts reads again as soon as its session is resumed, not when a pause
// it took while the server was away ends (up to 2 s; an hour here, so that only
// the resume can end it). Before, it waited the pause out.
func TestFollowEventsGoesOnWhenTheSessionIsBack(t *testing.T) {
	defer client.SetFollowBackoff(time.Hour, time.Hour)()
	fixed := onFixedAddress(t)
	p := rostertest.Start(t, fixed)
	s := open(t, p.ClientURL(), client.Options{HeartbeatInterval: 100 * time.Millisecond})
	states := make(chan client.StateChange, 16)
	s.OnStateChange(func(ch client.StateChange) { states <- ch })
	ctx := ctxT(t)
	events := make(chan wire.StoredSessionEvent, 16)
	// The follower ends before the deferred SetFollowBackoff restores the pauses it
	// reads: left to the clean-ups, it read them while they were written back.
	fctx, stopFollowing := context.WithCancel(ctx)
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		_ = s.FollowEvents(fctx, wire.SessionEventsRequest{SessionID: s.ID(), Kinds: []wire.SessionEventKind{wire.EventUpdated}},
			func(e wire.StoredSessionEvent) error {
				select {
				case events <- e:
				case <-fctx.Done():
				}
				return nil
			})
	}()
	defer func() { stopFollowing(); <-followed }()
	if err := p.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if ch := nextState(t, states); ch.New != client.StateRecovering {
		t.Fatalf("after the server stopped: got %+v, want RECOVERING", ch)
	}
	rostertest.Start(t, fixed)
	if ch := nextState(t, states); ch.New != client.StateActive {
		t.Fatalf("after the restart: got %+v, want ACTIVE", ch)
	}
	if err := s.SetProperties(ctx, map[string]string{"Back": "yes"}); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-events:
		if !slices.Equal(e.Event.Keys, []string{"Back"}) {
			t.Errorf("got %+v, want the update of Back", e.Event)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the follower did not read again once the session was back")
	}
}

// TestWaitActiveWaitsForTheResume: WaitActive returns at once on an ACTIVE session,
// waits while it is RECOVERING until the resume, gives up when its context ends,
// and fails ErrSessionClosed once the session is closed. A listener whose
// registration was removed is not called for the changes that follow.
func TestWaitActiveWaitsForTheResume(t *testing.T) {
	t.Parallel()
	fixed := onFixedAddress(t)
	p := rostertest.Start(t, fixed)
	s := open(t, p.ClientURL(), client.Options{HeartbeatInterval: 100 * time.Millisecond})
	states := make(chan client.StateChange, 16)
	s.OnStateChange(func(ch client.StateChange) { states <- ch })
	removed := make(chan client.StateChange, 16)
	remove := s.OnStateChange(func(ch client.StateChange) { removed <- ch })
	remove()
	remove() // a second call does nothing
	ctx := ctxT(t)
	if err := s.WaitActive(ctx); err != nil {
		t.Fatalf("WaitActive on an ACTIVE session: %v", err)
	}

	if err := p.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if ch := nextState(t, states); ch.New != client.StateRecovering {
		t.Fatalf("after the server stopped: got %+v, want RECOVERING", ch)
	}
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.WaitActive(gone); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitActive with its context ended, while RECOVERING: got %v, want context.Canceled", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- s.WaitActive(ctx) }()
	select {
	case err := <-waited:
		t.Fatalf("WaitActive returned %v while the session is %s", err, s.State())
	default:
	}

	rostertest.Start(t, fixed)
	if err := within(t, "WaitActive", waited); err != nil || s.State() != client.StateActive {
		t.Fatalf("WaitActive after the restart: %v, state %s; want nil, ACTIVE", err, s.State())
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitActive(ctx); !errors.Is(err, client.ErrSessionClosed) {
		t.Errorf("WaitActive on a closed session: got %v, want ErrSessionClosed", err)
	}
	select {
	case ch := <-removed:
		t.Errorf("a removed listener was called: %+v", ch)
	default:
	}
}
