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

// CreateOrUpdateKeyValueFrom is CreateOrUpdateKeyValue for a bucket whose revisions
// must not start over when the bucket is lost and created again (the lock service's:
// its revisions are fencing tokens). A bucket it creates starts at revision first
// (its stream's FirstSeq). A bucket that exists keeps its first sequence, whatever it
// is (0 for a bucket created without one), and only the rest of its configuration is
// updated to cfg: the server stores an update's first_seq as given, and a filestore
// opened with a first_seq above its first message purges every message below it —
// an existing bucket given one would lose its records at the next restart.
//
// Two clients creating the bucket at once, each from its own first, both end up on
// the one the server created first: the other's create is refused (the stream name
// is in use with another configuration) and it updates that bucket instead, keeping
// its first sequence.
//
// KeyValueConfig has no first sequence, so the bucket's stream is created from
// StreamConfig, the configuration nats.go's CreateKeyValue would create.
func CreateOrUpdateKeyValueFrom(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig, first uint64) (jetstream.KeyValue, error) {
	scfg, err := StreamConfig(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.LimitMarkerTTL != 0 {
		// As nats.go checks: a server before API level 1 would ignore the
		// per-message TTL settings instead of refusing them.
		info, err := js.AccountInfo(ctx)
		if err != nil {
			return nil, err
		}
		if info.API.Level < 1 {
			return nil, jetstream.ErrLimitMarkerTTLNotSupported
		}
	}
	if _, err := retryUnanswered(ctx, func(ctx context.Context) (jetstream.Stream, error) {
		return createOrKeepFirst(ctx, js, scfg, first)
	}); err != nil {
		return nil, err
	}
	for round := 1; ; round++ {
		// In a cluster, the bucket another client created a moment ago can be
		// unknown to the node asked for it still.
		kv, err := js.KeyValue(ctx, cfg.Bucket)
		if !errors.Is(err, jetstream.ErrBucketNotFound) || round == createRounds {
			return kv, err
		}
		if err := pause(ctx, round); err != nil {
			return nil, err
		}
	}
}

// createRounds bounds the rounds of createOrKeepFirst, and of the bind after it, that
// a clustered JetStream answers "stream not found" for a stream being created.
const createRounds = 5

// pause waits before round+1 of a create: 50 ms times round, or until ctx ends.
func pause(ctx context.Context, round int) error {
	select {
	case <-time.After(time.Duration(round) * 50 * time.Millisecond):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// createOrKeepFirst creates the stream scfg starting at sequence first, or, when a
// stream of that name exists, updates it to scfg with its own first sequence.
func createOrKeepFirst(ctx context.Context, js jetstream.JetStream, scfg jetstream.StreamConfig, first uint64) (jetstream.Stream, error) {
	// A few rounds: a stream deleted between the refused create and the update is
	// created again, and in a cluster a create, a read or an update racing another
	// client's create of the stream can be answered "stream not found" (seen in
	// TestConcurrentCreateFromFirst); a stream that keeps vanishing is reported.
	var err error
	for round := 1; round <= createRounds; round++ {
		if round > 1 {
			if perr := pause(ctx, round-1); perr != nil {
				return nil, errors.Join(err, perr)
			}
		}
		scfg.FirstSeq = first
		var s jetstream.Stream
		// The create comes first, and an existing bucket takes the same path as
		// one another client has just created: the server refuses a create whose
		// configuration differs from the stream's (and answers one that is the
		// same, first sequence included, with the stream).
		s, err = js.CreateStream(ctx, scfg)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return s, err
		}
		if s, err = js.Stream(ctx, scfg.Name); err != nil {
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				continue
			}
			return nil, err
		}
		scfg.FirstSeq = s.CachedInfo().Config.FirstSeq
		if s, err = js.UpdateStream(ctx, scfg); !errors.Is(err, jetstream.ErrStreamNotFound) {
			return s, err
		}
	}
	return nil, err
}
