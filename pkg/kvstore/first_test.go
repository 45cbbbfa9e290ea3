package kvstore_test

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/kvstore"
	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// TestStreamConfigIsNatsGos creates buckets of several configurations through
// nats.go's CreateKeyValue and through CreateOrUpdateKeyValueFrom: the server must
// hold the same stream configuration for both, but for the names and the first
// sequence. A nats.go upgrade that changes how a bucket's stream is configured
// fails here.
func TestStreamConfigIsNatsGos(t *testing.T) {
	s := natstest.Start(t)
	js := s.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, cfg := range []jetstream.KeyValueConfig{
		{},
		{Description: "d", History: 5, TTL: 30 * time.Second, MaxBytes: 1 << 20, MaxValueSize: 1024, Storage: jetstream.FileStorage},
		{TTL: time.Hour, Compression: true, Metadata: map[string]string{"owner": "roster"}},
		{History: 1, Storage: jetstream.FileStorage, Replicas: 1, LimitMarkerTTL: time.Minute,
			RePublish: &jetstream.RePublish{Source: ">", Destination: fmt.Sprintf("repub%d.>", 3)}},
	} {
		theirs, ours := cfg, cfg
		theirs.Bucket, ours.Bucket = fmt.Sprintf("theirs%d", i), fmt.Sprintf("ours%d", i)
		if _, err := js.CreateKeyValue(ctx, theirs); err != nil {
			t.Fatal(err)
		}
		if _, err := kvstore.CreateOrUpdateKeyValueFrom(ctx, js, ours, 1000); err != nil {
			t.Fatal(err)
		}
		want, got := streamConfig(t, js, theirs.Bucket), streamConfig(t, js, ours.Bucket)
		if got.FirstSeq != 1000 {
			t.Errorf("config %d: first sequence %d, want 1000", i, got.FirstSeq)
		}
		got.Name, got.Subjects, got.FirstSeq = want.Name, want.Subjects, want.FirstSeq
		if !reflect.DeepEqual(got, want) {
			t.Errorf("config %d:\n got %+v\nwant %+v", i, got, want)
		}
	}
}

func streamConfig(t testing.TB, js jetstream.JetStream, bucket string) jetstream.StreamConfig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().Config
}

// put writes key and returns its revision, failing the test on error.
func put(t testing.TB, kv jetstream.KeyValue, key string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rev, err := kv.Put(ctx, key, []byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// wantRecords fails the test unless bucket holds exactly the keys at the revisions
// of want.
func wantRecords(t testing.TB, js jetstream.JetStream, bucket string, want map[string]uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for key, rev := range want {
		e, err := kvstore.ReadLast(ctx, js.Conn(), bucket, key)
		if err != nil || e.Deleted || e.Revision != rev {
			t.Fatalf("%s: got %+v, %v; want revision %d", key, e, err, rev)
		}
	}
}

// TestCreateFromFirst: a bucket created from a first sequence starts its revisions
// there; opened again from another first sequence (another instance, a later start)
// it keeps its own, its configuration is updated, and its records and revisions
// survive a restart of the server.
func TestCreateFromFirst(t *testing.T) {
	dir := t.TempDir()
	s := natstest.Start(t, natstest.WithDataDir(dir))
	js := s.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := jetstream.KeyValueConfig{Bucket: "fenced", Storage: jetstream.FileStorage, LimitMarkerTTL: time.Minute}
	kv, err := kvstore.CreateOrUpdateKeyValueFrom(ctx, js, cfg, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	if rev := put(t, kv, "a"); rev != 1_000_000 {
		t.Fatalf("first revision %d, want 1000000", rev)
	}
	cfg.Description = "updated"
	if kv, err = kvstore.CreateOrUpdateKeyValueFrom(ctx, js, cfg, 2_000_000); err != nil {
		t.Fatal(err)
	}
	if got := streamConfig(t, js, "fenced"); got.FirstSeq != 1_000_000 || got.Description != "updated" {
		t.Fatalf("after a second open: first sequence %d, description %q; want 1000000, updated", got.FirstSeq, got.Description)
	}
	if rev := put(t, kv, "b"); rev != 1_000_001 {
		t.Fatalf("revision %d after the second open, want 1000001", rev)
	}

	s.Stop()
	s = natstest.Start(t, natstest.WithDataDir(dir))
	js = s.JetStream(t)
	wantRecords(t, js, "fenced", map[string]uint64{"a": 1_000_000, "b": 1_000_001})
	if kv, err = kvstore.CreateOrUpdateKeyValueFrom(ctx, js, cfg, 3_000_000); err != nil {
		t.Fatal(err)
	}
	if rev := put(t, kv, "c"); rev != 1_000_002 {
		t.Fatalf("revision %d after a restart, want 1000002", rev)
	}
}

// TestExistingBucketKeepsItsSequence opens from a first sequence a bucket created
// without one (by nats.go, as Roster created its buckets before): its records,
// revisions and first sequence stay as they were, across a restart of the server too.
// Had the update given the stream the first sequence, the server, reopening the
// stream, would have purged every record below it.
func TestExistingBucketKeepsItsSequence(t *testing.T) {
	dir := t.TempDir()
	s := natstest.Start(t, natstest.WithDataDir(dir))
	js := s.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := jetstream.KeyValueConfig{Bucket: "old", Storage: jetstream.FileStorage}
	kv, err := js.CreateKeyValue(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"a": put(t, kv, "a"), "b": put(t, kv, "b")}
	cfg.LimitMarkerTTL = time.Minute // a change of configuration, as a new version may bring
	if _, err := kvstore.CreateOrUpdateKeyValueFrom(ctx, js, cfg, 1_000_000); err != nil {
		t.Fatal(err)
	}
	if got := streamConfig(t, js, "old"); got.FirstSeq != 0 || !got.AllowMsgTTL {
		t.Fatalf("first sequence %d, message TTLs %v; want 0 and the update applied", got.FirstSeq, got.AllowMsgTTL)
	}
	wantRecords(t, js, "old", want)

	s.Stop()
	s = natstest.Start(t, natstest.WithDataDir(dir))
	js = s.JetStream(t)
	wantRecords(t, js, "old", want)
	if kv, err = kvstore.CreateOrUpdateKeyValueFrom(ctx, js, cfg, 2_000_000); err != nil {
		t.Fatal(err)
	}
	if rev := put(t, kv, "c"); rev != want["b"]+1 {
		t.Fatalf("revision %d after a restart, want %d", rev, want["b"]+1)
	}
}

// TestConcurrentCreateFromFirst has several clients create the same bucket at once,
// each from its own first sequence, on a standalone server and on a cluster (a
// client on each node): all succeed, on one bucket starting at one of their first
// sequences. Then nats.go's CreateOrUpdateKeyValue — what a Roster before first
// sequences does at start — updates it: the server accepts the configuration
// without a first sequence, and the revisions go on from where they were; in the
// cluster, across a change of the stream's leader too.
func TestConcurrentCreateFromFirst(t *testing.T) {
	for _, tc := range []struct {
		name     string
		start    func(t *testing.T) []*natstest.Server
		replicas int
	}{
		{"standalone", func(t *testing.T) []*natstest.Server {
			s := natstest.Start(t)
			return []*natstest.Server{s, s, s}
		}, 1},
		{"cluster", func(t *testing.T) []*natstest.Server { return natstest.StartCluster(t, 3) }, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := tc.start(t)
			cfg := jetstream.KeyValueConfig{Bucket: "fenced", Storage: jetstream.FileStorage, Replicas: tc.replicas, LimitMarkerTTL: time.Minute}
			firsts := []uint64{1_000_000, 2_000_000, 3_000_000}
			kvs := make([]jetstream.KeyValue, len(nodes))
			errs := make([]error, len(nodes))
			var wg sync.WaitGroup
			for i, n := range nodes {
				js := n.JetStream(t)
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					defer cancel()
					kvs[i], errs[i] = kvstore.CreateOrUpdateKeyValueFrom(ctx, js, cfg, firsts[i])
				}()
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("client %d: %v", i, err)
				}
			}
			js := nodes[0].JetStream(t)
			first := streamConfig(t, js, "fenced").FirstSeq
			if !slices.Contains(firsts, first) {
				t.Fatalf("the bucket starts at %d, want one of %v", first, firsts)
			}
			want := map[string]uint64{}
			for i, kv := range kvs {
				key := fmt.Sprint("k", i)
				want[key] = put(t, kv, key)
				if want[key] != first+uint64(i) {
					t.Fatalf("client %d wrote at revision %d, want %d: not the one bucket", i, want[key], first+uint64(i))
				}
			}

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			kv, err := kvstore.CreateOrUpdateKeyValue(ctx, js, cfg)
			if err != nil {
				t.Fatalf("update without a first sequence: %v", err)
			}
			wantRecords(t, js, "fenced", want)
			last := put(t, kv, "after")
			if last != first+uint64(len(kvs)) {
				t.Fatalf("revision %d after the update without a first sequence, want %d", last, first+uint64(len(kvs)))
			}
			if tc.replicas == 1 {
				return
			}
			// A new leader goes on from the replicated sequence.
			old := leader(js, "KV_fenced")
			if err := natstest.StepDown(ctx, js.Conn(), "KV_fenced"); err != nil {
				t.Fatal(err)
			}
			natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
				if now := leader(js, "KV_fenced"); now == "" || now == old {
					return fmt.Errorf("leader %q, want another than %q", now, old)
				}
				return nil
			})
			if rev := put(t, kv, "failover"); rev != last+1 {
				t.Fatalf("revision %d after a change of leader, want %d", rev, last+1)
			}
		})
	}
}

// leader returns the name of stream's leader ("" while it has none, or does not
// answer within a second).
func leader(js jetstream.JetStream, stream string) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil || st.CachedInfo().Cluster == nil {
		return ""
	}
	return st.CachedInfo().Cluster.Leader
}
