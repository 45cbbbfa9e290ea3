package kvstore_test

import (
	"context"
	"errors"
	"testing"

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
