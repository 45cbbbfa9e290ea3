package kvstore_test

import (
	"context"
	"errors"
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
	if _, err := kvstore.CompareAndSet(ctx, js, "c", "k", next, nil, kvstore.AsDelete()); err != nil {
		t.Fatal(err)
	}
	if e, err = kvstore.ReadLast(ctx, js.Conn(), "c", "k"); err != nil || !e.Deleted {
		t.Fatalf("after a delete: got %+v, %v", e, err)
	}
}
