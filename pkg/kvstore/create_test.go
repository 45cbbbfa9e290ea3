package kvstore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/kvstore"
	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// Two instances of a service starting together on a fresh cluster create the same
// bucket and streams at once. nats-server creates each and often answers neither
// request; asked again, the update answers. Every instance is started within a few
// seconds, not after its whole deadline (30 s in the services).
func TestConcurrentCreateInACluster(t *testing.T) {
	nodes := natstest.StartCluster(t, 3)
	const deadline = 15 * time.Second
	for _, tc := range []struct {
		name   string
		create func(context.Context, jetstream.JetStream, string) error
	}{
		{"bucket", func(ctx context.Context, js jetstream.JetStream, name string) error {
			_, err := kvstore.CreateOrUpdateKeyValue(ctx, js, jetstream.KeyValueConfig{Bucket: name, Replicas: 3, Storage: jetstream.FileStorage})
			return err
		}},
		{"stream", func(ctx context.Context, js jetstream.JetStream, name string) error {
			_, err := kvstore.CreateOrUpdateStream(ctx, js, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}, Replicas: 3, Storage: jetstream.FileStorage})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Two rounds: the server does not leave every concurrent create
			// unanswered.
			for round := range 2 {
				name := tc.name + string(rune('a'+round))
				var wg sync.WaitGroup
				took := make([]time.Duration, len(nodes))
				errs := make([]error, len(nodes))
				for i, n := range nodes {
					js := n.JetStream(t)
					wg.Add(1)
					go func() {
						defer wg.Done()
						ctx, cancel := context.WithTimeout(context.Background(), deadline)
						defer cancel()
						start := time.Now()
						errs[i] = tc.create(ctx, js, name)
						took[i] = time.Since(start)
					}()
				}
				wg.Wait()
				for i := range nodes {
					if errs[i] != nil || took[i] > deadline/3 {
						t.Errorf("%s, client on node %d: got %v after %v, want success within %v", name, i, errs[i], took[i], deadline/3)
					}
				}
			}
		})
	}
}
