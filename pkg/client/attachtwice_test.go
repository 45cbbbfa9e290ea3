package client_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
)

// TestAttachOfASessionTheClientHasGivesTheSameSession: a session's subscriptions on
// a connection are one queue group, so that the server hands each delivery to one
// of them, and the Session fans it out to every registration that handles its path.
// Attach of a session the Client already had (opened on it, or attached before)
// made a second Session with subscriptions of its own in the same group: each
// delivery reached the registrations of only one of the two, and overlapping
// handlers (here "*" on one, "jobs/run" on the other) split the messages between
// them. Attach now returns the Session the Client has, once the registry has
// accepted the token given.
func TestAttachOfASessionTheClientHasGivesTheSameSession(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	c := connect(t, p.ClientURL())
	ctx := ctxT(t)
	s, err := c.Open(ctx, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.Attach(ctx, s.ID(), s.Token(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var viaRun, viaAll atomic.Int64
	count := func(n *atomic.Int64) client.Handler {
		return func(context.Context, *client.Message) ([]byte, error) { n.Add(1); return nil, nil }
	}
	if _, err := s.Handle("jobs/run", count(&viaRun)); err != nil {
		t.Fatal(err)
	}
	if _, err := again.Handle("*", count(&viaAll)); err != nil {
		t.Fatal(err)
	}
	sender := open(t, p.ClientURL(), client.Options{})
	const sends = 20
	for range sends {
		if _, err := sender.Send(ctx, client.ToSession(s.ID()), "jobs/run", []byte("go")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() error {
		if viaRun.Load() != sends || viaAll.Load() != sends {
			return errors.New("not every handler has every message yet")
		}
		return nil
	})
	if again != s {
		t.Errorf("Attach of a session opened on the client gave another *Session")
	}

	// A session opened elsewhere, attached by goroutines at once: one Session.
	opener := open(t, p.ClientURL(), client.Options{})
	got := make([]*client.Session, 8)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() {
			a, err := c.Attach(ctx, opener.ID(), opener.Token(), client.Options{})
			if err != nil {
				t.Errorf("attach: %v", err)
			}
			got[i] = a
		})
	}
	wg.Wait()
	for _, a := range got[1:] {
		if a != got[0] {
			t.Fatalf("concurrent Attach calls of one session gave different *Session")
		}
	}
	// The token is checked whatever the Client has.
	if _, err := c.Attach(ctx, opener.ID(), "not-the-token", client.Options{}); !errors.Is(err, client.ErrInvalidToken) {
		t.Errorf("attach with a wrong token of a session the client has: got %v, want ErrInvalidToken", err)
	}
	if err := got[0].Keepalive(ctx); err != nil {
		t.Errorf("the attached session after a refused Attach: %v", err)
	}

	// An Attach with a wrong token running beside ones with the right token: those
	// waiting for the refused one's check try anew, and get a Session.
	other := open(t, p.ClientURL(), client.Options{})
	c2 := connect(t, p.ClientURL())
	var right [4]*client.Session
	for i := range 8 {
		wg.Go(func() {
			if i%2 == 0 {
				if _, err := c2.Attach(ctx, other.ID(), "wrong", client.Options{}); !errors.Is(err, client.ErrInvalidToken) {
					t.Errorf("attach with a wrong token: got %v, want ErrInvalidToken", err)
				}
				return
			}
			a, err := c2.Attach(ctx, other.ID(), other.Token(), client.Options{})
			if err != nil {
				t.Errorf("attach with the right token beside wrong ones: %v", err)
			}
			right[i/2] = a
		})
	}
	wg.Wait()
	for _, a := range right[1:] {
		if a != right[0] {
			t.Fatalf("concurrent Attach calls of one session gave different *Session")
		}
	}
	if err := right[0].Keepalive(ctx); err != nil {
		t.Errorf("keepalive: %v", err)
	}

	// The opener rotates the token and hands the new one over: Attach gives the
	// Session the client has, holding the new token.
	if err := other.ChangePrincipal(ctx, nil); err != nil {
		t.Fatal(err)
	}
	a, err := c2.Attach(ctx, other.ID(), other.Token(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a != right[0] || a.Token() != other.Token() {
		t.Errorf("attach with a rotated token: same Session %v, its token the new one %v; want both", a == right[0], a.Token() == other.Token())
	}
	if err := a.Keepalive(ctx); err != nil {
		t.Errorf("keepalive after the attach with the rotated token: %v", err)
	}
}

// TestAttachDoesNotGiveASessionClosedHere: a Session may be closed on this side
// while the server still has the session — here its opener changed the principal,
// and the attached Session's resume (Handle takes the session over) was refused the
// old token. A listener told of the close attaches the session again with the new
// token, while the closed Session is still registered with the Client: Attach gave
// that closed Session, on which every call fails, instead of a new one.
func TestAttachDoesNotGiveASessionClosedHere(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	opener := open(t, p.ClientURL(), client.Options{})
	c := connect(t, p.ClientURL())
	ctx := ctxT(t)
	stale, err := c.Attach(ctx, opener.ID(), opener.Token(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := opener.ChangePrincipal(ctx, nil); err != nil {
		t.Fatal(err)
	}
	type attached struct {
		s   *client.Session
		err error
	}
	again := make(chan attached, 1)
	stale.OnStateChange(func(ch client.StateChange) {
		if ch.New == client.StateClosed {
			s, err := c.Attach(ctx, opener.ID(), opener.Token(), client.Options{})
			again <- attached{s, err}
		}
	})
	if _, err := stale.Handle("jobs/run", func(context.Context, *client.Message) ([]byte, error) { return nil, nil }); !errors.Is(err, client.ErrInvalidToken) {
		t.Fatalf("Handle with a token rotated elsewhere: got %v, want ErrInvalidToken", err)
	}
	a := <-again
	if a.err != nil {
		t.Fatalf("attach with the new token: %v", a.err)
	}
	if a.s == stale || a.s.State() != client.StateActive {
		t.Fatalf("attach with the new token gave the Session closed here (%v) in state %s; want a new ACTIVE one", a.s == stale, a.s.State())
	}
	if err := a.s.Keepalive(ctx); err != nil {
		t.Errorf("keepalive: %v", err)
	}
}
