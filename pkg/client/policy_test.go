package client_test

import (
	"errors"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/policy"
)

// TestPolicyReadAndReplace: a session whose roles grant MODIFY_SECURITY reads the
// policy and replaces it, conditionally on the revision it read; every service
// applies the new policy; others are refused.
func TestPolicyReadAndReplace(t *testing.T) {
	p := startSecured(t)
	root := open(t, p.ClientURL(), client.Options{Credentials: client.Password("root", "toor")})
	alice := open(t, p.ClientURL(), client.Options{Credentials: client.Password("alice", "wonderland")})
	guest := open(t, p.ClientURL(), client.Options{})
	ctx := ctxT(t)

	if _, _, err := alice.Policy(ctx); !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("a trader reads the policy: got %v, want forbidden", err)
	}
	pol, rev, err := root.Policy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rev == 0 || len(pol.Roles["trader"]) == 0 {
		t.Fatalf("got revision %d and %+v, want the stored policy", rev, pol)
	}
	if _, err := guest.TryLock(ctx, "public/a", client.LockOptions{}); !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("a guest locks before the change: got %v, want forbidden", err)
	}

	pol.Roles["guest"] = append(pol.Roles["guest"], policy.Grant{Permission: policy.AcquireLock, Names: policy.List{"public/*"}})
	if _, err := alice.SetPolicy(ctx, pol, rev); !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("a trader replaces the policy: got %v, want forbidden", err)
	}
	next, err := root.SetPolicy(ctx, pol, rev)
	if err != nil {
		t.Fatal(err)
	}
	if next <= rev {
		t.Fatalf("revision after the change %d, before %d", next, rev)
	}
	if _, err := root.SetPolicy(ctx, pol, rev); !errors.Is(err, client.ErrConflict) {
		t.Fatalf("a change at the old revision: got %v, want conflict", err)
	}
	bad := *pol
	bad.Roles = map[string][]policy.Grant{"x": {{Permission: "FLY"}}}
	if _, err := root.SetPolicy(ctx, &bad, 0); !errors.Is(err, client.ErrBadRequest) {
		t.Fatalf("an invalid policy: got %v, want bad_request", err)
	}
	if got, at, err := root.Policy(ctx); err != nil || at != next || len(got.Roles["guest"]) != 2 {
		t.Fatalf("read back: got %+v at %d, %v; want the change at %d", got, at, err, next)
	}

	// The lock service follows the stored policy.
	natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		l, err := guest.TryLock(ctx, "public/a", client.LockOptions{})
		if err != nil {
			return err
		}
		return l.Unlock(ctx)
	})
}
