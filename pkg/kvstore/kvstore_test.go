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

func TestReadLast(t *testing.T) {
	s := natstest.Start(t)
	js := s.JetStream(t)
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kvstore.ReadLast(ctx, js.Conn(), "b", "k"); !errors.Is(err, kvstore.ErrNotFound) {
		t.Fatalf("missing key: got %v, want ErrNotFound", err)
	}
	kv.Put(ctx, "k", []byte("one"))
	rev, _ := kv.Put(ctx, "k", []byte("two"))
	e, err := kvstore.ReadLast(ctx, js.Conn(), "b", "k")
	if err != nil || string(e.Value) != "two" || e.Revision != rev || e.Deleted {
		t.Fatalf("got %+v, %v; want two at revision %d", e, err, rev)
	}
	if err := kv.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if e, err = kvstore.ReadLast(ctx, js.Conn(), "b", "k"); err != nil || !e.Deleted {
		t.Fatalf("after delete: got %+v, %v; want a delete marker", e, err)
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
