package client_test

import (
	"errors"
	"maps"
	"slices"
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
	t.Parallel()
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

// TestSetPolicyWhoseAnswerIsLostReadsItBack: a policy change whose answer the loss
// of the connection cut off (a change withdrawing a grant of the requester's own
// connection closes it) reports the revision stored when the stored policy is the
// one asked for, read once the connection is back; when it is not (here the change
// was refused for its stale revision), the lost answer's ErrUnavailable. Before,
// both failed with ErrUnavailable, and `roster policy set` of a production policy
// over the development one often said the change may not have been made.
func TestSetPolicyWhoseAnswerIsLostReadsItBack(t *testing.T) {
	p := startSecured(t)
	proxy := natstest.StartPartition(t, p.ClientURL())
	root := open(t, proxy.URL(), client.Options{Credentials: client.Password("root", "toor")})
	watcher := open(t, p.ClientURL(), client.Options{Credentials: client.Password("root", "toor")})
	ctx := ctxT(t)

	pol, rev, err := root.Policy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// setMuted sends the change with every answer to root's connection dropped,
	// and once done (stored, or not after a while) drops the connection.
	setMuted := func(pol *policy.Policy, at uint64, stored func() bool) (uint64, error) {
		proxy.Mute()
		type result struct {
			rev uint64
			err error
		}
		done := make(chan result, 1)
		go func() {
			r, err := root.SetPolicy(ctx, pol, at)
			done <- result{r, err}
		}()
		natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			if !stored() {
				return errors.New("the change is not stored yet")
			}
			return nil
		})
		proxy.Heal()
		r := <-done
		return r.rev, r.err
	}

	pol.Roles["guest"] = append(pol.Roles["guest"], policy.Grant{Permission: policy.AcquireLock, Names: policy.List{"muted/*"}})
	next, err := setMuted(pol, rev, func() bool {
		_, at, err := watcher.Policy(ctx)
		return err == nil && at > rev
	})
	if err != nil {
		t.Fatalf("a change stored, its answer lost: got %v, want its revision", err)
	}
	if _, at, err := watcher.Policy(ctx); err != nil || at != next {
		t.Fatalf("revision returned %d, stored %d (%v)", next, at, err)
	}

	// At the old revision: refused, and the refusal lost. The stored policy is not
	// this one, so the outcome stays unknown.
	other := *pol
	other.Roles = maps.Clone(pol.Roles)
	other.Roles["guest"] = append(slices.Clone(pol.Roles["guest"]), policy.Grant{Permission: policy.AcquireLock, Names: policy.List{"other/*"}})
	sent := time.Now()
	if _, err := setMuted(&other, rev, func() bool { return time.Since(sent) > 500*time.Millisecond }); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("a refused change, its answer lost: got %v, want ErrUnavailable", err)
	}
	if _, at, err := watcher.Policy(ctx); err != nil || at != next {
		t.Fatalf("after the refused change: revision %d (%v), want %d", at, err, next)
	}
}
