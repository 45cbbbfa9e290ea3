package lock

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/kvstore"
)

// Bucket is the KV bucket holding lock records, key = KeyFor(name).
const Bucket = "roster_locks"

// errConflict: the record changed since the revision the write expected.
var errConflict = errors.New("lock: record changed concurrently")

// KeyFor returns the KV key of a lock name: its unpadded base64url encoding, which
// is always a valid key ("." in a name would otherwise split subject tokens) and
// cannot collide.
func KeyFor(name string) string { return base64.RawURLEncoding.EncodeToString([]byte(name)) }

// entry is one lock record at a revision; rec is nil when the key is absent
// (never written, or deleted at rev).
type entry struct {
	rec *record
	rev uint64
}

// store reads and writes lock records. Every write is a compare-and-set on the
// key's last revision (the stream's Nats-Expected-Last-Subject-Sequence), as
// kv.Update does; a lock left without holders and waiters is deleted by a purge
// marker written the same way, which expires after GoneTTL, so that the bucket holds
// only live locks and never grows with the names ever locked. Writes go through the
// stream API rather than kv.Update/kv.Delete because a conditional delete there
// does not return the marker's revision, which the next compare-and-set needs.
//
// A cache, kept by one watch of the whole bucket, supplies the revision to expect,
// so that an uncontended change costs one round trip; a conflict re-reads the key.
type store struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	rd     *kvstore.Reader
	prefix string // subject prefix of the bucket's keys

	// changed is called for every entry new to the cache, whether from the watch, a
	// read or a write.
	changed func(key string, e entry)

	mu    sync.RWMutex
	cache map[string]entry
	// gone lists the deleted keys in the cache in the order they were learned. A
	// deleted key is cached only for goneTTL, as long as its purge marker lives: the
	// marker's revision saves the next write of the name a failed compare-and-set,
	// and once the marker has expired the key has no revision at all. Without the
	// eviction the cache would grow with every lock name ever used.
	gone    []goneKey
	goneTTL time.Duration
	// bySession indexes the cache by session: the keys of the records whose
	// holders or waiters name it (Config.MaxLocksPerSession counts them). Every
	// change of the cache — an entry replaced, deleted, evicted, or the cache
	// cleared — updates it, from the entry it replaces to the new one (set, drop).
	bySession map[string]map[string]struct{}

	// maxBytes bounds an encoded record (Config.MaxRecordBytes; 0: no bound).
	maxBytes int
}

// goneKey is a deleted key of the cache, learned at at.
type goneKey struct {
	key string
	rev uint64
	at  time.Time
}

// GoneTTL is how long the purge marker of a deleted lock record lives. The record
// itself is deleted only once the request ids it remembers have expired (two
// minutes), so the marker needs to live only long enough to give the next write of
// the name its revision from a cache; then the key is gone from the bucket.
const GoneTTL = time.Minute

// recordHeadroom is what a write needs beside the record: its subject and the
// compare-and-set headers.
const recordHeadroom = 8 << 10

// recordFormat is the format of the lock records this version writes. A version
// that adds to the record something an older one would lose or misread when it
// writes the record back raises it: write refuses to replace a record of a later
// format (errNewerFormat), so that while versions overlap in a rolling upgrade the
// older instances leave such locks to the newer ones (docs/architecture.md, "Record
// formats across versions"; pkg/sessions.Format is the same for session records).
const recordFormat = 1

// errNewerFormat: the record was written in a later format than recordFormat;
// nothing was written.
var errNewerFormat = errors.New("lock: record written in a newer format")

// errRecordTooLarge: the record, encoded, is over maxBytes; nothing was written.
var errRecordTooLarge = errors.New("lock: record too large")

// size returns the length of rec encoded (0 when it would be deleted).
func size(rec *record) int {
	if rec == nil || rec.empty() {
		return 0
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return math.MaxInt
	}
	return len(data)
}

// BucketConfig is the configuration of the locks bucket: one revision per key
// (the record holds the whole state), file storage, replicas copies (at least 1).
func BucketConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Roster locks: key = base64url(lock name), value = holders and FIFO waiters; compare-and-set only",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
		// Enables per-message TTLs, which the purge markers of deleted records
		// carry (GoneTTL).
		LimitMarkerTTL: GoneTTL,
	}
}

// firstRevision is the revision a locks bucket created at now starts from: now in
// microseconds since the Unix epoch (1 for a clock before it). Revisions are fencing
// tokens, and a bucket lost (deleted, or its server's data directory gone) and
// created again must not grant tokens that an earlier bucket has granted: it starts
// above every revision an earlier bucket reached, as long as that bucket averaged
// less than one write per microsecond since it was created and the clock has not
// gone back. Tokens stay below 2^53, exact as JSON numbers in JavaScript, until the
// year 2255 (docs/architecture.md, "Fencing tokens").
func firstRevision(now time.Time) uint64 {
	return uint64(max(now.UnixMicro(), 1))
}

func openStore(ctx context.Context, js jetstream.JetStream, replicas int) (*store, error) {
	// An existing bucket keeps its first revision (0 for one created before
	// buckets were created from a floor): only a bucket created now starts from it.
	kv, err := kvstore.CreateOrUpdateKeyValueFrom(ctx, js, BucketConfig(replicas), firstRevision(time.Now()))
	if err != nil {
		return nil, fmt.Errorf("lock: bucket %s: %w", Bucket, err)
	}
	rd, err := kvstore.NewReader(ctx, js, Bucket)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	return &store{js: js, kv: kv, rd: rd, prefix: "$KV." + Bucket + ".", cache: map[string]entry{}, bySession: map[string]map[string]struct{}{}, goneTTL: GoneTTL}, nil
}

func decodeRecord(data []byte, rev uint64) (*record, error) {
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("lock: decode record at revision %d: %w", rev, err)
	}
	r.materialize(rev)
	return &r, nil
}

// read returns the key's latest record, linearizably (see pkg/kvstore: a replica
// answering a direct get may lag, and an answer that changes nothing —
// a repeated acquire, a release of a lock not held — must not rest on a stale
// record; the first cluster run of the safety test failed on exactly that).
func (s *store) read(ctx context.Context, key string) (entry, error) {
	m, err := s.rd.Read(ctx, key)
	if errors.Is(err, kvstore.ErrNotFound) {
		return entry{}, nil
	}
	if err != nil {
		return entry{}, fmt.Errorf("lock: %w", err)
	}
	e := entry{rev: m.Revision}
	if !m.Deleted {
		if e.rec, err = decodeRecord(m.Value, m.Revision); err != nil {
			return entry{}, err
		}
	}
	s.remember(key, e)
	return e, nil
}

// write stores rec (or deletes the key when rec is empty, with a purge marker that
// expires after goneTTL) if the key's revision is
// still prev, and returns the new revision. errConflict when it is not, and
// errRecordTooLarge, writing nothing, when rec would be over maxBytes and larger
// than was, the record at prev (a write that shrinks a record already over the
// bound goes through).
func (s *store) write(ctx context.Context, key string, rec *record, prev uint64, was *record) (uint64, error) {
	if was != nil && was.Format > recordFormat {
		return 0, errNewerFormat
	}
	var data []byte
	var opts []kvstore.WriteOption
	if rec.empty() {
		opts = append(opts, kvstore.AsPurge(), kvstore.WithTTL(s.goneTTL))
	} else {
		rec.Format = recordFormat
		var err error
		if data, err = json.Marshal(rec); err != nil {
			return 0, fmt.Errorf("lock: encode record: %w", err)
		}
		if s.maxBytes > 0 && len(data) > s.maxBytes && len(data) > size(was) {
			return 0, errRecordTooLarge
		}
	}
	rev, err := kvstore.CompareAndSet(ctx, s.js, Bucket, key, prev, data, opts...)
	if errors.Is(err, kvstore.ErrConflict) {
		return 0, errConflict
	}
	if err != nil {
		return 0, fmt.Errorf("lock: %w", err)
	}
	return rev, nil
}

// cached returns the cache's entry for key.
func (s *store) cached(key string) (entry, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.cache[key]
	return e, ok
}

// remember records e unless the cache already holds a later revision, and then
// calls changed.
func (s *store) remember(key string, e entry) {
	s.mu.Lock()
	if old, ok := s.cache[key]; ok && old.rev >= e.rev {
		s.mu.Unlock()
		return
	}
	// A deleted key keeps the marker's revision for the next compare-and-set, as
	// long as the marker lives.
	s.setLocked(key, e)
	now := time.Now()
	if e.rec == nil {
		s.gone = append(s.gone, goneKey{key: key, rev: e.rev, at: now})
	}
	s.evictGoneLocked(now)
	s.mu.Unlock()
	if s.changed != nil {
		s.changed(key, e)
	}
}

// evictGoneLocked drops from the cache the deleted keys learned more than goneTTL
// ago, unless written again since.
func (s *store) evictGoneLocked(now time.Time) {
	n := 0
	for _, g := range s.gone {
		if now.Sub(g.at) < s.goneTTL {
			break
		}
		if e, ok := s.cache[g.key]; ok && e.rec == nil && e.rev == g.rev {
			s.dropLocked(g.key)
		}
		n++
	}
	clear(s.gone[:n])
	s.gone = s.gone[n:]
}

// setLocked caches e under key, and moves key in the session index from the
// sessions of the entry it replaces to those of e.
func (s *store) setLocked(key string, e entry) {
	old := s.cache[key]
	s.cache[key] = e
	s.indexLocked(key, old.rec, e.rec)
}

// dropLocked removes key from the cache and from the session index.
func (s *store) dropLocked(key string) {
	old, ok := s.cache[key]
	if !ok {
		return
	}
	delete(s.cache, key)
	s.indexLocked(key, old.rec, nil)
}

// indexLocked moves key in the session index from the sessions holding or waiting
// for it in old to those in cur (either may be nil: absent or deleted).
func (s *store) indexLocked(key string, old, cur *record) {
	if old == nil && cur == nil {
		return
	}
	now := map[string]struct{}{}
	if cur != nil {
		for _, h := range cur.Holders {
			now[h.Session] = struct{}{}
		}
		for _, w := range cur.Waiters {
			now[w.Session] = struct{}{}
		}
	}
	if old != nil {
		unindex := func(id string) {
			if _, ok := now[id]; ok {
				return
			}
			if keys := s.bySession[id]; keys != nil {
				delete(keys, key)
				if len(keys) == 0 {
					delete(s.bySession, id)
				}
			}
		}
		for _, h := range old.Holders {
			unindex(h.Session)
		}
		for _, w := range old.Waiters {
			unindex(w.Session)
		}
	}
	for id := range now {
		keys := s.bySession[id]
		if keys == nil {
			keys = map[string]struct{}{}
			s.bySession[id] = keys
		}
		keys[key] = struct{}{}
	}
}

// sessionLocks returns how many locks of the cache, key's aside, session holds or
// waits for.
func (s *store) sessionLocks(session, key string) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	keys := s.bySession[session]
	n := len(keys)
	if _, ok := keys[key]; ok {
		n--
	}
	return n
}

// snapshot returns the live records in the cache.
func (s *store) snapshot() map[string]entry {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]entry, len(s.cache))
	for k, e := range s.cache {
		if e.rec != nil {
			out[k] = e
		}
	}
	return out
}

// watch keeps the cache up to date from a watch of the bucket. It returns once the
// initial values are loaded; the watch then runs until ctx ends, on a goroutine
// that done tracks. A watch that ends on its own — nats.go gave up recreating its
// consumer (the bucket's stream deleted; in a cluster, an error it does not retry) —
// would leave the instance blind to other instances' locks, whose holders' sessions it
// checks: the bucket is watched and loaded again, every 250 ms doubling to 5 s. So it
// is when the bucket turns out to have been deleted and created again under a watch
// that went on (kvstore.Recreated, checked every kvstore.RecheckEvery).
func (s *store) watch(ctx context.Context, done *sync.WaitGroup, log *slog.Logger) error {
	stream, err := s.js.Stream(ctx, "KV_"+Bucket)
	if err != nil {
		return fmt.Errorf("lock: bucket %s: %w", Bucket, err)
	}
	created := stream.CachedInfo().Created
	w, err := s.load(ctx, 0)
	if err != nil {
		return err
	}
	done.Add(1)
	go func() {
		defer done.Done()
		for {
			kvstore.Follow(ctx, s.js.Conn(), s.kv, w, created, log, "the locks bucket", func(kve jetstream.KeyValueEntry) {
				if kve != nil {
					s.apply(kve)
				}
			})
			if ctx.Err() != nil {
				return
			}
			if w = kvstore.Rewatch(ctx, log, "the locks bucket", func(ctx context.Context) (jetstream.KeyWatcher, error) {
				return s.reload(ctx, &created)
			}); w == nil {
				return
			}
		}
	}()
	return nil
}

// apply puts an entry of the watch into the cache.
func (s *store) apply(kve jetstream.KeyValueEntry) {
	if old, ok := s.cached(kve.Key()); ok && old.rev >= kve.Revision() {
		return // this instance's own write, already cached: skip decoding it
	}
	e := entry{rev: kve.Revision()}
	if kve.Operation() == jetstream.KeyValuePut {
		rec, err := decodeRecord(kve.Value(), kve.Revision())
		if err != nil {
			return // not written by this service: ignore it
		}
		e.rec = rec
	}
	s.remember(kve.Key(), e)
}

// load watches the bucket, applies its initial values and returns the watch. After
// a reload (last > 0, the stream's last revision when the reload began) it removes
// from the cache the keys no longer in the bucket, unless cached at a later revision
// (a write of this instance meanwhile).
func (s *store) load(ctx context.Context, last uint64) (jetstream.KeyWatcher, error) {
	w, err := kvstore.WatchAll(ctx, s.js.Conn(), s.kv)
	if err != nil {
		return nil, fmt.Errorf("lock: watch %s: %w", Bucket, err)
	}
	seen := map[string]struct{}{}
	for loaded := false; !loaded; {
		select {
		case kve, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("lock: watch ended before the initial values")
			}
			if kve == nil {
				loaded = true
				continue
			}
			if last > 0 {
				seen[strings.Clone(kve.Key())] = struct{}{}
			}
			s.apply(kve)
		case <-ctx.Done():
			kvstore.StopWatch(s.js.Conn(), w)
			return nil, ctx.Err()
		}
	}
	if last > 0 {
		s.mu.Lock()
		for k, e := range s.cache {
			if _, ok := seen[k]; !ok && e.rev <= last {
				s.dropLocked(k)
			}
		}
		s.mu.Unlock()
	}
	return w, nil
}

// reload loads the bucket again after its watch ended. A bucket deleted and created
// again (created changed: revisions started over) empties the cache first.
func (s *store) reload(ctx context.Context, created *time.Time) (jetstream.KeyWatcher, error) {
	stream, err := s.js.Stream(ctx, "KV_"+Bucket)
	if err != nil {
		return nil, err
	}
	info := stream.CachedInfo()
	if !info.Created.Equal(*created) {
		s.mu.Lock()
		clear(s.cache)
		clear(s.bySession)
		s.mu.Unlock()
		*created = info.Created
	}
	return s.load(ctx, max(info.State.LastSeq, 1))
}
