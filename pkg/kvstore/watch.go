package kvstore

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// WatchHeartbeat is how often the server sends an idle watch (Watch) a heartbeat.
// nats.go checks every two heartbeats that something came, and recreates the watch's
// consumer when nothing did: a watch whose consumer was on a node that died resumes
// at most four heartbeats later. Each idle watch costs one small message a heartbeat.
const WatchHeartbeat = time.Second

// Watch watches the keys of kv's bucket that match key (a subject pattern; "" or
// jetstream.AllKeys: every key) and delivers what kv.Watch(ctx, key) delivers: the
// last entry of each key, a nil entry once those initial entries are in, then every
// change. Only the heartbeat differs. kv.Watch's consumer is an R1 ordered consumer
// placed on any replica of the bucket's stream, and nats.go gives it a fixed 5 s
// heartbeat checked every 10 s: when the node holding it dies the watch delivers
// nothing for up to 20 s, and 10 s more for each attempt to recreate the consumer that
// fails. Watch asks for a WatchHeartbeat heartbeat (docs/architecture.md, "Watches
// after the death of a node"). nc is the connection kv was opened on; ctx bounds the creation of
// the consumer only. Stop deletes the consumer and closes Updates, as kv.Watch's does,
// also when nobody reads Updates any more (watcher.Stop).
// The bucket must be neither a mirror nor reached through a JetStream domain or API
// prefix (Roster's are not).
func Watch(ctx context.Context, nc *nats.Conn, kv jetstream.KeyValue, key string) (jetstream.KeyWatcher, error) {
	return watch(ctx, nc, kv, key, WatchHeartbeat)
}

// WatchAll watches every key of kv's bucket (Watch).
func WatchAll(ctx context.Context, nc *nats.Conn, kv jetstream.KeyValue) (jetstream.KeyWatcher, error) {
	return watch(ctx, nc, kv, jetstream.AllKeys, WatchHeartbeat)
}

// watcher is Watch's jetstream.KeyWatcher.
type watcher struct {
	// mu orders the subscription's callback after the consumer's initial pending is
	// known, and the close of updates after the callback's last send.
	mu      sync.Mutex
	updates chan jetstream.KeyValueEntry
	sub     *nats.Subscription
	// stopped is closed by Stop: a delivery blocked on a full updates channel
	// gives up, so that the subscription's goroutine ends and closes updates.
	stopped  chan struct{}
	stopOnce sync.Once
	// The initial values: done once received reaches pending, the messages pending
	// on the consumer when it was created (or a message reports none after it).
	initDone bool
	pending  uint64
	received uint64
}

func (w *watcher) Updates() <-chan jetstream.KeyValueEntry { return w.updates }

// Stop deletes the watch's consumer and closes Updates once the entry being
// delivered, if any, is in or dropped. Unlike nats.go's, a watch stopped while its
// channel is full and nobody reads it lets go of its delivery goroutine (the rest
// of what the channel held is still read before it closes).
func (w *watcher) Stop() error {
	w.stopOnce.Do(func() { close(w.stopped) })
	return w.sub.Unsubscribe()
}

// send delivers e (nil: the marker) unless the watch is stopped; it reports
// whether it did. Called under w.mu.
func (w *watcher) send(e jetstream.KeyValueEntry) bool {
	select {
	case w.updates <- e:
		return true
	case <-w.stopped:
		return false
	}
}

// watch is Watch with the heartbeat given. It follows kv.WatchFiltered of nats.go
// v1.55.0 (jetstream/kv.go) for a single filter and no options, on the same ordered
// push consumer of nats.go's legacy JetStream API: the only API whose ordered consumer
// takes a heartbeat, and which retries recreating it at every check (see
// docs/architecture.md for why not the ordered pull consumer of package jetstream).
func watch(ctx context.Context, nc *nats.Conn, kv jetstream.KeyValue, key string, heartbeat time.Duration) (jetstream.KeyWatcher, error) {
	if key == "" {
		key = jetstream.AllKeys
	}
	bucket := kv.Bucket()
	pre := "$KV." + bucket + "."
	js, err := nc.JetStream()
	if err != nil {
		return nil, fmt.Errorf("kvstore: watch %s: %w", bucket, err)
	}
	// Blocking on a full channel is by design, as in nats.go: the subscription
	// buffers behind it. Until Stop (send).
	w := &watcher{updates: make(chan jetstream.KeyValueEntry, 256), stopped: make(chan struct{})}
	update := func(m *nats.Msg) {
		meta, err := m.Metadata()
		if err != nil || len(m.Subject) <= len(pre) {
			return
		}
		e := &entry{
			bucket:   bucket,
			key:      m.Subject[len(pre):],
			value:    m.Data,
			revision: meta.Sequence.Stream,
			created:  meta.Timestamp,
			delta:    meta.NumPending,
			op:       operation(m.Header),
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if !w.send(e) {
			return
		}
		if !w.initDone {
			w.received++
			if w.received >= w.pending || meta.NumPending == 0 {
				w.initDone = true
				w.send(nil)
			}
		}
	}
	// Held until the initial pending is known: the callback may run as soon as
	// the consumer exists.
	w.mu.Lock()
	defer w.mu.Unlock()
	sub, err := js.Subscribe(pre+key, update,
		nats.BindStream("KV_"+bucket),
		nats.OrderedConsumer(),
		nats.IdleHeartbeat(heartbeat),
		nats.DeliverLastPerSubject(),
		nats.Context(ctx))
	if err != nil {
		return nil, fmt.Errorf("kvstore: watch %s: %w", bucket, err)
	}
	sub.SetClosedHandler(func(string) {
		w.mu.Lock()
		defer w.mu.Unlock()
		close(w.updates)
	})
	// No initial values: the marker now. An error here (not a JetStream
	// subscription) cannot happen for the one just made; nats.go then waits for
	// a message with no pending after it, and so does this.
	if pending, err := sub.InitialConsumerPending(); err == nil {
		if pending == 0 {
			w.initDone = true
			w.updates <- nil
		} else {
			w.pending = pending
		}
	}
	w.sub = sub
	return w, nil
}

// operation returns the operation a watched message's headers give, as nats.go's
// watch reads them: KV-Operation for a delete or purge written by a client, else
// Nats-Marker-Reason for a marker the server placed (a TTL or MaxAge expiry, a
// purge, a removal).
func operation(h nats.Header) jetstream.KeyValueOp {
	if len(h) == 0 {
		return jetstream.KeyValuePut
	}
	if op := h.Get("KV-Operation"); op != "" {
		switch op {
		case "DEL":
			return jetstream.KeyValueDelete
		case "PURGE":
			return jetstream.KeyValuePurge
		}
		return jetstream.KeyValuePut
	}
	switch h.Get(jetstream.MarkerReasonHeader) {
	case "MaxAge", "Purge":
		return jetstream.KeyValuePurge
	case "Remove":
		return jetstream.KeyValueDelete
	}
	return jetstream.KeyValuePut
}

// entry is a jetstream.KeyValueEntry delivered by Watch.
type entry struct {
	bucket   string
	key      string
	value    []byte
	revision uint64
	delta    uint64
	created  time.Time
	op       jetstream.KeyValueOp
}

func (e *entry) Bucket() string                  { return e.bucket }
func (e *entry) Key() string                     { return e.key }
func (e *entry) Value() []byte                   { return e.value }
func (e *entry) Revision() uint64                { return e.revision }
func (e *entry) Created() time.Time              { return e.created }
func (e *entry) Delta() uint64                   { return e.delta }
func (e *entry) Operation() jetstream.KeyValueOp { return e.op }
