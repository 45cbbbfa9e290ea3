package kvstore

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// createAttempt bounds one attempt of CreateOrUpdateKeyValue and
// CreateOrUpdateStream. Creating a replicated stream takes tens of milliseconds; an
// attempt that gets no answer in this time is asked again.
const createAttempt = 2 * time.Second

// CreateOrUpdateKeyValue creates the bucket, or updates it to cfg when it exists,
// as jetstream's method of that name does, but asks again while JetStream gives no
// answer until ctx ends.
//
// Why: when two clients create the same stream in a cluster at the same moment —
// two instances of a service starting together on a fresh cluster — nats-server
// creates it and often answers neither (as in nats-io/nats-server#3677), so each waited out its
// whole deadline. Asked again, the stream exists and the update answers at once.
func CreateOrUpdateKeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return retryUnanswered(ctx, func(ctx context.Context) (jetstream.KeyValue, error) {
		return js.CreateOrUpdateKeyValue(ctx, cfg)
	})
}

// CreateOrUpdateStream creates the stream, or updates it to cfg when it exists,
// asking again while JetStream gives no answer, as CreateOrUpdateKeyValue does.
func CreateOrUpdateStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return retryUnanswered(ctx, func(ctx context.Context) (jetstream.Stream, error) {
		return js.CreateOrUpdateStream(ctx, cfg)
	})
}

// errCodeStreamCreate is JetStream's "error creating store for stream" (500). A
// stream created again right after its deletion can get it while the server still
// removes the deleted stream's files; asked again a moment later, it succeeds.
const errCodeStreamCreate jetstream.ErrorCode = 10049

// storeRetries bounds the attempts answered errCodeStreamCreate, storeRetryWait
// apart: a store that still fails after them fails for another reason (the disk).
const (
	storeRetries   = 20
	storeRetryWait = 50 * time.Millisecond
)

// retryUnanswered calls fn with a deadline of createAttempt (or ctx's, when
// sooner) until it returns anything but that deadline's expiry — or, a few times,
// errCodeStreamCreate — or ctx ends.
func retryUnanswered[T any](ctx context.Context, fn func(context.Context) (T, error)) (T, error) {
	for failed := 0; ; {
		actx, cancel := context.WithTimeout(ctx, createAttempt)
		v, err := fn(actx)
		cancel()
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeStreamCreate && failed < storeRetries {
			failed++
			select {
			case <-time.After(storeRetryWait):
				continue
			case <-ctx.Done():
				return v, err
			}
		}
		if err == nil || !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			return v, err
		}
	}
}
