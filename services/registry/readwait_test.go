package registry

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/kvstore"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestReadOfStorageThatNeverAnswersIsBounded: a read repeats rounds that got no
// answer (a bucket without a leader drops requests), and a request's context ends
// only when the service stops. Against storage that takes every read and never
// answers, a read without a deadline of its own must still end, unavailable.
func TestReadOfStorageThatNeverAnswersIsBounded(t *testing.T) {
	srv := natstest.Start(t)
	js := srv.JetStream(t)
	ctx := context.Background()
	const bucket = "silent"
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket})
	if err != nil {
		t.Fatal(err)
	}
	rd, err := kvstore.NewReader(ctx, js, bucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, "KV_"+bucket); err != nil {
		t.Fatal(err)
	}
	// Storage that takes the requests and never answers.
	silent := srv.ServiceConn(t)
	for _, subject := range []string{"$JS.API.DIRECT.GET.KV_" + bucket + ".>", "$JS.API.DIRECT.GET.KV_" + bucket, "$JS.API.STREAM.MSG.GET.KV_" + bucket} {
		if _, err := silent.Subscribe(subject, func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
	}
	if err := silent.Flush(); err != nil {
		t.Fatal(err)
	}
	st := &store{js: js, kv: kv, rd: rd, known: func(string, uint64) *sessions.Record { return nil }, readWait: 2 * time.Second}
	done := make(chan error, 1)
	go func() {
		_, err := st.get(ctx, "0000000000000000000000")
		done <- err
	}()
	select {
	case err := <-done:
		// Unavailable, as the session view of the lock and messaging services
		// answers a read of the same bucket that gets no answer: timeout is for
		// the time a caller allowed, and this caller allowed none.
		if got := wire.CodeOf(err); got != wire.CodeUnavailable {
			t.Fatalf("got %s (%v), want unavailable", got, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the read still waits 30 s later")
	}
}
