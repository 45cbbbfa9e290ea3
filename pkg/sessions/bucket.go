package sessions

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/kvstore"
)

// Bucket is the KV bucket holding session records.
const Bucket = "ROSTER_SESSIONS"

// markerTTL is how long the bucket keeps the marker left by a key whose TTL expired,
// so that a registry starting after the expiry still sees it.
const markerTTL = 24 * time.Hour

// BucketConfig is the configuration of the sessions bucket with replicas copies
// (at least 1). Per-key TTLs are enabled (LimitMarkerTTL): the registry gives every
// record a TTL as a backstop for when no registry runs, and tombstones a TTL of
// their retention.
func BucketConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Replicas:       max(replicas, 1),
		Bucket:         Bucket,
		Description:    "Roster session records, key = session id; written only by the registry",
		History:        1,
		Storage:        jetstream.FileStorage,
		LimitMarkerTTL: markerTTL,
	}
}

// EnsureBucket returns the sessions bucket, creating it with BucketConfig(1) when it
// does not exist yet, so that every service may call it at start in any order. It
// does not change an existing bucket: the registry applies the configuration,
// replicas included (UpdateBucket).
func EnsureBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return UpdateBucket(ctx, js, 1)
	}
	if err != nil {
		return nil, fmt.Errorf("sessions: bucket %s: %w", Bucket, err)
	}
	return kv, nil
}

// UpdateBucket creates the sessions bucket or updates it to BucketConfig(replicas).
func UpdateBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := kvstore.CreateOrUpdateKeyValue(ctx, js, BucketConfig(replicas))
	if err != nil {
		return nil, fmt.Errorf("sessions: bucket %s: %w", Bucket, err)
	}
	return kv, nil
}
