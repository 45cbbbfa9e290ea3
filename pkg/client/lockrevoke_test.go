package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestLockWaitEndsWhenChangePrincipalTakesTheGrant: alice (trader: ACQUIRE_LOCK on
// orders/*) waits in Lock for a lock root holds, then changes her session's
// principal to anonymous (guest: no ACQUIRE_LOCK), through the real auth service
// and users file. Her Lock returns ErrForbidden, saying the permission was withdrawn
// while it waited, and when root releases the lock her session is not given it.
// Before, the SDK's request stayed queued and was granted to the guest session.
func TestLockWaitEndsWhenChangePrincipalTakesTheGrant(t *testing.T) {
	t.Parallel()
	p := startSecured(t)
	root := open(t, p.ClientURL(), client.Options{Credentials: client.Password("root", "toor")})
	alice := open(t, p.ClientURL(), client.Options{Credentials: client.Password("alice", "wonderland")})
	const name = "orders/7"
	held, err := root.Lock(ctxT(t), name, client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		l   *client.Lock
		err error
	}
	waited := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		l, err := alice.Lock(ctx, name, client.LockOptions{})
		waited <- result{l, err}
	}()
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		list, err := root.ListLocks(ctxT(t), wire.LockListRequest{Prefix: name})
		if err != nil {
			return err
		}
		if len(list.Locks) != 1 || len(list.Locks[0].Waiters) != 1 {
			return fmt.Errorf("locks %+v, want one waiter", list.Locks)
		}
		return nil
	})

	if err := alice.ChangePrincipal(ctxT(t), nil); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-waited:
	case <-time.After(15 * time.Second):
		t.Fatal("Lock did not return after the session lost ACQUIRE_LOCK on the name")
	}
	if r.l != nil {
		t.Fatalf("Lock granted the lock to a session whose roles lost ACQUIRE_LOCK: %+v", r.l.Info())
	}
	if !errors.Is(r.err, client.ErrForbidden) || !strings.Contains(r.err.Error(), "while the request waited") {
		t.Fatalf("Lock: got %v, want ErrForbidden saying the permission was withdrawn while it waited", r.err)
	}
	if err := held.Unlock(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	list, err := root.ListLocks(ctxT(t), wire.LockListRequest{Prefix: name})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range list.Locks {
		for _, h := range l.Holders {
			if h.Session == alice.ID() {
				t.Fatalf("alice's session holds %s after root released it", name)
			}
		}
	}
}
