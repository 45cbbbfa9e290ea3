package kvstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/kvstore"
	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// TestReads runs the same contract against both read paths: the leader's MSG.GET
// API and the direct get.
func TestReads(t *testing.T) {
	s := natstest.Start(t)
	js := s.JetStream(t)
	ctx := context.Background()
	for name, read := range map[string]func(bucket, key string) (*kvstore.Entry, error){
		"ReadLast":   func(b, k string) (*kvstore.Entry, error) { return kvstore.ReadLast(ctx, js.Conn(), b, k) },
		"ReadDirect": func(b, k string) (*kvstore.Entry, error) { return kvstore.ReadDirect(ctx, js.Conn(), b, k) },
	} {
		t.Run(name, func(t *testing.T) {
			bucket := "b" + name
			kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, LimitMarkerTTL: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := read(bucket, "k"); !errors.Is(err, kvstore.ErrNotFound) {
				t.Fatalf("missing key: got %v, want ErrNotFound", err)
			}
			if _, err := kv.Put(ctx, "k", []byte("one")); err != nil {
				t.Fatal(err)
			}
			rev, err := kv.Put(ctx, "k", []byte("two"))
			if err != nil {
				t.Fatal(err)
			}
			e, err := read(bucket, "k")
			if err != nil || string(e.Value) != "two" || e.Revision != rev || e.Deleted {
				t.Fatalf("got %+v, %v; want two at revision %d", e, err, rev)
			}
			if _, err := kv.Create(ctx, "ttl", []byte("v"), jetstream.KeyTTL(time.Hour)); err != nil {
				t.Fatal(err)
			}
			if e, err := read(bucket, "ttl"); err != nil || e.Header.Get("Nats-TTL") == "" {
				t.Fatalf("got %+v, %v; want the value's headers", e, err)
			}
			if err := kv.Delete(ctx, "k"); err != nil {
				t.Fatal(err)
			}
			if e, err = read(bucket, "k"); err != nil || !e.Deleted {
				t.Fatalf("after delete: got %+v, %v; want a delete marker", e, err)
			}
			if _, err := read(bucket+"x", "k"); err == nil || errors.Is(err, kvstore.ErrNotFound) {
				t.Fatalf("missing bucket: got %v, want an error other than ErrNotFound", err)
			}
		})
	}
}

// TestReaderPicksThePath: direct gets for a one-replica bucket on a standalone
// server. (integration.TestClusterServesSessionsLocksAndMessages checks that a
// Reader in a cluster uses the leader's MSG.GET, even for a one-replica bucket.)
func TestReaderPicksThePath(t *testing.T) {
	s := natstest.Start(t)
	js := s.JetStream(t)
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "r"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := kvstore.NewReader(ctx, js, "r")
	if err != nil {
		t.Fatal(err)
	}
	if !r.Direct() {
		t.Fatal("a one-replica bucket on a standalone server should be read with direct gets")
	}
	rev, err := kv.Put(ctx, "k", []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	if e, err := r.Read(ctx, "k"); err != nil || e.Revision != rev {
		t.Fatalf("got %+v, %v", e, err)
	}
	if _, err := kvstore.NewReader(ctx, js, "absent"); err == nil {
		t.Fatal("a reader of a missing bucket: want an error")
	}
}

func TestCompareAndSet(t *testing.T) {
	s := natstest.Start(t)
	js := s.JetStream(t)
	ctx := context.Background()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "c", LimitMarkerTTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	rev, err := kvstore.CompareAndSet(ctx, js, "c", "k", 0, []byte("one"), kvstore.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kvstore.CompareAndSet(ctx, js, "c", "k", 0, []byte("again")); !errors.Is(err, kvstore.ErrConflict) {
		t.Fatalf("create over an existing key: got %v, want ErrConflict", err)
	}
	if _, err := kvstore.CompareAndSet(ctx, js, "c", "k", rev+5, []byte("two")); !errors.Is(err, kvstore.ErrConflict) {
		t.Fatalf("wrong revision: got %v, want ErrConflict", err)
	}
	next, err := kvstore.CompareAndSet(ctx, js, "c", "k", rev, []byte("two"), kvstore.WithTTL(time.Hour))
	if err != nil || next <= rev {
		t.Fatalf("got %d, %v; want a later revision", next, err)
	}
	e, err := kvstore.ReadLast(ctx, js.Conn(), "c", "k")
	if err != nil || string(e.Value) != "two" || e.Header.Get("Nats-TTL") == "" {
		t.Fatalf("got %+v, %v; want two with its TTL", e, err)
	}
	gone, err := kvstore.CompareAndSet(ctx, js, "c", "k", next, nil, kvstore.AsPurge())
	if err != nil {
		t.Fatal(err)
	}
	if e, err = kvstore.ReadLast(ctx, js.Conn(), "c", "k"); err != nil || !e.Deleted {
		t.Fatalf("after a purge: got %+v, %v", e, err)
	}
	if _, err := kvstore.CompareAndSet(ctx, js, "c", "k", 0, []byte("again")); !errors.Is(err, kvstore.ErrConflict) {
		t.Fatalf("create over a purge marker: got %v, want ErrConflict", err)
	}
	if _, err := kvstore.CompareAndSet(ctx, js, "c", "k", gone, []byte("three")); err != nil {
		t.Fatalf("write after the marker's revision: %v", err)
	}
}

// TestPurgeMarkerWithTTLLeavesNothing: a purge marker written with a TTL expires and
// the key is gone from the stream — the server places no marker of its own for it —
// so that a bucket of short-lived keys does not grow with every key ever written;
// the key can then be created again as new.
func TestPurgeMarkerWithTTLLeavesNothing(t *testing.T) {
	s := natstest.Start(t)
	js := s.JetStream(t)
	ctx := context.Background()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "p", History: 1, LimitMarkerTTL: time.Second}); err != nil {
		t.Fatal(err)
	}
	rev, err := kvstore.CompareAndSet(ctx, js, "p", "k", 0, []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kvstore.CompareAndSet(ctx, js, "p", "k", rev, nil, kvstore.AsPurge(), kvstore.WithTTL(time.Second)); err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, "KV_p")
	if err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		info, err := stream.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs != 0 {
			return fmt.Errorf("the stream holds %d messages, want none once the marker expired", info.State.Msgs)
		}
		return nil
	})
	if _, err := kvstore.ReadLast(ctx, js.Conn(), "p", "k"); !errors.Is(err, kvstore.ErrNotFound) {
		t.Fatalf("after the marker expired: got %v, want ErrNotFound", err)
	}
	again, err := kvstore.CompareAndSet(ctx, js, "p", "k", 0, []byte("again"))
	if err != nil || again <= rev {
		t.Fatalf("create after the marker expired: got %d, %v; want a revision above %d", again, err, rev)
	}
}
