package registry

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// Benchmarks run against the embedded server as roster serve runs it: JetStream
// fsyncs on every write. Each operation is measured with 1 client (p50/p99 latency)
// and with 8 and 64 concurrent clients (throughput); the BenchmarkFloor* functions
// measure raw KV Create (with a TTL), Update and Get on the same server over TCP, the
// floor each registry operation is compared with:
//
//	open ~ Create, get ~ Get, keepalive ~ Get, update ~ Update, close ~ Update.
//
// BenchmarkFloorRoundTrip measures the request path alone (client → import →
// service → reply, no storage), the second floor.
//
// Run with: go test -run '^$' -bench 'Open|Get|Keepalive|Update|Close|Floor' -benchtime 1000x ./services/registry/
// (BenchmarkIdleSessions takes 3 s per iteration: run it with -benchtime 1x.)

var concurrencies = []int{1, 8, 64}

type benchEnv struct {
	srv *natstest.Server
	nc  *nats.Conn // a client connection over TCP
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	srv := natstest.Start(b)
	startAuth(b, srv)
	startRegistry(b, srv, Config{Limits: Limits{SessionsPerPrincipal: 1 << 30}, MaxConcurrent: 512})
	return &benchEnv{srv: srv, nc: srv.ClientConn(b)}
}

// measure runs op b.N times spread over conc goroutines, and reports the latency
// percentiles and the throughput.
func measure(b *testing.B, conc int, op func(worker, i int) error) {
	b.Helper()
	lat := make([][]time.Duration, conc)
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				t0 := time.Now()
				if err := op(w, i); err != nil {
					failed.Store(err)
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		return
	}
	pct := func(p float64) float64 { return float64(all[int(float64(len(all)-1)*p)].Microseconds()) }
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	b.ReportMetric(0, "ns/op") // latency percentiles say more than the mean
}

func forEachConcurrency(b *testing.B, fn func(b *testing.B, conc int)) {
	for _, c := range concurrencies {
		b.Run(fmt.Sprintf("clients=%d", c), func(b *testing.B) { fn(b, c) })
	}
}

func (e *benchEnv) openN(b *testing.B, n int) []*client {
	b.Helper()
	out := make([]*client, n)
	for i := range out {
		out[i], _ = open(b, e.nc, &wire.SessionOpenRequest{TimeoutMS: 600000})
	}
	return out
}

func BenchmarkOpen(b *testing.B) {
	e := newBenchEnv(b)
	forEachConcurrency(b, func(b *testing.B, conc int) {
		req := &wire.SessionOpenRequest{TimeoutMS: 600000}
		measure(b, conc, func(_, _ int) error {
			return wire.Call(context.Background(), e.nc, wire.SubjectSessionOpen, nil, req, nil)
		})
	})
}

func BenchmarkGet(b *testing.B) {
	e := newBenchEnv(b)
	cs := e.openN(b, 64)
	forEachConcurrency(b, func(b *testing.B, conc int) {
		measure(b, conc, func(w, _ int) error { return cs[w].call(wire.SubjectSessionGet, nil, nil) })
	})
}

func BenchmarkKeepalive(b *testing.B) {
	e := newBenchEnv(b)
	cs := e.openN(b, 64)
	forEachConcurrency(b, func(b *testing.B, conc int) {
		measure(b, conc, func(w, _ int) error { return cs[w].call(wire.SubjectSessionKeepalive, nil, nil) })
	})
}

func BenchmarkUpdate(b *testing.B) {
	e := newBenchEnv(b)
	cs := e.openN(b, 64)
	forEachConcurrency(b, func(b *testing.B, conc int) {
		measure(b, conc, func(w, i int) error {
			return cs[w].call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Set: map[string]string{"k": fmt.Sprint(i)}}, nil)
		})
	})
}

func BenchmarkClose(b *testing.B) {
	e := newBenchEnv(b)
	forEachConcurrency(b, func(b *testing.B, conc int) {
		b.StopTimer()
		cs := e.openN(b, b.N)
		b.StartTimer()
		measure(b, conc, func(_, i int) error { return cs[i].call(wire.SubjectSessionClose, nil, nil) })
	})
}

// BenchmarkFloorRoundTrip is the second floor of every operation: a request that
// does nothing (the service's health endpoint) from the client connection through
// the import to a registry instance and back, without storage.
func BenchmarkFloorRoundTrip(b *testing.B) {
	e := newBenchEnv(b)
	forEachConcurrency(b, func(b *testing.B, conc int) {
		measure(b, conc, func(_, _ int) error {
			return wire.Call(context.Background(), e.nc, Prefix+".health", nil, nil, nil)
		})
	})
}

// floorKV opens the sessions bucket's twin over TCP as the service user, on a
// server of its own.
func floorKV(b *testing.B) jetstream.KeyValue {
	b.Helper()
	return floorKVOn(b, natstest.Start(b))
}

// floorKVOn opens the sessions bucket's twin on srv.
func floorKVOn(b *testing.B, srv *natstest.Server) jetstream.KeyValue {
	b.Helper()
	nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(embedded.ServiceUser, srv.Config().ServicePassword))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	cfg := jetstream.KeyValueConfig{Bucket: "FLOOR", History: 1, Storage: jetstream.FileStorage, LimitMarkerTTL: time.Hour}
	kv, err := js.CreateOrUpdateKeyValue(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	return kv
}

var floorValue = make([]byte, 700) // about the size of a session record

func BenchmarkFloorKVCreate(b *testing.B) {
	kv := floorKV(b)
	var n atomic.Int64
	forEachConcurrency(b, func(b *testing.B, conc int) {
		measure(b, conc, func(_, _ int) error {
			_, err := kv.Create(context.Background(), fmt.Sprintf("k%d", n.Add(1)), floorValue, jetstream.KeyTTL(time.Hour))
			return err
		})
	})
}

func BenchmarkFloorKVUpdate(b *testing.B) {
	kv := floorKV(b)
	forEachConcurrency(b, func(b *testing.B, conc int) {
		revs := make([]uint64, conc)
		for w := range revs {
			rev, err := kv.Put(context.Background(), fmt.Sprintf("w%d", w), floorValue)
			if err != nil {
				b.Fatal(err)
			}
			revs[w] = rev
		}
		measure(b, conc, func(w, _ int) error {
			rev, err := kv.Update(context.Background(), fmt.Sprintf("w%d", w), floorValue, revs[w])
			revs[w] = rev
			return err
		})
	})
}

func BenchmarkFloorKVGet(b *testing.B) {
	kv := floorKV(b)
	if _, err := kv.Put(context.Background(), "g", floorValue); err != nil {
		b.Fatal(err)
	}
	forEachConcurrency(b, func(b *testing.B, conc int) {
		measure(b, conc, func(_, _ int) error {
			_, err := kv.Get(context.Background(), "g")
			return err
		})
	})
}

// BenchmarkLatency measures each operation with one client beside its floor on the
// same server, interleaved in blocks of 50 calls so that both see the same disk and
// CPU (fsync times on a shared disk drift by tens of percent between runs). It
// reports both p50s and their ratio, the figure the registry's speed goal is about.
//
//	go test -run '^$' -bench Latency -benchtime 2000x ./services/registry/
func BenchmarkLatency(b *testing.B) {
	e := newBenchEnv(b)
	kv := floorKVOn(b, e.srv)
	ctx := context.Background()
	var n atomic.Int64
	key := func() string { return fmt.Sprintf("k%d", n.Add(1)) }
	if _, err := kv.Put(ctx, "g", floorValue); err != nil {
		b.Fatal(err)
	}
	cs := e.openN(b, 1)
	rev, err := kv.Put(ctx, "u", floorValue)
	if err != nil {
		b.Fatal(err)
	}
	type pair struct {
		name      string
		op, floor func() error
		prepare   func(n int) // before a block of n calls
	}
	var closing []*client
	pairs := []pair{
		{name: "open/kv-create", op: func() error {
			return wire.Call(ctx, e.nc, wire.SubjectSessionOpen, nil, &wire.SessionOpenRequest{TimeoutMS: 600000}, nil)
		}, floor: func() error {
			_, err := kv.Create(ctx, key(), floorValue, jetstream.KeyTTL(time.Hour))
			return err
		}},
		{name: "get/kv-get", op: func() error { return cs[0].call(wire.SubjectSessionGet, nil, nil) },
			floor: func() error { _, err := kv.Get(ctx, "g"); return err }},
		{name: "keepalive/round-trip", op: func() error { return cs[0].call(wire.SubjectSessionKeepalive, nil, nil) },
			floor: func() error { return wire.Call(ctx, e.nc, Prefix+".health", nil, nil, nil) }},
		{name: "update/kv-update", op: func() error {
			return cs[0].call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Set: map[string]string{"k": key()}}, nil)
		}, floor: func() error {
			var err error
			rev, err = kv.Update(ctx, "u", floorValue, rev)
			return err
		}},
		{name: "close/kv-update", prepare: func(n int) { closing = e.openN(b, n) }, op: func() error {
			c := closing[0]
			closing = closing[1:]
			return c.call(wire.SubjectSessionClose, nil, nil)
		}, floor: func() error {
			var err error
			rev, err = kv.Update(ctx, "u", floorValue, rev)
			return err
		}},
	}
	// The least a service that writes the bucket can do: a plain responder on the
	// services account that does one KV Update per request.
	svc := e.srv.ServiceConn(b)
	srev, err := kv.Put(ctx, "s", floorValue)
	if err != nil {
		b.Fatal(err)
	}
	natstest.Responder(b, svc, Prefix+".bench-floor", func(*nats.Msg) error {
		var err error
		srev, err = kv.Update(ctx, "s", floorValue, srev)
		return err
	})
	pairs = append(pairs, pair{name: "update/responder-kv-update", op: pairs[3].op, floor: func() error {
		_, err := e.nc.Request(Prefix+".bench-floor", nil, 5*time.Second)
		return err
	}})
	const block = 50
	for _, p := range pairs {
		b.Run(p.name, func(b *testing.B) {
			var ops, floors []time.Duration
			timed := func(fn func() error, into *[]time.Duration) {
				t0 := time.Now()
				if err := fn(); err != nil {
					b.Fatal(err)
				}
				*into = append(*into, time.Since(t0))
			}
			for done := 0; done < b.N; done += block {
				m := min(block, b.N-done)
				if p.prepare != nil {
					b.StopTimer()
					p.prepare(m)
					b.StartTimer()
				}
				for range m {
					timed(p.floor, &floors)
				}
				for range m {
					timed(p.op, &ops)
				}
			}
			o, f := p50(ops), p50(floors)
			b.ReportMetric(float64(o.Microseconds()), "p50-µs")
			b.ReportMetric(float64(f.Microseconds()), "floor-p50-µs")
			b.ReportMetric(float64(o)/float64(f), "x-floor")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func p50(d []time.Duration) time.Duration {
	slices.Sort(d)
	if len(d) == 0 {
		return 0
	}
	return d[len(d)/2]
}

// BenchmarkIdleSessions counts what idle sessions cost in writes. idleSessions
// sessions, opened together, each send a keepalive every idleKeepalive; the
// registry runs with a persist interval of idlePersist, so that a run of three
// intervals shows the steady state in half a minute. From the first interval on, it
// samples the bucket's sequence every second and reports the KV writes per second,
// on average and in the busiest second, beside what the design allows (on average
// sessions/interval; at most twice that, persistBatch), the activity stream's writes
// per second, and what the same measurement means for 100,000 sessions at the
// default interval of 5 minutes (it scales with sessions/interval).
//
//	go test -run '^$' -bench IdleSessions ./services/registry/
func BenchmarkIdleSessions(b *testing.B) {
	const (
		idleSessions  = 10_000
		idlePersist   = 10 * time.Second
		idleKeepalive = 2 * time.Second
	)
	srv := natstest.Start(b)
	startAuth(b, srv)
	startRegistry(b, srv, Config{PersistInterval: idlePersist, Limits: Limits{SessionsPerPrincipal: 1 << 30}, MaxConcurrent: 512})
	nc := srv.ClientConn(b)
	js := srv.JetStream(b)
	lastSeq := func(stream string) uint64 {
		st, err := js.Stream(context.Background(), stream)
		if err != nil {
			b.Fatal(err)
		}
		return st.CachedInfo().State.LastSeq
	}
	for range b.N {
		cs := make([]*client, idleSessions)
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < idleSessions; i += 16 {
					var err error
					// Not open: b.Fatal may only be called from the benchmark's goroutine.
					if cs[i], _, err = tryOpen(nc, &wire.SessionOpenRequest{TimeoutMS: 600000}); err != nil {
						b.Errorf("open: %v", err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if b.Failed() {
			b.FailNow()
		}
		ctx, stop := context.WithCancel(context.Background())
		// Keepalives, spread evenly: 16 workers, each over its share every period.
		for w := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				mine := idleSessions / 16
				tick := time.NewTicker(idleKeepalive / time.Duration(mine))
				defer tick.Stop()
				for i := w; ; i += 16 {
					select {
					case <-ctx.Done():
						return
					case <-tick.C:
					}
					if err := cs[i%idleSessions].call(wire.SubjectSessionKeepalive, nil, nil); err != nil && ctx.Err() == nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		time.Sleep(idlePersist) // nothing is due before the first interval
		kv0, act0 := lastSeq("KV_ROSTER_SESSIONS"), lastSeq(ActivityStream)
		start := time.Now()
		prev, peak := kv0, uint64(0)
		for range int((2 * idlePersist) / time.Second) {
			time.Sleep(time.Second)
			cur := lastSeq("KV_ROSTER_SESSIONS")
			peak = max(peak, cur-prev)
			prev = cur
		}
		secs := time.Since(start).Seconds()
		stop()
		wg.Wait()
		avg := float64(prev-kv0) / secs
		b.ReportMetric(float64(idleSessions), "sessions")
		b.ReportMetric(avg, "kv-writes/s")
		b.ReportMetric(float64(peak), "peak-kv-writes/s")
		b.ReportMetric(idleSessions/idlePersist.Seconds(), "design-avg/s")
		b.ReportMetric(2*idleSessions/idlePersist.Seconds(), "design-peak/s")
		b.ReportMetric(float64(lastSeq(ActivityStream)-act0)/secs, "activity-writes/s")
		scale := (100_000.0 / idleSessions) * (idlePersist.Seconds() / (5 * time.Minute).Seconds())
		b.ReportMetric(avg*scale, "100k-at-5min-kv-writes/s")
		b.ReportMetric(float64(peak)*scale, "100k-at-5min-peak/s")
		b.ReportMetric(0, "ns/op")
	}
}
