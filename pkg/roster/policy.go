package roster

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/policy"
)

// policyFollower keeps one Holder equal to the stored policy for every service of
// the process. Until a policy is stored the holder has none, and every permission
// check fails: closed, not open.
type policyFollower struct {
	holder *policy.Holder
	nc     *nats.Conn
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func followPolicy(ctx context.Context, nc *nats.Conn, replicas int, log *slog.Logger) (*policyFollower, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	store, err := policy.OpenStore(octx, js, policy.WithReplicas(replicas))
	if err != nil {
		return nil, err
	}
	wctx, stop := context.WithCancel(context.Background())
	f := &policyFollower{holder: policy.NewHolder(nil), nc: nc, cancel: stop}
	ready := make(chan struct{})
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		if err := store.Watch(wctx, f.holder, log.With("component", "policy"), ready); err != nil {
			log.Error("policy watch stopped", "err", err)
		}
	}()
	select {
	case <-ready:
	case <-octx.Done():
		f.stop()
		// Transient: a cluster may still be electing the bucket's leader (Start retries).
		return nil, fmt.Errorf("policy: the stored policy could not be read within 10s: %w", context.DeadlineExceeded)
	}
	if f.holder.Load() == nil {
		log.Warn("no policy is stored yet: every permission check fails until one is (roster serve --policy, or the auth service's policy.set)")
	}
	return f, nil
}

func (f *policyFollower) stop() {
	f.cancel()
	f.wg.Wait()
	f.nc.Close()
}
