package registry

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/kvstore"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// Streams the registry owns besides the sessions bucket.
const (
	// EventsStream keeps session events on roster.v1.events.session.<id>.<kind>.
	EventsStream = "ROSTER_SESSION_EVENTS"
	// ActivityStream keeps the activity batches published on
	// roster.internal.v1.session.activity, so that a starting registry knows the
	// activity not yet persisted in the records.
	ActivityStream = "ROSTER_SESSION_ACTIVITY"
)

// errConflict is a lost compare-and-set: the record changed since it was read.
var errConflict = errors.New("registry: record changed concurrently")

// store is the registry's access to JetStream: the sessions bucket and the streams.
type store struct {
	js jetstream.JetStream
	kv jetstream.KeyValue
	rd *kvstore.Reader
	// known returns the decoded record of a session at a revision when the instance
	// holds it, or nil: decoding a record costs more than the read.
	known func(id string, rev uint64) *sessions.Record
	// readWait, if not zero, replaces maxReadWait.
	readWait time.Duration
}

func openStore(ctx context.Context, js jetstream.JetStream, cfg Config) (*store, error) {
	kv, err := sessions.UpdateBucket(ctx, js, cfg.Replicas)
	if err != nil {
		return nil, err
	}
	if _, err := kvstore.CreateOrUpdateStream(ctx, js, jetstream.StreamConfig{
		Name:        EventsStream,
		Description: "Roster session events: opened, updated, disconnected, reconnected, principal_changed, closed",
		Subjects:    []string{wire.SessionEventsPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		MaxAge:      cfg.EventsMaxAge,
		Duplicates:  eventsDedup,
		Replicas:    max(cfg.Replicas, 1),
		// Event reads (roster.v1.session.events) are batched direct gets.
		AllowDirect: true,
	}); err != nil {
		return nil, fmt.Errorf("registry: stream %s: %w", EventsStream, err)
	}
	if _, err := kvstore.CreateOrUpdateStream(ctx, js, jetstream.StreamConfig{
		Name:        ActivityStream,
		Description: "Batches of active session ids, replayed by a starting registry",
		Subjects:    []string{wire.SubjectSessionActivity},
		Storage:     jetstream.FileStorage,
		MaxAge:      2 * cfg.PersistInterval,
		Duplicates:  time.Second,
		Replicas:    max(cfg.Replicas, 1),
	}); err != nil {
		return nil, fmt.Errorf("registry: stream %s: %w", ActivityStream, err)
	}
	rd, err := kvstore.NewReader(ctx, js, sessions.Bucket)
	if err != nil {
		return nil, err
	}
	return &store{js: js, kv: kv, rd: rd, known: func(string, uint64) *sessions.Record { return nil }}, nil
}

// get reads the current record of a session. It is always read from the bucket's
// leader, so that every instance reads its own and every other instance's writes —
// linearizably, never from a replica that may lag (pkg/kvstore); the record
// returned is shared and must not be modified. While no leader answers (an election
// after a node died) the read waits for one rather than take a replica's copy: a
// replica left behind answers with the record from before a write already
// acknowledged (a session closed, a token rotated), and an answer that writes
// nothing — a get, a refusal, the caller authenticated for a change of another
// session — has no compare-and-set to catch it. Each read is bounded, and a round
// that got no answer is repeated until ctx ends (then unavailable): a request
// JetStream drops (a stream without a leader) would otherwise hold the caller for
// its whole deadline after storage came back.
func (st *store) get(ctx context.Context, id string) (*sessions.Record, error) {
	if !sessions.ValidID(id) {
		return nil, wire.Errorf(wire.CodeSessionNotFound, "no session %q", id)
	}
	// A request's context may have no deadline (its client gave none; it then ends
	// only when the service stops) or a long one: a read would repeat for as long
	// as storage does not answer, holding the worker.
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(st.readWait, maxReadWait))
	defer cancel()
	for {
		rctx, cancel := context.WithTimeout(ctx, leaderReadTimeout)
		e, err := st.rd.Read(rctx, id)
		cancel()
		if errors.Is(err, kvstore.ErrNotFound) || err == nil && e.Deleted {
			return nil, wire.Errorf(wire.CodeSessionNotFound, "no session %q", id)
		}
		if err == nil {
			if rec := st.known(id, e.Revision); rec != nil {
				return rec, nil
			}
			return sessions.Decode(e.Value, e.Revision)
		}
		select {
		case <-ctx.Done():
			return nil, unavailable("read session", err)
		case <-time.After(readRetryPause):
		}
	}
}

// leaderReadTimeout bounds one read from the bucket's leader (a request sent to a
// leader that died is never answered); readRetryPause separates the rounds of a
// get no leader answered.
const (
	leaderReadTimeout = 500 * time.Millisecond
	readRetryPause    = 100 * time.Millisecond
)

// maxReadWait bounds a read, every round included, when its context has no deadline.
const maxReadWait = 10 * time.Second

// create stores a new record (data, encoded); ttl 0 means none. Like write, it is
// not cut short by the request's deadline.
func (st *store) create(ctx context.Context, id string, data []byte, ttl time.Duration) (uint64, error) {
	ctx, done := endpoint.WithoutDeadline(ctx)
	defer done()
	var opts []jetstream.KVCreateOpt
	if ttl > 0 {
		opts = append(opts, jetstream.KeyTTL(ttl))
	}
	rev, err := st.kv.Create(ctx, id, data, opts...)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, errConflict
	}
	if err != nil {
		return 0, unavailable("create session", err)
	}
	return rev, nil
}

// write stores a record (data, encoded) if the key is still at revision rev, with a
// per-key TTL (0: none). kv.Update would drop the TTL, so this publishes to the
// bucket's subject with the expected last sequence and the TTL header.
//
// The request's deadline does not cut a write short (endpoint.WithoutDeadline):
// once sent it may apply whatever the caller does, and cut short it would leave
// the writer not knowing, and skipping what follows a write (the instance's copy,
// the event's publish, the close's notice and count). It ends as writes did
// before requests had deadlines: when storage answers, at JetStream's own timeout
// (5 s) or a bound set on a context already without the deadline (expire's), or
// when the service stops. Changes by filter look at the deadline between writes.
func (st *store) write(ctx context.Context, id string, rev uint64, data []byte, ttl time.Duration) (uint64, error) {
	ctx, done := endpoint.WithoutDeadline(ctx)
	defer done()
	var opts []kvstore.WriteOption
	if ttl > 0 {
		opts = append(opts, kvstore.WithTTL(ttl))
	}
	next, err := kvstore.CompareAndSet(ctx, st.js, sessions.Bucket, id, rev, data, opts...)
	if errors.Is(err, kvstore.ErrConflict) {
		return 0, errConflict
	}
	if err != nil {
		return 0, unavailable("write session", err)
	}
	return next, nil
}

// publishEvent appends a session event to the events stream. msgID, when not empty,
// deduplicates retries within the stream's duplicate window.
func (st *store) publishEvent(ctx context.Context, ev *wire.SessionEvent, msgID string) error {
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	msg := &nats.Msg{Subject: wire.SessionEventSubject(ev.SessionID, ev.Kind), Data: data, Header: nats.Header{}}
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	if _, err := st.js.PublishMsg(ctx, msg, opts...); err != nil {
		return unavailable("publish session event", err)
	}
	return nil
}

// unavailable wraps a storage failure: the client sees unavailable, the cause is
// logged by the endpoint. Storage that does not answer in time is unavailable too,
// as the other services' session view has it: timeout is for the time a caller
// allowed, and no caller gave the registry's reads and writes theirs.
func unavailable(what string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", what, errors.Join(wire.Errorf(wire.CodeUnavailable, "session storage did not answer in time; retry"), err))
	}
	return fmt.Errorf("%s: %w", what, errors.Join(wire.Errorf(wire.CodeUnavailable, "session storage is not available"), err))
}

// ttlFor returns the per-key TTL a record is written with: the tombstone retention
// for a CLOSED record, none for a permanent one, and otherwise the timeout plus the
// persist interval plus slack, so that it never fires while a registry runs.
// TTLs are whole seconds.
func ttlFor(cfg *Config, rec *sessions.Record) time.Duration {
	var d time.Duration
	switch {
	case rec.Closed():
		d = cfg.TombstoneRetention
	case rec.Permanent:
		if rec.State != wire.StateRecovering {
			return 0
		}
		d = cfg.ReconnectWindow + cfg.PersistInterval + cfg.TTLSlack
	default:
		d = rec.Timeout() + cfg.PersistInterval + cfg.TTLSlack
	}
	return d.Truncate(time.Second) + time.Second
}
