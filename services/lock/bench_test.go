package lock

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// Benchmarks run on the embedded server with fsync on every write, each operation
// beside its floor — raw KV writes — measured in the same run on the same server.

// percentile returns the p-th percentile of samples (sorted in place).
func percentile(samples []time.Duration, p float64) time.Duration {
	slices.Sort(samples)
	if len(samples) == 0 {
		return 0
	}
	return samples[min(len(samples)-1, int(float64(len(samples))*p))]
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// floorCreateDelete measures n raw KV Create + Delete pairs (the least one
// acquire+release can cost: one write to take, one to give back).
func floorCreateDelete(b *testing.B, js jetstream.JetStream, n int) []time.Duration {
	b.Helper()
	ctx := context.Background()
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "bench_floor", History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	samples := make([]time.Duration, 0, n)
	for i := range n {
		key := fmt.Sprintf("k%d", i) // a fresh key: Create on a deleted one costs two more round trips
		start := time.Now()
		if _, err := kv.Create(ctx, key, []byte(`{"holders":[{"session":"s"}]}`)); err != nil {
			b.Fatal(err)
		}
		if err := kv.Delete(ctx, key); err != nil {
			b.Fatal(err)
		}
		samples = append(samples, time.Since(start))
	}
	return samples
}

// BenchmarkFloorKVCreateDelete is the floor on its own.
func BenchmarkFloorKVCreateDelete(b *testing.B) {
	e := newEnv(b)
	b.ResetTimer()
	samples := floorCreateDelete(b, e.js, b.N)
	b.ReportMetric(us(percentile(samples, 0.5)), "p50-µs")
	b.ReportMetric(us(percentile(samples, 0.99)), "p99-µs")
}

// BenchmarkAcquireRelease: one session acquires and releases one lock, through
// the service import as a client does, beside the floor (a raw KV Create + Delete
// of a fresh key), two bare service hops, and two hops to a responder doing the
// same two writes. All are interleaved in blocks of
// 50, so that all see the same disk and CPU: fsync times on a shared disk drift by
// tens of percent within a run.
func BenchmarkAcquireRelease(b *testing.B) {
	e := newEnv(b)
	e.startLock(b, Config{})
	c := e.open(b, "admin", 0)
	ctx := context.Background()
	for range 50 { // warm up
		if _, err := c.acquire(ctx, &wire.LockAcquireRequest{Name: "bench"}); err != nil {
			b.Fatal(err)
		}
		if err := c.release(ctx, "bench", 0); err != nil {
			b.Fatal(err)
		}
	}
	kv, err := e.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "bench_floor", History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	// The least a service can do for the pair: two requests through the import to a
	// plain responder on the services account, one doing a KV Create, the other the
	// Delete.
	svc := e.srv.ServiceConn(b)
	var rkey string
	var rn int
	natstest.Responder(b, svc, wire.LockPrefix+".bench-floor", func(m *nats.Msg) error {
		if string(m.Data) == "create" {
			rn++
			rkey = fmt.Sprintf("r%d", rn)
			_, err := kv.Create(ctx, rkey, []byte(`{"holders":[{"session":"s"}]}`))
			return err
		}
		return kv.Delete(ctx, rkey)
	})
	var floor, hops, responder, samples []time.Duration
	timed := func(into *[]time.Duration, fn func() error) {
		start := time.Now()
		if err := fn(); err != nil {
			b.Fatal(err)
		}
		*into = append(*into, time.Since(start))
	}
	const block = 50
	b.ResetTimer()
	for done := 0; done < b.N; done += block {
		m := min(block, b.N-done)
		b.StopTimer()
		for i := range m {
			// A fresh key: Create on a deleted one costs two more round trips.
			key := fmt.Sprintf("k%d", done+i)
			timed(&floor, func() error {
				if _, err := kv.Create(ctx, key, []byte(`{"holders":[{"session":"s"}]}`)); err != nil {
					return err
				}
				return kv.Delete(ctx, key)
			})
			// The service hop: a request through the import to the lock service and
			// back, doing nothing (health), twice — acquire and release are one each.
			timed(&hops, func() error {
				for range 2 {
					if _, err := c.rawCall(ctx, wire.LockPrefix+".health", nil); err != nil {
						return err
					}
				}
				return nil
			})
			timed(&responder, func() error {
				for _, op := range []string{"create", "delete"} {
					if _, err := c.rawCall(ctx, wire.LockPrefix+".bench-floor", []byte(op)); err != nil {
						return err
					}
				}
				return nil
			})
		}
		b.StartTimer()
		for range m {
			timed(&samples, func() error {
				if _, err := c.acquire(ctx, &wire.LockAcquireRequest{Name: "bench"}); err != nil {
					return err
				}
				return c.release(ctx, "bench", 0)
			})
		}
	}
	b.StopTimer()
	p50, p99 := percentile(samples, 0.5), percentile(samples, 0.99)
	f50, f99 := percentile(floor, 0.5), percentile(floor, 0.99)
	b.ReportMetric(us(p50), "p50-µs")
	b.ReportMetric(us(p99), "p99-µs")
	b.ReportMetric(us(f50), "floor-p50-µs")
	b.ReportMetric(us(f99), "floor-p99-µs")
	b.ReportMetric(float64(p50)/float64(f50), "x-floor-p50")
	b.ReportMetric(us(percentile(hops, 0.5)), "2hops-p50-µs")
	r50 := percentile(responder, 0.5)
	b.ReportMetric(us(r50), "responder-p50-µs")
	b.ReportMetric(float64(p50)/float64(r50), "x-responder-p50")
}

// BenchmarkContention8: 8 sessions loop acquire (waiting) + release on one lock;
// grants per second beside the floor's serial Create+Delete pairs per second.
func BenchmarkContention8(b *testing.B) {
	e := newEnv(b)
	in := e.startLock(b, Config{})
	const sessions = 8
	var cs []*client
	for i := range sessions {
		cs = append(cs, e.openOn(b, e.srv.ClientConn(b), fmt.Sprintf("admin-%d", i), 0))
	}
	floor := floorCreateDelete(b, e.js, 500)
	var total time.Duration
	for _, d := range floor {
		total += d
	}
	floorRate := float64(len(floor)) / total.Seconds()

	var mu sync.Mutex
	remaining := b.N
	take := func() bool {
		mu.Lock()
		defer mu.Unlock()
		remaining--
		return remaining >= 0
	}
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for take() {
				if _, err := c.acquire(ctx, &wire.LockAcquireRequest{Name: "hot", WaitMS: 30000}); err != nil {
					b.Error(err)
					return
				}
				if err := c.release(ctx, "hot", 0); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	rate := float64(b.N) / elapsed.Seconds()
	b.ReportMetric(rate, "grants/s")
	b.ReportMetric(floorRate, "floor-pairs/s")
	b.ReportMetric(rate/floorRate, "x-floor")
	b.ReportMetric(float64(in.Stats().Conflicts)/float64(b.N), "cas-conflicts/grant")
}

// Benchmark1000Waiters: 1,000 sessions queue on a held lock; each releases as soon
// as it is granted. Grants must follow the queue order.
func Benchmark1000Waiters(b *testing.B) {
	e := newEnv(b)
	e.startLock(b, Config{})
	const n = 1000
	holder := e.open(b, "admin", 0)
	conns := []*nats.Conn{e.srv.ClientConn(b), e.srv.ClientConn(b), e.srv.ClientConn(b), e.srv.ClientConn(b)}
	waiters := make([]*client, n)
	for i := range n {
		waiters[i] = e.openOn(b, conns[i%len(conns)], fmt.Sprintf("admin-%d", i), 0)
	}
	b.ResetTimer()
	for iter := range b.N {
		b.StopTimer()
		holder.mustAcquire(b, &wire.LockAcquireRequest{Name: "line"})
		type grant struct {
			session string
			token   uint64
		}
		grants := make(chan grant, n)
		var wg sync.WaitGroup
		for i, c := range waiters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 55*time.Second)
				defer cancel()
				l, err := c.acquire(ctx, &wire.LockAcquireRequest{Name: "line", WaitMS: 50000, RequestID: fmt.Sprintf("w%d-%d", iter, i)})
				if err != nil {
					b.Error(err)
					return
				}
				grants <- grant{c.id, l.Token}
				if err := c.release(ctx, "line", l.Token); err != nil {
					b.Error(err)
				}
			}()
		}
		e.waitQueued(b, "line", n)
		queue := e.waiting(b, "line") // request ids in queue order
		b.StartTimer()
		start := time.Now()
		holder.mustRelease(b, "line")
		wg.Wait()
		elapsed := time.Since(start)
		b.StopTimer()
		close(grants)
		var got []grant
		for g := range grants {
			got = append(got, g)
		}
		slices.SortFunc(got, func(x, y grant) int { return int(x.token) - int(y.token) })
		byID := map[string]string{}
		for i, c := range waiters {
			byID[fmt.Sprintf("w%d-%d", iter, i)] = c.id
		}
		for i, g := range got {
			if want := byID[queue[i]]; g.session != want {
				b.Fatalf("grant %d went to %s, want %s (queue order)", i, g.session, want)
			}
		}
		b.ReportMetric(float64(n)/elapsed.Seconds(), "handoffs/s")
		b.ReportMetric(us(elapsed/n), "µs/handoff")
		b.StartTimer()
	}
}
