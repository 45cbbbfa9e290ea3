package roster

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/services/lock"
	"github.com/seed-3c836eab/roster/services/registry"
)

// replicatedStreams are the streams the services update to their Replicas at start:
// the buckets' and the registry's own.
var replicatedStreams = []string{
	"KV_" + sessions.Bucket, registry.EventsStream, registry.ActivityStream,
	"KV_" + lock.Bucket, "KV_" + policy.Bucket,
}

// checkReplicas refuses to start services that would lower the copies of one of
// Roster's streams: every service updates the buckets and streams it uses to its
// own Replicas at start, so a single process started without the deployment's
// --replicas (1 by default) on a production cluster scaled them from 3 copies
// down to 1 without a word, and the death of the one node holding a bucket then
// lost it. Raising is allowed: that is how a deployment scales its buckets up.
// Lowering them on purpose is an edit of the streams, made before the processes
// are started with the lower value.
func checkReplicas(ctx context.Context, nc *nats.Conn, replicas int) error {
	replicas = max(replicas, 1)
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	for _, name := range replicatedStreams {
		s, err := js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
		if have := s.CachedInfo().Config.Replicas; have > replicas {
			return configErr("--replicas %d would lower %s from its %d copies: give every process of the deployment the same --replicas (%d here); "+
				"to lower the copies on purpose, edit the streams first (nats stream edit %s --replicas %d, as the service user)",
				replicas, name, have, have, name, replicas)
		}
	}
	return nil
}
