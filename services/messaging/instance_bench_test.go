package messaging

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/seed-3c836eab/roster/pkg/filter"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// BenchmarkInstanceMemoryPerSession measures what a messaging instance holds per live
// session (goal: at most 1 KiB for 12 short properties): the sessions.View it follows
// the bucket with and its index together, as New builds them from a real sessions
// bucket of 100,000 records on the embedded server (records shaped as the registry
// writes them, with benchProps's properties).
//
// The embedded server runs in the same process, and reading the stream fills its
// caches, so the heap grown by New (load_B/session) counts some of the server's
// memory too. The instance's own cost is what the heap shrinks by when the instance
// stops and is dropped, right after: B/session.
func BenchmarkInstanceMemoryPerSession(b *testing.B) {
	srv := natstest.Start(b)
	ctx := context.Background()
	js := srv.JetStream(b)
	kv, err := sessions.EnsureBucket(ctx, js)
	if err != nil {
		b.Fatal(err)
	}
	fillBucket(b, js, kv, benchSessions)
	nc := srv.ServiceConn(b)
	var perSession, atLoad float64
	for b.Loop() {
		before := heapInUse()
		start := time.Now()
		s, err := New(nc, Config{}, testPolicy(), noop.NewTracerProvider(), natstest.Logger(b))
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms/load")
		if n := s.ix.len(); n != benchSessions {
			b.Fatalf("the index holds %d sessions, want %d", n, benchSessions)
		}
		loaded := heapInUse()
		stop, cancel := context.WithCancel(ctx)
		cancel()
		if err := s.Run(stop); err != nil {
			b.Fatal(err)
		}
		s = nil
		released := heapInUse()
		atLoad = (float64(loaded) - float64(before)) / benchSessions
		perSession = (float64(loaded) - float64(released)) / benchSessions
	}
	b.ReportMetric(perSession, "B/session")
	b.ReportMetric(atLoad, "load_B/session")
}

// fillBucket stores n session records with benchProps's properties.
func fillBucket(tb testing.TB, js jetstream.JetStream, kv jetstream.KeyValue, n int) {
	tb.Helper()
	ctx := context.Background()
	st, err := kv.Status(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	subject := "$KV." + st.Bucket() + "."
	r := rand.New(rand.NewPCG(1, 1))
	now := time.Now().UTC()
	for i := range n {
		id, props := benchProps(r, i)
		roles, _ := filter.StringToRoles(props[sessions.PropRoles])
		rec := &sessions.Record{ID: id, Principal: props[sessions.PropPrincipal], Roles: roles,
			Fixed: map[string]string{}, User: map[string]string{}, State: wire.StateActive,
			TokenHash: sessions.HashToken("token" + id), Connection: "roster-0/" + strconv.Itoa(i),
			DeliverKey: "UDELIVERYKEY" + strconv.Itoa(i%1000), TimeoutMS: 30_000,
			StartTime: now, LastActivity: now, UpdatedAt: now, EventSeq: 1}
		for k, v := range props {
			if k[0] == '$' {
				rec.Fixed[k] = v
			} else {
				rec.User[k] = v
			}
		}
		data, err := sessions.Encode(rec)
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := js.PublishAsync(subject+id, data); err != nil {
			tb.Fatal(err)
		}
		if i%1000 == 999 || i == n-1 {
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				tb.Fatal("the bucket was not filled within a minute")
			}
		}
	}
	if st, err = kv.Status(ctx); err != nil || st.Values() != uint64(n) {
		tb.Fatalf("the bucket holds %v values (%v), want %d", st, err, n)
	}
}
