package lock

import (
	"context"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestReleaseThenListAndAcquireAcrossInstances: a lock released through one lock
// instance (the release answered) is, through another instance on another node of
// a 3-node cluster, free to a try-once acquire by another session, while the
// locks bucket's leader is made to step down between the release and the acquire.
// A list through the other instance just after the release is counted, not
// checked: it reads the instance's cache, which follows the bucket's writes.
func TestReleaseThenListAndAcquireAcrossInstances(t *testing.T) {
	nodes := natstest.StartCluster(t, 3)
	serveAuth(t, nodes[0])
	e0 := &env{srv: nodes[0], js: nodes[0].JetStream(t), pol: testPolicy()}
	e0.stopRegistry = e0.startRegistry(t)
	e0.startLock(t, Config{Replicas: 3})
	e2 := &env{srv: nodes[2], js: nodes[2].JetStream(t), pol: e0.pol}
	b := e2.startLock(t, Config{Replicas: 3})
	holder := e0.openOn(t, nodes[0].ClientConn(t), "admin", 0)
	other := e0.openOn(t, nodes[2].ClientConn(t), "admin", 0)
	sys := nodes[1].ServiceConn(t)

	const rounds = 20
	var listedHeld, refused, unavailable int
	for i := range rounds {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		l, err := holder.acquire(ctx, &wire.LockAcquireRequest{Name: "r/x"})
		if err != nil {
			cancel()
			t.Fatalf("round %d: acquire: %v", i, err)
		}
		if err := holder.release(ctx, "r/x", l.Token); err != nil {
			cancel()
			t.Fatalf("round %d: release: %v", i, err)
		}
		list, err := b.handleList(ctx, &endpoint.Call{SessionID: other.id, Token: other.token}, &wire.LockListRequest{Prefix: "r/"})
		if err != nil {
			cancel()
			t.Fatalf("round %d: list: %v", i, err)
		}
		if len(list.Locks) > 0 {
			listedHeld++
		}
		if i%2 == 0 {
			if err := natstest.StepDown(ctx, sys, "KV_"+Bucket); err != nil {
				t.Logf("round %d: step-down: %v", i, err)
			}
		}
		got, err := other.acquire(ctx, &wire.LockAcquireRequest{Name: "r/x"})
		switch code := wire.CodeOf(err); {
		case err == nil:
			if err := other.release(ctx, "r/x", got.Token); err != nil {
				cancel()
				t.Fatalf("round %d: release by the other session: %v", i, err)
			}
		case code == wire.CodeUnavailable:
			unavailable++
		default:
			refused++
			t.Errorf("round %d: a try-once acquire after the release answered: %v", i, err)
		}
		cancel()
	}
	t.Logf("%d rounds: %d lists through the other instance still showed the released lock, %d acquires refused, %d unavailable",
		rounds, listedHeld, refused, unavailable)
}
