package lock

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// ACQUIRE_LOCK is checked when an acquire arrives; a request that waits may be
// granted long after. Whatever the policy or the session's roles say by then
// decides: a waiter whose session lost the grant is answered forbidden, leaves the
// queue and is never granted, while the others keep their places. Holds are not
// taken away.

// withRoles returns testPolicy's policy with roles added or replaced.
func withRoles(roles map[string][]policy.Grant) *policy.Policy {
	p := *testPolicy().Load()
	p.Roles = maps.Clone(p.Roles)
	maps.Copy(p.Roles, roles)
	return &p
}

// keepers may lock every update-topic/ name, under every policy of these tests.
var keepers = map[string][]policy.Grant{"keeper": {{Permission: policy.AcquireLock, Names: []string{"update-topic/**"}}}}

// withoutTraderGrant is the policy with update-topic/a taken from traders.
func withoutTraderGrant() *policy.Policy {
	roles := maps.Clone(keepers)
	roles["trader"] = []policy.Grant{{Permission: policy.AcquireLock, Names: []string{"update-topic/b"}}}
	return withRoles(roles)
}

// holders returns the sessions holding name, from the bucket.
func (e *env) holders(t testing.TB, name string) []string {
	t.Helper()
	var out []string
	if rec := e.lockRecord(t, name); rec != nil {
		for _, h := range rec.Holders {
			out = append(out, h.Session)
		}
	}
	return out
}

// wantForbiddenWait checks that a waiting acquire was answered forbidden, saying
// the permission was withdrawn while it waited.
func wantForbiddenWait(t *testing.T, p *pending) {
	t.Helper()
	l, err := p.wait(t, 10*time.Second)
	if l != nil {
		t.Fatalf("the waiting request of a session that lost ACQUIRE_LOCK was granted: %+v", l)
	}
	wantCode(t, err, wire.CodeForbidden)
	if msg := err.Error(); !strings.Contains(msg, "withdrawn") || !strings.Contains(msg, "while the request waited") {
		t.Fatalf("forbidden without saying the permission was withdrawn while the request waited: %q", msg)
	}
}

// TestPolicyChangeWithdrawsAWaiterThatLostItsGrant: three sessions wait for a lock
// through two instances; the policy then takes ACQUIRE_LOCK on the name from the
// second one's role. Its request is answered forbidden at once, without a release,
// and leaves the queue; the others keep their places and are granted in turn. Before,
// it stayed queued and was granted when its turn came.
func TestPolicyChangeWithdrawsAWaiterThatLostItsGrant(t *testing.T) {
	e := newEnv(t)
	e.pol.Store(withRoles(keepers))
	e.startLock(t, Config{})
	e.startLock(t, Config{})
	const name = "update-topic/a"
	holder := e.open(t, "admin", 0)
	k1, tr, k2 := e.open(t, "keeper-1", 0), e.open(t, "trader-1", 0), e.open(t, "keeper-2", 0)
	holder.mustAcquire(t, &wire.LockAcquireRequest{Name: name})
	p1 := k1.acquireAsync(&wire.LockAcquireRequest{Name: name, WaitMS: wire.WaitForever, RequestID: "k1"})
	e.waitQueued(t, name, 1)
	pt := tr.acquireAsync(&wire.LockAcquireRequest{Name: name, WaitMS: wire.WaitForever, RequestID: "tr"})
	e.waitQueued(t, name, 2)
	p2 := k2.acquireAsync(&wire.LockAcquireRequest{Name: name, WaitMS: wire.WaitForever, RequestID: "k2"})
	e.waitQueued(t, name, 3)

	e.pol.Store(withoutTraderGrant())
	wantForbiddenWait(t, pt)
	if q := e.waiting(t, name); !slices.Equal(q, []string{"k1", "k2"}) {
		t.Fatalf("after the withdrawal the queue is %v, want [k1 k2]", q)
	}
	// A copy of the withdrawn request is refused, not queued again.
	_, err := tr.acquire(ctx10(t), &wire.LockAcquireRequest{Name: name, WaitMS: wire.WaitForever, RequestID: "tr"})
	wantCode(t, err, wire.CodeForbidden)

	holder.mustRelease(t, name)
	if _, err := p1.wait(t, 10*time.Second); err != nil {
		t.Fatalf("the first keeper, still allowed: %v", err)
	}
	k1.mustRelease(t, name)
	if _, err := p2.wait(t, 10*time.Second); err != nil {
		t.Fatalf("the second keeper, still allowed: %v", err)
	}
	if h := e.holders(t, name); !slices.Equal(h, []string{k2.id}) {
		t.Fatalf("holders %v, want only the second keeper %s", h, k2.id)
	}
}

// changeBlind answers from a holder but does not tell of its changes (it is no
// policyFollower): the instance learns of a change only when it checks.
type changeBlind struct{ h *policy.Holder }

func (c changeBlind) Allowed(roles []string, perm policy.Permission, name string) bool {
	return c.h.Allowed(roles, perm, name)
}

// TestWaiterIsCheckedWhenItsTurnComes: the write that would grant a waiter checks
// its session against the policy of then, whether or not a withdrawal was written
// before — here the instance is not told of the change, and the holder releases
// right after it. The waiter that lost its grant is answered forbidden and the next
// one is granted.
func TestWaiterIsCheckedWhenItsTurnComes(t *testing.T) {
	e := newEnv(t)
	e.pol.Store(withRoles(keepers))
	e.authz = changeBlind{e.pol}
	e.startLock(t, Config{})
	const name = "update-topic/a"
	holder := e.open(t, "admin", 0)
	tr, k := e.open(t, "trader-1", 0), e.open(t, "keeper-1", 0)
	holder.mustAcquire(t, &wire.LockAcquireRequest{Name: name})
	pt := tr.acquireAsync(&wire.LockAcquireRequest{Name: name, WaitMS: wire.WaitForever, RequestID: "tr"})
	e.waitQueued(t, name, 1)
	pk := k.acquireAsync(&wire.LockAcquireRequest{Name: name, WaitMS: wire.WaitForever, RequestID: "k"})
	e.waitQueued(t, name, 2)

	e.pol.Store(withoutTraderGrant())
	holder.mustRelease(t, name)
	wantForbiddenWait(t, pt)
	if _, err := pk.wait(t, 10*time.Second); err != nil {
		t.Fatalf("the keeper behind the withdrawn waiter: %v", err)
	}
	if h := e.holders(t, name); !slices.Equal(h, []string{k.id}) {
		t.Fatalf("holders %v, want only the keeper %s", h, k.id)
	}
}

// TestChangeOfPrincipalWithdrawsAWaiterThatLostItsGrant: a session waiting for a
// lock changes its principal to one whose roles lack ACQUIRE_LOCK on the name (the
// registry's change_principal rotates the token, principal and roles). Its waiting
// request is answered forbidden, without a release, and leaves the queue; the
// session behind it keeps its place and is granted when the holder releases.
// Before, the request stayed queued and the session was granted the lock under its
// new principal.
func TestChangeOfPrincipalWithdrawsAWaiterThatLostItsGrant(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{})
	e.startLock(t, Config{})
	const name = "update-topic/a"
	holder := e.open(t, "admin", 0)
	t1, t2 := e.open(t, "trader-1", 0), e.open(t, "trader-2", 0)
	holder.mustAcquire(t, &wire.LockAcquireRequest{Name: name})
	p1 := t1.acquireAsync(&wire.LockAcquireRequest{Name: name, WaitMS: wire.WaitForever, RequestID: "t1"})
	e.waitQueued(t, name, 1)
	p2 := t2.acquireAsync(&wire.LockAcquireRequest{Name: name, WaitMS: wire.WaitForever, RequestID: "t2"})
	e.waitQueued(t, name, 2)

	var resp wire.SessionChangePrincipalResponse
	if err := t1.call(ctx10(t), wire.SubjectSessionChangePrincipal, &wire.SessionChangePrincipalRequest{
		Credentials: &wire.Credentials{Type: wire.CredentialsPassword, Username: "viewer-1", Password: "pw"}}, &resp); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(resp.Session.Roles, []string{"viewer"}) {
		t.Fatalf("roles after the change of principal: %v", resp.Session.Roles)
	}
	// Answered without a release: the change of the session's record is enough.
	wantForbiddenWait(t, p1)
	if q := e.waiting(t, name); !slices.Equal(q, []string{"t2"}) {
		t.Fatalf("after the withdrawal the queue is %v, want [t2]", q)
	}
	holder.mustRelease(t, name)
	if _, err := p2.wait(t, 10*time.Second); err != nil {
		t.Fatalf("the waiter behind, still allowed: %v", err)
	}
	if h := e.holders(t, name); !slices.Equal(h, []string{t2.id}) {
		t.Fatalf("holders %v, want only %s", h, t2.id)
	}
}

// TestHoldOutlivesTheLossOfItsGrant: a hold is not taken away when the policy no
// longer grants its name (the permission is checked on acquire, as in Diffusion);
// only waiting requests are withdrawn.
func TestHoldOutlivesTheLossOfItsGrant(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{})
	const name = "update-topic/a"
	t1, t2 := e.open(t, "trader-1", 0), e.open(t, "trader-2", 0)
	l := t1.mustAcquire(t, &wire.LockAcquireRequest{Name: name})
	p2 := t2.acquireAsync(&wire.LockAcquireRequest{Name: name, WaitMS: wire.WaitForever, RequestID: "t2"})
	e.waitQueued(t, name, 1)
	e.pol.Store(withoutTraderGrant())
	// The waiter is withdrawn; the holder, of the same role, keeps the lock.
	wantForbiddenWait(t, p2)
	if h := e.holders(t, name); !slices.Equal(h, []string{t1.id}) {
		t.Fatalf("holders %v after the policy change, want %s still", h, t1.id)
	}
	if err := t1.release(ctx10(t), name, l.Token); err != nil {
		t.Fatalf("release of a hold whose grant was withdrawn since: %v", err)
	}
}
