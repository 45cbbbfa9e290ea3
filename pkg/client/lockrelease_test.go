package client_test

import (
	"errors"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
)

// lost reports whether l's Lost is closed, and its Err.
func lost(l *client.Lock) (bool, error) {
	select {
	case <-l.Lost():
		return true, l.Err()
	default:
		return false, nil
	}
}

// TestReleaseReportsTheTrackedLockLost: Session.Release of a lock the SDK tracks (a
// Lock of the same session) stopped tracking it but left its Lost open, so the
// goroutine holding the *Lock went on as if it held the lock; Lost's contract is
// that it closes when the lock is released without Unlock.
func TestReleaseReportsTheTrackedLockLost(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	s := open(t, p.ClientURL(), client.Options{})
	ctx := ctxT(t)
	l, err := s.Lock(ctx, "jobs/1", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Release(ctx, "jobs/1", l.Token()); err != nil {
		t.Fatal(err)
	}
	if tok, ok := client.TrackedLock(s, "jobs/1"); ok {
		t.Errorf("the SDK tracks jobs/1 (token %d) as held after its release", tok)
	}
	if gone, err := lost(l); !gone || !errors.Is(err, client.ErrLockLost) {
		t.Errorf("after Session.Release: Lost closed %v, Err %v; want closed with ErrLockLost", gone, err)
	}
}

// TestReleaseOfALockReleasedElsewhereStopsTrackingIt: the session's lock, taken here,
// is released by another process acting as the session (Attach). This SDK is not
// told; its Release of the lock by token then fails lock_not_held, and it kept
// tracking the *Lock as held, with Lost open. The server's answer says the session
// no longer holds that token: the SDK now stops tracking it and reports it lost. A
// Release naming another token, which says nothing of the one held, leaves it be.
func TestReleaseOfALockReleasedElsewhereStopsTrackingIt(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		token func(l *client.Lock) uint64
	}{
		{"by its token", func(l *client.Lock) uint64 { return l.Token() }},
		{"without a token", func(*client.Lock) uint64 { return 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := rostertest.Start(t)
			s := open(t, p.ClientURL(), client.Options{})
			ctx := ctxT(t)
			l, err := s.Lock(ctx, "jobs/1", client.LockOptions{})
			if err != nil {
				t.Fatal(err)
			}
			// Another token than the one held: the server still holds l.
			if _, err := s.Release(ctx, "jobs/1", l.Token()+1000); !errors.Is(err, client.ErrLockNotHeld) {
				t.Fatalf("release by another token: got %v, want ErrLockNotHeld", err)
			}
			if tok, ok := client.TrackedLock(s, "jobs/1"); !ok || tok != l.Token() {
				t.Fatalf("after a release naming another token the SDK tracks %d (%v), want %d", tok, ok, l.Token())
			}
			if gone, err := lost(l); gone {
				t.Fatalf("a release naming another token reported the held lock lost: %v", err)
			}

			releaseElsewhere(t, p.ClientURL(), s, "jobs/1")
			if _, err := s.Release(ctx, "jobs/1", tc.token(l)); !errors.Is(err, client.ErrLockNotHeld) {
				t.Fatalf("release of a lock released elsewhere: got %v, want ErrLockNotHeld", err)
			}
			if tok, ok := client.TrackedLock(s, "jobs/1"); ok {
				t.Errorf("the SDK still tracks jobs/1 (token %d) as held; the server holds it no more", tok)
			}
			if gone, err := lost(l); !gone || !errors.Is(err, client.ErrLockLost) || !errors.Is(err, client.ErrLockNotHeld) {
				t.Errorf("Lost closed %v, Err %v; want closed with ErrLockLost and ErrLockNotHeld", gone, err)
			}
		})
	}
}

// TestANewGrantEndsTheLockItReplaces: the session's lock, taken here, is released by
// another process acting as the session (Attach), and a Lock here is then granted
// the name anew, with a higher token. The server holds one hold per session and
// name, so the new token says the old hold is gone; the SDK replaced the *Lock it
// tracked with the new one and left the old one's Lost open for good — its holder
// went on as if it held the lock, and no later event (not even the session's close)
// could reach it. An answer with a lower token than the one tracked, on the other
// hand, is older than the hold tracked: it is reported lost at once, and the
// tracked lock stays.
func TestANewGrantEndsTheLockItReplaces(t *testing.T) {
	p := rostertest.Start(t)
	s := open(t, p.ClientURL(), client.Options{})
	ctx := ctxT(t)
	first, err := s.Lock(ctx, "jobs/1", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	releaseElsewhere(t, p.ClientURL(), s, "jobs/1")
	second, err := s.Lock(ctx, "jobs/1", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if second.Token() <= first.Token() {
		t.Fatalf("the new grant has token %d, the first had %d", second.Token(), first.Token())
	}
	if gone, err := lost(first); !gone || !errors.Is(err, client.ErrLockLost) || !errors.Is(err, client.ErrLockNotHeld) {
		t.Errorf("the lock the new grant replaced: Lost closed %v, Err %v; want closed with ErrLockLost and ErrLockNotHeld", gone, err)
	}
	if gone, err := lost(second); gone {
		t.Errorf("the new grant is reported lost: %v", err)
	}

	// A late answer with the first token, handled now: that hold is gone.
	late := client.TrackLock(s, first.Info())
	if late == second {
		t.Fatal("an answer with the first token got the lock of the second")
	}
	if gone, err := lost(late); !gone || !errors.Is(err, client.ErrLockLost) {
		t.Errorf("a late answer with an older token than the tracked lock's: Lost closed %v, Err %v; want closed with ErrLockLost", gone, err)
	}
	if tok, ok := client.TrackedLock(s, "jobs/1"); !ok || tok != second.Token() {
		t.Errorf("after a late answer with token %d the SDK tracks %d (%v), want %d", first.Token(), tok, ok, second.Token())
	}
	if gone, err := lost(second); gone {
		t.Errorf("a late answer with an older token reported the lock held lost: %v", err)
	}
}

// releaseElsewhere releases s's lock name from another process acting as the
// session: a client of its own at url that attaches it.
func releaseElsewhere(t *testing.T, url string, s *client.Session, name string) {
	t.Helper()
	ctx := ctxT(t)
	attached, err := connect(t, url).Attach(ctx, s.ID(), s.Token(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attached.Release(ctx, name, 0); err != nil {
		t.Fatalf("release from the other process: %v", err)
	}
}
