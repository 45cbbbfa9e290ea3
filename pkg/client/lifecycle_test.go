package client_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// logRecords is a slog handler that keeps the messages logged at Warn and above.
type logRecords struct {
	mu   sync.Mutex
	msgs []string
}

func (*logRecords) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (*logRecords) WithAttrs([]slog.Attr) slog.Handler           { panic("not used") }
func (*logRecords) WithGroup(string) slog.Handler                { panic("not used") }

func (r *logRecords) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Message)
	return nil
}

func (r *logRecords) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

// stateChanges records a session's changes of state.
type stateChanges struct {
	mu      sync.Mutex
	changes []client.StateChange
}

func watchStates(s *client.Session) *stateChanges {
	w := &stateChanges{}
	s.OnStateChange(func(ch client.StateChange) {
		w.mu.Lock()
		w.changes = append(w.changes, ch)
		w.mu.Unlock()
	})
	return w
}

func (w *stateChanges) all() []client.StateChange {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.changes)
}

// TestClosingTheConnectionIsNoConnectionLoss: nats.go calls the disconnect handler
// also when the connection is closed on purpose. The SDK took that for a lost
// connection: every Session.Close of a session opened with Open, and every
// Client.Close, logged the warning "roster: connection lost", and sessions on a
// connection closed with Conn().Close went ACTIVE -> RECOVERING -> CLOSED, their
// listeners told of a recovery that could never come.
func TestClosingTheConnectionIsNoConnectionLoss(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	logs := &logRecords{}
	c := connect(t, p.ClientURL(), client.WithLogger(slog.New(logs)))
	s, err := c.Open(ctxT(t), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	states := watchStates(s)
	c.Conn().Close()
	// The listeners are called after the state is set: wait for the change they
	// were told of, not for State.
	waitFor(t, func() error {
		if got := states.all(); len(got) == 0 || got[len(got)-1].New != client.StateClosed {
			return errors.New("the session's listener has not been told it closed yet")
		}
		return nil
	})
	got := states.all()
	if len(got) != 1 || got[0].Old != client.StateActive || got[0].New != client.StateClosed || got[0].Reason != wire.ClosedFailed {
		t.Fatalf("state changes when the connection was closed: got %+v, want one, ACTIVE -> CLOSED (failed)", got)
	}
	if !errors.Is(got[len(got)-1].Err, client.ErrUnavailable) {
		t.Errorf("the change to CLOSED: Err got %v, want ErrUnavailable", got[len(got)-1].Err)
	}
	if msgs := logs.all(); len(msgs) != 0 {
		t.Errorf("warnings when the connection was closed on purpose: %q, want none", msgs)
	}
}

// TestConnectionLossIsUnavailable: what a lost connection reports — the change to
// RECOVERING, a connection-scoped lock's Err — matches ErrUnavailable, as the calls
// failed by the same loss do. It was an unexported error that matched no SDK error
// but ErrLockLost, so a caller could not tell a lock lost with its connection from
// any other loss, and roster lock acquire exited 1.
func TestConnectionLossIsUnavailable(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	px := natstest.StartPartition(t, p.ClientURL())
	s := open(t, px.URL(), client.Options{})
	states := watchStates(s)
	l, err := s.Lock(ctxT(t), "lost/with-connection", client.LockOptions{Scope: wire.ScopeConnection})
	if err != nil {
		t.Fatal(err)
	}
	px.Close()
	select {
	case <-l.Lost():
	case <-ctxT(t).Done():
		t.Fatal("the connection-scoped lock was not reported lost")
	}
	if err := l.Err(); !errors.Is(err, client.ErrLockLost) || !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("the connection-scoped lock: Err got %v, want ErrLockLost and ErrUnavailable", err)
	}
	waitFor(t, func() error {
		if len(states.all()) == 0 {
			return errors.New("no change of state yet")
		}
		return nil
	})
	if ch := states.all()[0]; ch.New != client.StateRecovering || !errors.Is(ch.Err, client.ErrUnavailable) {
		t.Errorf("the change when the connection was lost: got %+v, want RECOVERING with ErrUnavailable", ch)
	}
}

// TestUseAfterClientClose holds Client.Close to what it documents: closing again
// returns nil, and calls on the client or on a session taken with Attach fail with
// ErrUnavailable, while sessions opened on it fail with ErrSessionClosed.
func TestUseAfterClientClose(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	opener := open(t, p.ClientURL(), client.Options{})
	c, err := client.Connect(p.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	own, err := c.Open(ctx, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	attached, err := c.Attach(ctx, opener.ID(), opener.Token(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := c.Close(ctx); err != nil {
		t.Errorf("close again: got %v, want nil", err)
	}
	if _, err := c.Open(ctx, client.Options{}); !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("open after close: got %v, want ErrUnavailable", err)
	}
	if _, err := own.Refresh(ctx); !errors.Is(err, client.ErrSessionClosed) {
		t.Errorf("a session opened on the client, after close: got %v, want ErrSessionClosed", err)
	}
	if _, err := attached.Refresh(ctx); !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("an attached session, after close: got %v, want ErrUnavailable", err)
	}
}
