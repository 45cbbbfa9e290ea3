// Package kvstore reads and writes JetStream KV records linearizably: reads that see
// every acknowledged write, and compare-and-set writes that keep a per-key TTL.
//
// A KV bucket allows direct gets, which any replica of its stream answers — and a
// replica may lag the leader. In a cluster, kv.Get can therefore return a record
// from before a write that has already been acknowledged: a session already closed,
// a token already rotated, a lock already released. Compare-and-set writes are safe
// regardless (the leader checks the expected revision), but an answer built on a
// read alone is not. ReadLast asks the stream's MSG.GET API, which the leader alone
// answers. On a standalone server (no cluster) a bucket has one replica and can be
// given no other: that server stores a write before acknowledging it and answers
// direct gets inline, several times cheaper than the MSG.GET API, which goes through
// the server's JetStream API queue. A Reader picks the direct get there (ReadDirect).
// In a cluster it never does, even for a one-replica bucket: replicas can be added
// to a stream at any time, and a new replica starts answering direct gets before it
// has caught up.
//
// CreateOrUpdateKeyValue and CreateOrUpdateStream create the buckets and streams
// the services own, in attempts short enough that a request nats-server leaves
// unanswered (two instances creating the same stream at once) costs seconds, not a
// start deadline. CreateOrUpdateKeyValueFrom creates a bucket whose revisions start
// at a given sequence, for revisions that must not start over when a bucket is lost
// and created again (the lock service's fencing tokens).
package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrNotFound reports that the key has no message.
var ErrNotFound = errors.New("kvstore: not found")

// Entry is the latest message of a key.
type Entry struct {
	// Revision is the message's stream sequence: the key's revision.
	Revision uint64
	Header   nats.Header
	Value    []byte
	// Deleted is true for a delete or purge marker (or a TTL expiry marker).
	Deleted bool
}

// ReadLast returns the latest message of key in bucket, from the stream's leader.
func ReadLast(ctx context.Context, nc *nats.Conn, bucket, key string) (*Entry, error) {
	req, err := json.Marshal(map[string]string{"last_by_subj": "$KV." + bucket + "." + key})
	if err != nil {
		return nil, err
	}
	reply, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_"+bucket, req)
	if err != nil {
		return nil, fmt.Errorf("kvstore: read %s/%s: %w", bucket, key, err)
	}
	var resp struct {
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     uint16 `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
		Message *struct {
			Sequence uint64 `json:"seq"`
			Header   []byte `json:"hdrs"`
			Data     []byte `json:"data"`
		} `json:"message"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return nil, fmt.Errorf("kvstore: read %s/%s: %w", bucket, key, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == uint16(jetstream.JSErrCodeMessageNotFound):
		return nil, ErrNotFound
	case resp.Error != nil:
		return nil, fmt.Errorf("kvstore: read %s/%s: %s (%d)", bucket, key, resp.Error.Description, resp.Error.ErrCode)
	case resp.Message == nil:
		return nil, fmt.Errorf("kvstore: read %s/%s: empty reply", bucket, key)
	}
	e := &Entry{Revision: resp.Message.Sequence, Value: resp.Message.Data}
	if len(resp.Message.Header) > 0 {
		if e.Header, err = nats.DecodeHeadersMsg(resp.Message.Header); err != nil {
			return nil, fmt.Errorf("kvstore: read %s/%s: %w", bucket, key, err)
		}
	}
	e.Deleted = isMarker(e.Header)
	return e, nil
}

// isMarker reports whether a message's headers make it a delete, purge or TTL
// marker rather than a value.
func isMarker(h nats.Header) bool {
	return h.Get("KV-Operation") != "" || h.Get(jetstream.MarkerReasonHeader) != ""
}

// ReadDirect returns the latest message of key in bucket through the direct get
// API. It sees every acknowledged write only when the bucket's stream has one
// replica, on a standalone server, and no mirror answers direct gets for it (see
// Reader).
func ReadDirect(ctx context.Context, nc *nats.Conn, bucket, key string) (*Entry, error) {
	reply, err := nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET.KV_"+bucket+".$KV."+bucket+"."+key, nil)
	if err != nil {
		return nil, fmt.Errorf("kvstore: read %s/%s: %w", bucket, key, err)
	}
	switch status := reply.Header.Get("Status"); status {
	case "":
	case "404":
		return nil, ErrNotFound
	default:
		return nil, fmt.Errorf("kvstore: read %s/%s: %s %s", bucket, key, status, reply.Header.Get("Description"))
	}
	seq, err := strconv.ParseUint(reply.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("kvstore: read %s/%s: reply without a sequence: %w", bucket, key, err)
	}
	e := &Entry{Revision: seq, Header: reply.Header, Value: reply.Data}
	e.Deleted = isMarker(e.Header)
	return e, nil
}

// Reader reads the keys of one bucket linearizably by the cheapest path the
// deployment allows: direct gets when the stream has one replica on a standalone
// server — neither the server the connection is on nor the one holding the stream
// is part of a cluster (a leaf node, say, without a cluster of its own, reaching a
// clustered hub's JetStream, does not qualify) — the leader's MSG.GET API otherwise.
// The choice is made when the Reader is made, and a connection that later finds
// itself on a clustered server (a migration) falls back to MSG.GET.
type Reader struct {
	nc     *nats.Conn
	bucket string
	direct bool
}

// NewReader returns a Reader for bucket.
func NewReader(ctx context.Context, js jetstream.JetStream, bucket string) (*Reader, error) {
	st, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return nil, fmt.Errorf("kvstore: bucket %s: %w", bucket, err)
	}
	info := st.CachedInfo()
	cfg := info.Config
	standalone := js.Conn().ConnectedClusterName() == "" && (info.Cluster == nil || info.Cluster.Name == "")
	return &Reader{nc: js.Conn(), bucket: bucket, direct: standalone && cfg.Replicas <= 1 && cfg.AllowDirect && cfg.Mirror == nil}, nil
}

// Direct reports whether the Reader uses direct gets (while its connection stays on
// a server without a cluster).
func (r *Reader) Direct() bool { return r.direct }

// Read returns the latest message of key; ErrNotFound when it has none.
func (r *Reader) Read(ctx context.Context, key string) (*Entry, error) {
	if r.direct && r.nc.ConnectedClusterName() == "" {
		return ReadDirect(ctx, r.nc, r.bucket, key)
	}
	return ReadLast(ctx, r.nc, r.bucket, key)
}

// ErrConflict reports that a compare-and-set found the key at another revision.
var ErrConflict = errors.New("kvstore: the key changed concurrently")

// WriteOption adjusts a compare-and-set write.
type WriteOption func(*writeOptions)

type writeOptions struct {
	ttl   time.Duration
	purge bool
}

// WithTTL gives the written value a per-key TTL (the bucket needs LimitMarkerTTL).
// kv.Update would drop a key's TTL: a TTL kept across updates needs this write.
func WithTTL(ttl time.Duration) WriteOption { return func(o *writeOptions) { o.ttl = ttl } }

// AsPurge writes a purge marker instead of a value. With WithTTL the marker expires
// and the key is gone without a trace: the server places no marker of its own when
// a purge marker expires, as it does for an expiring value or delete marker.
func AsPurge() WriteOption { return func(o *writeOptions) { o.purge = true } }

// CompareAndSet writes value to key in bucket if the key is still at revision rev (0:
// the key has no value), and returns the new revision; ErrConflict when another write
// came first. The stream's leader checks the revision, so the write is safe whatever
// the reads it was built on.
func CompareAndSet(ctx context.Context, js jetstream.JetStream, bucket, key string, rev uint64, value []byte, opts ...WriteOption) (uint64, error) {
	var o writeOptions
	for _, opt := range opts {
		opt(&o)
	}
	m := &nats.Msg{Subject: "$KV." + bucket + "." + key, Header: nats.Header{}, Data: value}
	if o.purge {
		m.Header.Set("KV-Operation", "PURGE")
		m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
		m.Data = nil
	}
	popts := []jetstream.PublishOpt{jetstream.WithExpectLastSequencePerSubject(rev)}
	if o.ttl > 0 {
		popts = append(popts, jetstream.WithMsgTTL(o.ttl))
	}
	ack, err := js.PublishMsg(ctx, m, popts...)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			return 0, ErrConflict
		}
		return 0, fmt.Errorf("kvstore: write %s/%s: %w", bucket, key, err)
	}
	return ack.Sequence, nil
}
