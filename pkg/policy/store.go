package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/kvstore"
)

// Bucket is the JetStream KV bucket holding the policy, and Key its one key. The
// value is the policy as JSON.
const (
	Bucket = "roster_policy"
	Key    = "current"
)

// Store errors.
var (
	// ErrNoPolicy: the bucket holds no policy yet.
	ErrNoPolicy = errors.New("policy: no policy stored")
	// ErrConflict: the stored policy changed since the revision the caller read.
	ErrConflict = errors.New("policy: stored policy changed concurrently")
	// ErrInvalidStored: the stored policy does not decode or validate (written
	// behind the store's back, or by a release that knows more permissions).
	ErrInvalidStored = errors.New("policy: the stored policy cannot be applied")
)

// Store reads and writes the policy in JetStream KV.
type Store struct {
	kv jetstream.KeyValue
	nc *nats.Conn
}

// StoreOption configures OpenStore.
type StoreOption func(*jetstream.KeyValueConfig)

// WithReplicas sets the replicas of the policy bucket (3 on a production cluster).
func WithReplicas(n int) StoreOption {
	return func(c *jetstream.KeyValueConfig) {
		if n > 0 {
			c.Replicas = n
		}
	}
}

// OpenStore opens the policy bucket, creating it if needed (the auth service does
// this; other services may call it too, it is idempotent).
func OpenStore(ctx context.Context, js jetstream.JetStream, opts ...StoreOption) (*Store, error) {
	cfg := jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Roster permission policy",
		History:     16,
		Storage:     jetstream.FileStorage,
		Replicas:    1,
	}
	for _, o := range opts {
		o(&cfg)
	}
	kv, err := kvstore.CreateOrUpdateKeyValue(ctx, js, cfg)
	if err != nil {
		return nil, fmt.Errorf("policy: open bucket %s: %w", Bucket, err)
	}
	return &Store{kv: kv, nc: js.Conn()}, nil
}

// Get returns the stored policy and its revision, or ErrNoPolicy, or
// ErrInvalidStored (with the revision) when it cannot be applied.
func (s *Store) Get(ctx context.Context) (*Policy, uint64, error) {
	e, err := s.kv.Get(ctx, Key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrNoPolicy
	}
	if err != nil {
		return nil, 0, fmt.Errorf("policy: get: %w", err)
	}
	p, _, err := decode(e.Value())
	if err != nil {
		return nil, e.Revision(), fmt.Errorf("%w (revision %d): %w", ErrInvalidStored, e.Revision(), err)
	}
	return p, e.Revision(), nil
}

// Put stores p after validating it. With revision 0 it stores unconditionally;
// otherwise only if the stored revision is still revision (else ErrConflict). It
// returns the new revision.
func (s *Store) Put(ctx context.Context, p *Policy, revision uint64) (uint64, error) {
	if err := p.Validate(); err != nil {
		return 0, err
	}
	data, err := encode(p)
	if err != nil {
		return 0, err
	}
	var rev uint64
	if revision == 0 {
		rev, err = s.kv.Put(ctx, Key, data)
	} else {
		rev, err = s.kv.Update(ctx, Key, data, revision)
	}
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return 0, ErrConflict
	}
	if err != nil {
		return 0, fmt.Errorf("policy: put: %w", err)
	}
	return rev, nil
}

// Create stores p only if no policy is stored yet; it returns ErrConflict otherwise.
func (s *Store) Create(ctx context.Context, p *Policy) (uint64, error) {
	if err := p.Validate(); err != nil {
		return 0, err
	}
	data, err := encode(p)
	if err != nil {
		return 0, err
	}
	rev, err := s.kv.Create(ctx, Key, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, ErrConflict
	}
	if err != nil {
		return 0, fmt.Errorf("policy: create: %w", err)
	}
	return rev, nil
}

// Watch keeps h equal to the stored policy until ctx ends: it applies the current
// value, then every change as JetStream pushes it (well within a second). A stored
// value that does not decode or validate is logged and skipped: h keeps the last
// good policy. A deleted policy leaves h unchanged too — services keep working with
// what they had rather than falling open or closed on an operator's mistake. ready,
// if not nil, is closed once the current value has been applied. A watch that ends
// on its own (nats.go could not recreate its consumer: the bucket was deleted, a
// cluster answered with an error it does not retry) is started again, every 250 ms
// doubling to 5 s, rather than leaving h stale without a word; so is one whose bucket
// was deleted and created again under it, which goes on without the new bucket's
// first revisions (kvstore.Recreated, checked every kvstore.RecheckEvery).
func (s *Store) Watch(ctx context.Context, h *Holder, log *slog.Logger, ready chan<- struct{}) error {
	// When the bucket's stream was created (zero if unknown: not checked), for
	// kvstore.Recreated.
	created, _ := kvstore.Created(ctx, s.kv)
	w, err := kvstore.Watch(ctx, s.nc, s.kv, Key)
	if err != nil {
		return fmt.Errorf("policy: watch: %w", err)
	}
	for {
		kvstore.Follow(ctx, s.nc, s.kv, w, created, log, "the policy bucket", func(e jetstream.KeyValueEntry) { apply(e, h, log, &ready) })
		if ctx.Err() != nil {
			return nil
		}
		if w = kvstore.Rewatch(ctx, log, "the stored policy", func(ctx context.Context) (jetstream.KeyWatcher, error) {
			created, _ = kvstore.Created(ctx, s.kv)
			return kvstore.Watch(ctx, s.nc, s.kv, Key)
		}); w == nil {
			return nil
		}
	}
}

// apply applies an entry of the policy's watch to h; nil, the end of the initial
// values, closes *ready.
func apply(e jetstream.KeyValueEntry, h *Holder, log *slog.Logger, ready *chan<- struct{}) {
	if e == nil {
		if *ready != nil {
			close(*ready)
			*ready = nil
		}
		return
	}
	if e.Operation() != jetstream.KeyValuePut {
		log.Warn("stored policy deleted; keeping the last one", "revision", e.Revision())
		return
	}
	p, upgraded, err := decode(e.Value())
	if err != nil {
		log.Error("stored policy is invalid; keeping the last one", "revision", e.Revision(), "err", err)
		return
	}
	for _, u := range upgraded {
		log.Warn("stored policy has names on a permission not granted per name; applied as before, store it again to drop them (roster policy get, then set)",
			"revision", e.Revision(), "grant", u)
	}
	h.Store(p)
	// At info: which policy an instance applies is what an operator checks after a
	// change, and what clears the warning of a process that started before any
	// was stored. It changes rarely: a line at start and one a change.
	log.Info("policy applied", "revision", e.Revision())
}

// Format is the format of the stored policies this version writes. A version that
// adds to the policy anything an older one would ignore to the detriment of security
// (a restriction, say) raises it: an instance does not apply a stored policy of a
// later format (decode refuses it, and Watch keeps the last good policy, or none: every
// check then fails closed), rather than apply it without what it does not understand
// (docs/architecture.md, "Record formats across versions").
const Format = 1

// stored is a policy as stored: its fields, and the format they were written in (0,
// absent, before the format was kept: 1).
type stored struct {
	Format int `json:"format,omitempty"`
	*Policy
}

// encode renders p for storage, in Format.
func encode(p *Policy) ([]byte, error) {
	data, err := json.Marshal(stored{Format: Format, Policy: p})
	if err != nil {
		return nil, fmt.Errorf("policy: encode: %w", err)
	}
	return data, nil
}

// decode reads a stored policy. One stored before names on unscoped permissions
// were refused is read with the meaning it had (upgradeUnscopedNames), and upgraded
// says which grants were rewritten.
func decode(data []byte) (p *Policy, upgraded []string, err error) {
	st := stored{Policy: &Policy{}}
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, nil, fmt.Errorf("policy: decode stored policy: %w", err)
	}
	if st.Format > Format {
		return nil, nil, fmt.Errorf("policy: the stored policy was written by a newer version of Roster (format %d; this version applies up to %d)", st.Format, Format)
	}
	p = st.Policy
	upgraded = p.upgradeUnscopedNames()
	if err := p.Validate(); err != nil {
		return nil, nil, err
	}
	return p, upgraded, nil
}
