package sessions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/kvstore"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// DefaultTouchInterval is how often a View publishes the activity batched by Touch.
const DefaultTouchInterval = 100 * time.Millisecond

// maxBatch bounds the ids in one activity message (about 25 bytes each), well under
// the server's max payload.
const maxBatch = 20000

// Change describes one change of the bucket, as a View applies it.
type Change struct {
	ID string
	// Record is the new record; nil when the key was removed (deleted, or its TTL
	// expired). A closed one is compact (Record.Compact), as a full view keeps it.
	Record *Record
	// Prev is the record the view held before; nil when the id was new to it.
	Prev *Record
}

// Option configures a View.
type Option func(*View)

// WithTouchInterval sets how often Touch batches are published (default 100 ms).
func WithTouchInterval(d time.Duration) Option {
	return func(v *View) {
		if d > 0 {
			v.touchEvery = d
		}
	}
}

// WithKnown gives the view a source of records it need not decode: known returns
// the record of a session at a revision when its caller already holds it (the
// registry holds the records it wrote), or nil. The record returned is shared and
// must not be modified.
func WithKnown(known func(id string, rev uint64) *Record) Option {
	return func(v *View) { v.SetKnown(known) }
}

// SetKnown sets the view's source of records it need not decode (WithKnown) on a
// view already running — the registry sets it on a view its process shares — or
// clears it with nil.
func (v *View) SetKnown(known func(id string, rev uint64) *Record) {
	if known == nil {
		v.known.Store(nil)
		return
	}
	v.known.Store(&known)
}

// WithLogger sets the logger the view reports a lost watch to (default slog.Default).
func WithLogger(log *slog.Logger) Option {
	return func(v *View) {
		if log != nil {
			v.log = log
		}
	}
}

// KeepGone makes the view keep the keys whose last entry is a removal marker when it
// loads, and those of the live sessions removed after, until TakeGoneAtLoad takes
// them (the registry's view).
func KeepGone() Option {
	return func(v *View) { v.keepGone = true }
}

// Slim makes the view keep, per session, only what authenticating a session and
// delivering to it need: its id, principal, token hash, state, close reason, roles,
// connection, deliver key and revision. The records Get, Authenticate, Range and
// Subscribe's replay return are built from that on each call (so they are not
// shared), and have no properties, times or outbox. Subscribers still receive each change's new
// record in full (Change.Record), as decoded from the bucket; Change.Prev is slim.
// A subscriber that needs the full record of every session — the initial ones too —
// must be given with OnChange, since the replay of a later Subscribe is slim.
//
// A service that keeps what it needs of the properties itself (messaging, in its
// index) uses it to avoid holding every decoded record twice: with a dozen short
// properties a slim view costs less than a tenth of a full one per session.
func Slim() Option {
	return func(v *View) { v.slim = true }
}

// OnChange subscribes fn before the view loads the bucket, so that fn sees every
// record stored at the start (Prev nil) and then every change, each in full, for the
// view's lifetime. fn runs as a Subscribe callback does: on the view's goroutine,
// under its lock, before the change is visible through Get or Authenticate.
func OnChange(fn func(Change)) Option {
	return func(v *View) {
		if fn != nil {
			v.subs[v.nextSub] = fn
			v.nextSub++
		}
	}
}

// View is a live, in-memory copy of every session in the bucket, kept up to date by a
// KV watch. It is safe for concurrent use.
type View struct {
	nc         *nats.Conn
	rd         *kvstore.Reader
	known      atomic.Pointer[func(id string, rev uint64) *Record]
	touchEvery time.Duration
	log        *slog.Logger
	created    time.Time // when the bucket's stream was created, as of the last load
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	slim       bool

	mu      sync.RWMutex
	records map[string]*Record // full view
	held    map[string]*held   // slim view
	subs    map[int]func(Change)
	nextSub int
	// removed remembers, for removedFor, the revision at which each removed key was
	// removed, so that a record read before the removal (fetch) and applied after it
	// does not bring the session back; removedQ lists them in removal order, so that
	// forgetting them costs only the ones forgotten.
	removed  map[string]removal
	removedQ []removedID
	// gone lists the keys whose last entry was a removal marker when the view
	// loaded, then those of the live sessions removed since (with KeepGone), until
	// TakeGoneAtLoad takes them.
	keepGone  bool
	goneTaken bool
	gone      []Gone

	touchMu sync.Mutex
	touched map[string]struct{}
}

type removal struct {
	rev uint64
	at  time.Time
}

// Gone is a key of the bucket whose last entry is a removal marker: the record was
// deleted or purged, or its KV TTL removed it. Revision is the marker's revision,
// At when the marker was stored. Record is the live record the view held, for a key
// removed after the load (shared: not to be modified); nil for one gone at the load.
type Gone struct {
	ID       string
	Revision uint64
	At       time.Time
	Record   *Record
}

type removedID struct {
	id string
	at time.Time
}

// removedFor is how long a removal is remembered: longer than a fetch may take (2 s).
const removedFor = 10 * time.Second

// Watch starts a View of the sessions bucket (creating the bucket if needed) and
// returns once the view holds every record stored at the time of the call. ctx
// bounds that start only: a process told to stop while the bucket's initial values
// are not all in (a cluster electing a stream leader) must not wait for them. The
// view then follows the bucket until Close is called.
func Watch(ctx context.Context, js jetstream.JetStream, opts ...Option) (*View, error) {
	kv, err := EnsureBucket(ctx, js)
	if err != nil {
		return nil, err
	}
	rd, err := kvstore.NewReader(ctx, js, Bucket)
	if err != nil {
		return nil, err
	}
	v := &View{
		nc:         js.Conn(),
		rd:         rd,
		touchEvery: DefaultTouchInterval,
		log:        slog.Default(),
		subs:       map[int]func(Change){},
		touched:    map[string]struct{}{},
		removed:    map[string]removal{},
	}
	for _, o := range opts {
		o(v)
	}
	if v.slim {
		v.held = map[string]*held{}
	} else {
		v.records = map[string]*Record{}
	}
	stream, err := js.Stream(ctx, "KV_"+Bucket)
	if err != nil {
		return nil, fmt.Errorf("sessions: bucket %s: %w", Bucket, err)
	}
	v.created = stream.CachedInfo().Created
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	v.cancel = cancel
	w, err := kvstore.WatchAll(wctx, v.nc, kv)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("sessions: watch %s: %w", Bucket, err)
	}
	// Initial values end with a nil entry.
	for loaded := false; !loaded; {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				cancel()
				return nil, errors.New("sessions: watch ended before the initial values")
			}
			if e == nil {
				loaded = true
				continue
			}
			if v.keepGone && e.Operation() != jetstream.KeyValuePut && ValidID(e.Key()) {
				v.gone = append(v.gone, Gone{ID: strings.Clone(e.Key()), Revision: e.Revision(), At: e.Created()})
			}
			v.apply(e)
		case <-ctx.Done():
			cancel()
			kvstore.StopWatch(v.nc, w)
			return nil, ctx.Err()
		}
	}
	v.wg.Add(2)
	go func() {
		defer v.wg.Done()
		v.follow(wctx, js, kv, w)
	}()
	go func() {
		defer v.wg.Done()
		t := time.NewTicker(v.touchEvery)
		defer t.Stop()
		for {
			select {
			case now := <-t.C:
				v.flushTouches()
				v.forgetRemovals(now)
			case <-wctx.Done():
				v.flushTouches()
				return
			}
		}
	}()
	return v, nil
}

// follow applies the watch's updates until ctx ends. A watch can also end on its own:
// nats.go gives up recreating its consumer on an error it does not retry (the bucket's
// stream was deleted, a cluster answered with an unexpected error), and the view would
// then go stale without a word. follow loads the bucket again instead, every 250 ms
// doubling to 5 s until it can. A bucket deleted and created again before nats.go
// noticed does not end the watch (kvstore.Recreated): follow checks for it every
// kvstore.RecheckEvery and loads the bucket again then too.
func (v *View) follow(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, w jetstream.KeyWatcher) {
	for {
		kvstore.Follow(ctx, v.nc, kv, w, v.created, v.log, "the sessions bucket", func(e jetstream.KeyValueEntry) {
			if e != nil {
				v.apply(e)
			}
		})
		if ctx.Err() != nil {
			return
		}
		if w = kvstore.Rewatch(ctx, v.log, "the sessions bucket", func(ctx context.Context) (jetstream.KeyWatcher, error) {
			return v.reload(ctx, js)
		}); w == nil {
			return
		}
	}
}

// reload watches the bucket anew, applies every record it holds and removes from the
// view the sessions removed while no watch ran, and returns the watch. A record the
// view holds at a revision later than the stream's last when reload began (written
// meanwhile by the process, View.Apply) is kept even if the watch has not delivered it
// yet.
func (v *View) reload(ctx context.Context, js jetstream.JetStream) (jetstream.KeyWatcher, error) {
	kv, err := js.KeyValue(ctx, Bucket) // bind only: creating the bucket is the registry's
	if err != nil {
		return nil, err
	}
	stream, err := js.Stream(ctx, "KV_"+Bucket)
	if err != nil {
		return nil, err
	}
	info := stream.CachedInfo()
	last := info.State.LastSeq
	if !info.Created.Equal(v.created) {
		// The bucket was deleted and created again: its revisions started over and
		// none of what the view holds is in it.
		v.mu.Lock()
		for _, id := range v.ids() {
			v.applyRecordLocked(id, nil, math.MaxUint64) // whatever revision it had
		}
		clear(v.removed)
		v.removedQ = nil
		v.created = info.Created
		v.mu.Unlock()
	}
	w, err := kvstore.WatchAll(ctx, v.nc, kv)
	if err != nil {
		return nil, err
	}
	seen := map[string]struct{}{}
	for loaded := false; !loaded; {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("sessions: watch ended before the initial values")
			}
			if e == nil {
				loaded = true
				continue
			}
			seen[strings.Clone(e.Key())] = struct{}{}
			v.apply(e)
		case <-ctx.Done():
			kvstore.StopWatch(v.nc, w)
			return nil, ctx.Err()
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, id := range v.ids() {
		if _, ok := seen[id]; ok {
			continue
		}
		if r, _ := v.lookup(id); r.Revision <= last {
			v.applyRecordLocked(id, nil, last)
		}
	}
	return w, nil
}

// ids returns the ids of the sessions the view holds. The caller holds v.mu.
func (v *View) ids() []string {
	if v.slim {
		return slices.Collect(maps.Keys(v.held))
	}
	return slices.Collect(maps.Keys(v.records))
}

// TakeGoneAtLoad returns, once, the keys whose last entry was a removal marker when
// the view loaded: sessions removed by a delete, a purge or their KV TTL, which no
// watching registry may have seen (docs/architecture.md, "Removed while no registry
// ran"). It also returns the keys of the live sessions removed since, which a
// registry that subscribed after the load missed: a process's shared view loads
// before its registry runs. Only a view started with KeepGone keeps them; once taken,
// it keeps none.
func (v *View) TakeGoneAtLoad() []Gone {
	v.mu.Lock()
	defer v.mu.Unlock()
	g := v.gone
	v.gone, v.goneTaken = nil, true
	return g
}

// Close stops following the bucket and waits for the view's goroutines; pending
// touches are published first.
func (v *View) Close() {
	v.cancel()
	v.wg.Wait()
}

func (v *View) apply(e jetstream.KeyValueEntry) {
	var rec *Record
	if known := v.known.Load(); known != nil && e.Operation() == jetstream.KeyValuePut {
		rec = (*known)(e.Key(), e.Revision())
	}
	if e.Operation() == jetstream.KeyValuePut && rec == nil {
		r, err := Decode(e.Value(), e.Revision())
		if err != nil {
			return // not a record written by the registry: ignore it
		}
		rec = r
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if rec == nil && v.keepGone && !v.goneTaken {
		// After the load (Watch keeps the removal markers it loads): a live
		// session removed now, before TakeGoneAtLoad, may have been removed before
		// the registry subscribed.
		if prev, ok := v.lookup(e.Key()); ok && !prev.Closed() && prev.Revision < e.Revision() {
			v.gone = append(v.gone, Gone{ID: prev.ID, Revision: e.Revision(), At: e.Created(), Record: prev})
		}
	}
	v.applyRecordLocked(e.Key(), rec, e.Revision())
}

// forgetRemovals drops the removals older than removedFor.
func (v *View) forgetRemovals(now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for len(v.removedQ) > 0 && now.Sub(v.removedQ[0].at) > removedFor {
		q := v.removedQ[0]
		if r, ok := v.removed[q.id]; ok && r.at.Equal(q.at) {
			delete(v.removed, q.id)
		}
		v.removedQ = v.removedQ[1:]
	}
}

// applyRecord applies the record of id at revision rev (rec nil: the key was
// removed).
func (v *View) applyRecord(id string, rec *Record, rev uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.applyRecordLocked(id, rec, rev)
}

// applyRecordLocked is applyRecord for a caller holding v.mu.
func (v *View) applyRecordLocked(id string, rec *Record, rev uint64) {
	if rec == nil {
		if held, ok := v.revision(id); ok && held > rev {
			// The watch's removal of a record older than the one held, read
			// ahead of it (fetch, Apply): the later record stands.
			return
		}
		id, now := strings.Clone(id), time.Now()
		v.removed[id] = removal{rev: rev, at: now}
		v.removedQ = append(v.removedQ, removedID{id: id, at: now})
	} else if r, ok := v.removed[id]; ok {
		if rec.Revision <= r.rev {
			return // read before the key was removed
		}
		delete(v.removed, id)
	}
	if v.slim {
		v.applySlim(id, rec)
		return
	}
	prev := v.records[id]
	if rec == nil {
		if prev == nil {
			return
		}
		delete(v.records, id)
	} else {
		if prev != nil && prev.Revision >= rec.Revision {
			return
		}
		rec = rec.Compact()
		// Key the map with the record's own id rather than the entry's key, a slice
		// of the message subject that would otherwise stay in memory.
		if rec.ID == id {
			id = rec.ID
		} else {
			id = strings.Clone(id)
		}
		v.records[id] = rec
	}
	v.notify(Change{ID: id, Record: rec, Prev: prev})
}

// applySlim is apply for a slim view. The caller holds v.mu.
func (v *View) applySlim(id string, rec *Record) {
	h := v.held[id]
	var prev *Record
	if h != nil && len(v.subs) > 0 {
		prev = h.record(id)
	}
	switch {
	case rec == nil:
		if h == nil {
			return
		}
		delete(v.held, id)
	case h == nil:
		id = strings.Clone(id) // own the key: the entry's is a slice of the subject
		v.held[id] = hold(rec)
	default:
		if h.rev >= rec.Revision {
			return
		}
		*h = *hold(rec) // in place: the map keeps its key
	}
	v.notify(Change{ID: id, Record: rec, Prev: prev})
}

func (v *View) notify(ch Change) {
	for _, fn := range v.subs {
		fn(ch)
	}
}

// Apply puts a record the process has just written (rec.Revision is the revision of
// the write) into the view, so that the process's other users of the view see it
// before the watch delivers it; the watch then finds it known. An older revision
// than the view holds changes nothing.
func (v *View) Apply(rec *Record) {
	v.applyRecord(rec.ID, rec, rec.Revision)
}

// fetch reads one record from the bucket and applies it to the view. It reports
// false when the bucket holds no record of id, and an error matching
// wire.ErrUnavailable when the bucket could not be read: the session may then exist.
func (v *View) fetch(id string) (*Record, bool, error) {
	if !ValidID(id) {
		return nil, false, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	// Linearizably: a replica may not have the write yet (pkg/kvstore).
	e, err := v.rd.Read(ctx, id)
	switch {
	case errors.Is(err, kvstore.ErrNotFound):
		return nil, false, nil
	case err != nil:
		return nil, false, errors.Join(wire.Errorf(wire.CodeUnavailable, "the sessions bucket cannot be read"), err)
	case e.Deleted:
		return nil, false, nil
	}
	rec, err := Decode(e.Value, e.Revision)
	if err != nil {
		return nil, false, nil // not a record written by the registry
	}
	v.applyRecord(id, rec, rec.Revision)
	r, ok := v.Get(id)
	return r, ok, nil
}

// Find returns the current record of a session as Get does, reading the bucket
// (linearizably) when the view has none: a session opened a moment ago, whose record
// the watch has not delivered yet, is found — and the view, and those subscribed to
// it, learn it now. The error, matching wire.ErrUnavailable, says the bucket could
// not be read: the session may exist.
func (v *View) Find(id string) (*Record, bool, error) {
	if r, ok := v.Get(id); ok {
		return r, true, nil
	}
	return v.fetch(id)
}

// Absent reports whether the bucket holds no record of session id: its tombstone's
// retention ended, its KV TTL removed it, or it never existed. The bucket is read
// linearizably (pkg/kvstore), so a record written a moment ago that the view has
// not seen yet is never reported gone.
func (v *View) Absent(ctx context.Context, id string) (bool, error) {
	if !ValidID(id) {
		return true, nil
	}
	e, err := v.rd.Read(ctx, id)
	if errors.Is(err, kvstore.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return e.Deleted, nil
}

// Get returns the current record of a session.
func (v *View) Get(id string) (*Record, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.lookup(id)
}

// revision returns the revision of the record of id the view holds. The caller holds
// v.mu.
func (v *View) revision(id string) (uint64, bool) {
	if v.slim {
		h, ok := v.held[id]
		if !ok {
			return 0, false
		}
		return h.rev, true
	}
	r, ok := v.records[id]
	if !ok {
		return 0, false
	}
	return r.Revision, true
}

// lookup returns the record of id. The caller holds v.mu.
func (v *View) lookup(id string) (*Record, bool) {
	if v.slim {
		h, ok := v.held[id]
		if !ok {
			return nil, false
		}
		return h.record(id), true
	}
	r, ok := v.records[id]
	return r, ok
}

// Authenticate returns the record of session id if token is its token and it is not
// closed. Errors match wire.ErrSessionNotFound, wire.ErrSessionClosed or
// wire.ErrInvalidToken. A closed session is session_closed whatever the token, so
// that every request naming it gets that answer; the token is compared in constant
// time.
//
// A session the view has not seen yet — opened a moment ago, its record still on the
// way through the watch — is read from the bucket once before it is declared unknown,
// so a client may use a session as soon as open returns. Likewise a token that does
// not match is checked once more against the stored record: the token may have been
// rotated (change of principal) by a write the watch has not delivered yet, and the
// client holding the new token must not be refused. Either way a request costs at
// most one read, and only when it would otherwise be refused. When that read fails
// the session is not refused for what the view alone holds: the error matches
// wire.ErrUnavailable.
func (v *View) Authenticate(id, token string) (*Record, error) {
	r, ok := v.Get(id)
	if !ok {
		var err error
		if r, ok, err = v.fetch(id); err != nil {
			return nil, err
		} else if !ok {
			return nil, wire.Errorf(wire.CodeSessionNotFound, "no session %q", id)
		}
	}
	if r.Closed() {
		return nil, r.ClosedError()
	}
	err := r.CheckToken(token)
	if err == nil {
		return r, nil
	}
	f, ok, ferr := v.fetch(id)
	if ferr != nil {
		return nil, ferr
	}
	if ok && f.Revision > r.Revision {
		if f.Closed() {
			return nil, f.ClosedError()
		}
		if f.CheckToken(token) == nil {
			return f, nil
		}
	}
	return nil, err
}

// Range calls fn for each record until fn returns false. fn must not call the view's
// Subscribe.
func (v *View) Range(fn func(*Record) bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.slim {
		for id, h := range v.held {
			if !fn(h.record(id)) {
				return
			}
		}
		return
	}
	for _, r := range v.records {
		if !fn(r) {
			return
		}
	}
}

// Len returns the number of records, tombstones included.
func (v *View) Len() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.slim {
		return len(v.held)
	}
	return len(v.records)
}

// Subscribe calls fn for every record the view holds now (Prev nil), then for every
// later change, in revision order per key, until the returned cancel is called. fn
// runs on the view's watch goroutine while the view is locked: it must be quick and
// must not call the view. On a Slim view the records of the replay are slim.
func (v *View) Subscribe(fn func(Change)) (cancel func()) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.slim {
		for id, h := range v.held {
			fn(Change{ID: id, Record: h.record(id)})
		}
	}
	for id, r := range v.records {
		fn(Change{ID: id, Record: r})
	}
	n := v.nextSub
	v.nextSub++
	v.subs[n] = fn
	return func() {
		v.mu.Lock()
		defer v.mu.Unlock()
		delete(v.subs, n)
	}
}

// Touch records activity of session id. Touches are coalesced and published as one
// batch per interval on wire.SubjectSessionActivity, where the registry resets the
// sessions' inactivity timers.
func (v *View) Touch(id string) {
	v.touchMu.Lock()
	v.touched[id] = struct{}{}
	v.touchMu.Unlock()
}

func (v *View) flushTouches() {
	if !v.nc.IsConnected() {
		return // kept for the first batch after the reconnect (PublishActivity)
	}
	v.touchMu.Lock()
	if len(v.touched) == 0 {
		v.touchMu.Unlock()
		return
	}
	ids := make([]string, 0, len(v.touched))
	for id := range v.touched {
		ids = append(ids, id)
	}
	clear(v.touched)
	v.touchMu.Unlock()
	n, err := PublishActivity(v.nc, ids)
	if err == nil {
		return
	}
	// What the server has not received goes with the next batch: lost, it would
	// let the registries close those sessions a timeout after an earlier request.
	v.touchMu.Lock()
	for _, id := range ids[n:] {
		v.touched[id] = struct{}{}
	}
	v.touchMu.Unlock()
}

// activityFlushWait bounds the wait for the server's answer to the ping that
// confirms a publish of activity.
const activityFlushWait = 2 * time.Second

// PublishActivity publishes ids as activity batches on wire.SubjectSessionActivity,
// maxBatch ids at a time, and returns how many of ids the server has received: the
// first ones, all of them unless it failed. The caller keeps the rest, ids[n:], for
// its next batch: activity that never reaches the registries lets them close the
// session a timeout after an earlier request.
//
// A publish that nats.go takes is not one the server has: what it had not yet
// written when the connection failed, or what the network lost then, is gone without
// an error. So the batches count as received once the server has answered a ping
// sent after them (a flush), and none do when it has not. Nothing is published while
// nc is not connected (nats.ErrDisconnected): the reconnect buffer loses what it
// holds when a connection fails again, and the next batch after the reconnect carries
// the ids anyway. A publish can also fail part way — the batch too large for the
// reconnect buffer — and the batches published before it count as received.
func PublishActivity(nc *nats.Conn, ids []string) (n int, err error) {
	if len(ids) == 0 {
		return 0, nil
	}
	if !nc.IsConnected() {
		return 0, fmt.Errorf("sessions: publish activity: %w", nats.ErrDisconnected)
	}
	for n < len(ids) {
		k := min(len(ids)-n, maxBatch)
		data, merr := json.Marshal(wire.SessionActivity{Sessions: ids[n : n+k]})
		if merr != nil {
			err = merr
			break
		}
		if perr := nc.Publish(wire.SubjectSessionActivity, data); perr != nil {
			err = fmt.Errorf("sessions: publish activity: %w", perr)
			break
		}
		n += k
	}
	if n == 0 {
		return 0, err
	}
	if ferr := nc.FlushTimeout(activityFlushWait); ferr != nil {
		return 0, fmt.Errorf("sessions: publish activity: unconfirmed: %w", ferr)
	}
	return n, err
}
