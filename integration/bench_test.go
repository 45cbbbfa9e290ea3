//go:build benchreport

package integration

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/kvstore"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

var reportPath = flag.String("report", "", "write the markdown benchmark report here")

// deployment is what the report measures: where clients connect, and a connection
// to the services account for the floors.
type deployment struct {
	name    string
	urls    string
	service func() (*nats.Conn, error)
	stop    func()
}

// sample is one measured operation.
type sample struct {
	op, floor       string
	n               int
	p50, p99        time.Duration
	perSec          float64
	floorP50        time.Duration
	floorPerSec     float64
	note            string
	throughputBased bool
}

func (s sample) ratio() string {
	if s.throughputBased {
		if s.floorPerSec == 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f× floor rate", s.perSec/s.floorPerSec)
	}
	if s.floorP50 == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f×", float64(s.p50)/float64(s.floorP50))
}

// latencies runs fn n times from one goroutine and returns p50 and p99.
func latencies(t *testing.T, n int, fn func(i int) error) (p50, p99 time.Duration) {
	t.Helper()
	d := make([]time.Duration, 0, n)
	for i := range n {
		start := time.Now()
		if err := fn(i); err != nil {
			t.Fatalf("iteration %d: %v", i, err)
		}
		d = append(d, time.Since(start))
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2], d[len(d)*99/100]
}

// timing is one function's latency percentiles.
type timing struct{ p50, p99 time.Duration }

// interleaved runs each of fns n times from one goroutine, in turns of 50 calls
// each, and returns their percentiles in order. An operation and its floors measured
// this way see the same disk and CPU: fsync times on a shared disk drift by tens of
// percent within a run, which measuring one after the other would put in the ratio.
func interleaved(t *testing.T, n int, fns ...func(i int) error) []timing {
	t.Helper()
	const turn = 50
	d := make([][]time.Duration, len(fns))
	for done := 0; done < n; done += turn {
		for k, fn := range fns {
			for i := done; i < min(done+turn, n); i++ {
				start := time.Now()
				if err := fn(i); err != nil {
					t.Fatalf("call %d of function %d: %v", i, k, err)
				}
				d[k] = append(d[k], time.Since(start))
			}
		}
	}
	out := make([]timing, len(fns))
	for k, ds := range d {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		out[k] = timing{ds[len(ds)/2], ds[len(ds)*99/100]}
	}
	return out
}

// throughput runs fn from workers goroutines for total calls and returns calls/s.
func throughput(t *testing.T, workers, total int, fn func(w, i int) error) float64 {
	t.Helper()
	var wg sync.WaitGroup
	per := total / workers
	start := time.Now()
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				if err := fn(w, i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return float64(per*workers) / time.Since(start).Seconds()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// measure runs every operation against d beside its floor.
func measure(t *testing.T, d deployment, n int) []sample {
	ctx := context.Background()
	svc, err := d.service()
	must(t, err)
	defer svc.Close()
	js, _ := jetstream.New(svc)
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "bench_floor", Replicas: replicasOf(d), LimitMarkerTTL: time.Minute})
	must(t, err)
	defer js.DeleteKeyValue(ctx, "bench_floor")

	// A request through the CLIENTS→SERVICES import to a responder that does nothing,
	// and one that does a KV write per request: the least a service can cost.
	sub, err := svc.Subscribe("roster.v1.msg.bench-floor", func(m *nats.Msg) { _ = m.Respond(m.Data) })
	must(t, err)
	defer sub.Unsubscribe()
	wsub, err := svc.Subscribe("roster.v1.msg.bench-floor-write", func(m *nats.Msg) {
		if _, err := kv.Put(ctx, "w", []byte(`{"state":"ACTIVE","x":1}`)); err != nil {
			t.Error(err)
		}
		_ = m.Respond(nil)
	})
	must(t, err)
	defer wsub.Unsubscribe()
	must(t, svc.Flush())

	cl, err := client.Connect(d.urls)
	must(t, err)
	defer cl.Conn().Close()
	nc := cl.Conn()
	request := func(int) error {
		_, err := nc.Request("roster.v1.msg.bench-floor", []byte(`{}`), 5*time.Second)
		return err
	}
	requestWrite := func(int) error {
		_, err := nc.Request("roster.v1.msg.bench-floor-write", nil, 5*time.Second)
		return err
	}
	kvCreate := func(i int) error {
		_, err := kv.Create(ctx, "c"+strconv.Itoa(i), []byte(`{"state":"ACTIVE"}`), jetstream.KeyTTL(time.Minute))
		return err
	}
	kvUpdate := func(i int) error {
		_, err := kv.Put(ctx, "c"+strconv.Itoa(i), []byte(`{"state":"ACTIVE","x":1}`))
		return err
	}
	kvGet := func(i int) error {
		_, err := kv.Get(ctx, "c"+strconv.Itoa(i))
		return err
	}
	// The read Roster makes: kv.Get is a direct get, which any replica answers (a
	// follower may lag); Roster reads from the stream's leader where the bucket has
	// replicas ("Reads never come from a lagging replica"), and directly on one
	// server, as kv.Get does.
	rd, err := kvstore.NewReader(ctx, js, "bench_floor")
	must(t, err)
	leaderGet := func(i int) error {
		_, err := rd.Read(ctx, "c"+strconv.Itoa(i))
		return err
	}
	kvCreateDelete := func(i int) error {
		rev, err := kv.Create(ctx, "l"+strconv.Itoa(i), []byte(`{}`))
		if err != nil {
			return err
		}
		return kv.Delete(ctx, "l"+strconv.Itoa(i), jetstream.LastRevision(rev))
	}
	serviceNote := func(op, floor timing) string {
		return fmt.Sprintf("a responder doing one KV write through the import: %v (%.1f×)", floor.p50.Round(time.Microsecond), float64(op.p50)/float64(floor.p50))
	}
	var out []sample
	add := func(op, floor string, r []timing, note string) {
		out = append(out, sample{op: op, floor: floor, n: n, p50: r[len(r)-1].p50, p99: r[len(r)-1].p99, floorP50: r[0].p50, note: note})
	}

	// Sessions.
	var ids, tokens []string
	r := interleaved(t, n, kvCreate, requestWrite, func(int) error {
		var resp wire.SessionOpenResponse
		err := wire.Call(ctx, nc, wire.SubjectSessionOpen, nil, &wire.SessionOpenRequest{TimeoutMS: 600000, Properties: map[string]string{"Desk": "FX"}}, &resp)
		if err == nil {
			ids, tokens = append(ids, resp.Session.ID), append(tokens, resp.Token)
		}
		return err
	})
	add("session open", "KV Create with TTL", r, serviceNote(r[2], r[1]))
	hdr := func(i int) nats.Header { return sessionHeaders(ids[i], tokens[i]) }
	r = interleaved(t, n, kvGet, request, leaderGet, func(i int) error {
		return wire.Call(ctx, nc, wire.SubjectSessionGet, hdr(i), &wire.SessionGetRequest{}, nil)
	})
	note := fmt.Sprintf("request through the import alone: %v", r[1].p50.Round(time.Microsecond))
	if !rd.Direct() {
		note += fmt.Sprintf("; a KV read from the leader, as Roster reads: %v (%.1f×)", r[2].p50.Round(time.Microsecond), float64(r[3].p50)/float64(r[2].p50))
	}
	add("session get", "KV Get", r, note)
	r = interleaved(t, n, request, func(i int) error {
		return wire.Call(ctx, nc, wire.SubjectSessionKeepalive, hdr(i), &wire.SessionKeepaliveRequest{}, nil)
	})
	fReq50 := r[0].p50
	add("session keepalive", "request through the import", r, "")
	r = interleaved(t, n, kvUpdate, requestWrite, func(i int) error {
		return wire.Call(ctx, nc, wire.SubjectSessionUpdate, hdr(i), &wire.SessionUpdateRequest{Set: map[string]string{"Status": strconv.Itoa(i)}}, nil)
	})
	add("session update", "KV Update", r, serviceNote(r[2], r[1]))

	// Locks.
	r = interleaved(t, n, kvCreateDelete, func(i int) error {
		var resp wire.LockAcquireResponse
		name := "bench/" + strconv.Itoa(i%16)
		if err := wire.Call(ctx, nc, wire.SubjectLockAcquire, hdr(i), &wire.LockAcquireRequest{Name: name}, &resp); err != nil {
			return err
		}
		return wire.Call(ctx, nc, wire.SubjectLockRelease, hdr(i), &wire.LockReleaseRequest{Name: name, Token: resp.Lock.Token}, nil)
	})
	fCD50 := r[0].p50
	add("lock acquire + release (uncontended)", "KV Create + Delete", r, "")
	grants := throughput(t, 8, 8*max(n/8, 50), func(w, i int) error {
		var resp wire.LockAcquireResponse
		if err := wire.Call(ctx, nc, wire.SubjectLockAcquire, hdr(w), &wire.LockAcquireRequest{Name: "bench/contended", WaitMS: 10000, RequestID: nuid.Next()}, &resp); err != nil {
			return err
		}
		return wire.Call(ctx, nc, wire.SubjectLockRelease, hdr(w), &wire.LockReleaseRequest{Name: "bench/contended", Token: resp.Lock.Token}, nil)
	})
	out = append(out, sample{op: "lock, 8 sessions contending for one lock", floor: "KV Create + Delete pairs/s, one client", throughputBased: true,
		perSec: grants, floorPerSec: float64(time.Second) / float64(fCD50), note: "grants per second"})

	// Messaging: receivers on their own connection.
	rcv, err := client.Connect(d.urls)
	must(t, err)
	defer rcv.Conn().Close()
	const receivers = 100
	var recvd sync.WaitGroup
	var rs []*client.Session
	for range receivers {
		s, err := rcv.Open(ctx, client.Options{Properties: map[string]string{"Group": "bench"}, Timeout: 10 * time.Minute})
		must(t, err)
		rs = append(rs, s)
		if _, err := s.Handle("bench/ping", func(_ context.Context, m *client.Message) ([]byte, error) {
			if !m.IsRequest {
				recvd.Done()
			}
			return []byte("pong"), nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	rounds := max(n/20, 10)
	// Floor: the same deliveries published directly to the receivers' subjects,
	// counted when received, as the fan-out below is. They carry the sender header
	// every delivery does: the SDK takes nothing else for one.
	start := time.Now()
	recvd.Add(rounds * receivers)
	for i := range rounds * receivers {
		must(t, svc.PublishMsg(&nats.Msg{Subject: wire.DeliverSubject(rcv.Key(), rs[i%receivers].ID(), "bench/ping"),
			Header: nats.Header{wire.HeaderSender: []string{"bench"}}, Data: []byte("x")}))
	}
	recvd.Wait()
	fPub := float64(rounds*receivers) / time.Since(start).Seconds()
	r = interleaved(t, n, request, func(i int) error {
		recvd.Add(1)
		err := wire.Call(ctx, nc, wire.SubjectMsgSend, hdr(0), &wire.MsgSendRequest{Message: wire.Message{SessionID: rs[i%receivers].ID(), Path: "bench/ping", Payload: []byte("x")}}, nil)
		return err
	})
	add("send to one session", "request through the import", r, "")
	start = time.Now()
	for range rounds {
		recvd.Add(receivers)
		must(t, wire.Call(ctx, nc, wire.SubjectMsgSend, hdr(0), &wire.MsgSendRequest{Message: wire.Message{Filter: `Group is "bench"`, Path: "bench/ping", Payload: []byte("x")}}, nil))
	}
	recvd.Wait()
	rate := float64(rounds*receivers) / time.Since(start).Seconds()
	out = append(out, sample{op: fmt.Sprintf("send to a filter matching %d sessions", receivers), floor: "the same deliveries published directly", throughputBased: true,
		perSec: rate, floorPerSec: fPub, note: "deliveries per second, received"})
	p50, p99 := latencies(t, max(n/10, 20), func(int) error {
		var resp wire.MsgRequestResponse
		if err := wire.Call(ctx, nc, wire.SubjectMsgRequest, hdr(0), &wire.MsgRequestRequest{Message: wire.Message{Filter: `Group is "bench"`, Path: "bench/ping", Payload: []byte("x")}, TimeoutMS: 5000}, &resp); err != nil {
			return err
		}
		if len(resp.Results) != receivers {
			return fmt.Errorf("got %d results, want %d", len(resp.Results), receivers)
		}
		return nil
	})
	out = append(out, sample{op: fmt.Sprintf("request to a filter matching %d sessions (all answer)", receivers), floor: "request through the import", n: max(n/10, 20), p50: p50, p99: p99, floorP50: fReq50})

	r = interleaved(t, n, kvUpdate, requestWrite, func(i int) error {
		return wire.Call(ctx, nc, wire.SubjectSessionClose, hdr(i), &wire.SessionCloseRequest{}, nil)
	})
	add("session close", "KV Update", r, serviceNote(r[2], r[1]))
	return out
}

func replicasOf(d deployment) int {
	if strings.Contains(d.name, "cluster") {
		return 3
	}
	return 1
}

// startEmbedded runs roster serve as a separate process, as a user would.
func startEmbedded(t *testing.T) deployment {
	dir := t.TempDir()
	port := freePort(t)
	p := &proc{name: "roster-serve", log: filepath.Join(dir, "serve.log"),
		args: []string{"serve", "--listen", "127.0.0.1:" + strconv.Itoa(port), "--data-dir", dir, "--service-password", "bench", "--log-level", "warn"}}
	p.start(t)
	t.Cleanup(p.stop)
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	natstest.CheckFor(t, 60*time.Second, 100*time.Millisecond, func() error {
		cl, err := client.Connect(url)
		if err != nil {
			return err
		}
		defer cl.Conn().Close()
		_, err = cl.Open(context.Background(), client.Options{})
		return err
	})
	return deployment{name: "embedded server (roster serve, one process)", urls: url, service: func() (*nats.Conn, error) {
		return nats.Connect(url, nats.UserInfo(embedded.ServiceUser, "bench"))
	}, stop: p.stop}
}

// startBenchCluster runs a 3-node cluster with two instances of every service, each
// a separate process.
func startBenchCluster(t *testing.T) deployment {
	cl := startCluster(t, 3)
	cl.startServices(2)
	return deployment{name: "3-node cluster (R3, two instances of each service, separate processes)", urls: cl.urls(),
		service: func() (*nats.Conn, error) { return cl.serviceConn() }, stop: cl.shutdown}
}

// TestBenchReport measures every operation beside its floor, on the embedded
// server and on a 3-node cluster, and writes the markdown report (make bench).
func TestBenchReport(t *testing.T) {
	if *reportPath == "" {
		t.Skip("no -report path")
	}
	const n = 1000
	var b strings.Builder
	fmt.Fprintf(&b, "# Roster benchmark report\n\n")
	fmt.Fprintf(&b, "Generated by `make bench` on %s: %s/%s, %d CPUs, %s. Every operation is measured from one client over TCP, beside its floor measured in the same run on the same server (p50 of %d sequential calls unless a rate is shown). fsync on every write.\n\n",
		time.Now().UTC().Format(time.RFC3339), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), n)
	// One deployment at a time: on a small machine the idle processes of the other
	// (eleven of them for the cluster) would take CPU from the one being measured.
	for _, start := range []func(*testing.T) deployment{startEmbedded, startBenchCluster} {
		d := start(t)
		samples := measure(t, d, n)
		d.stop()
		fmt.Fprintf(&b, "## %s\n\n| operation | p50 | p99 | rate | floor | floor p50 / rate | ratio | note |\n|---|---|---|---|---|---|---|---|\n", d.name)
		for _, s := range samples {
			rate, floor := "", s.floorP50.Round(time.Microsecond).String()
			if s.throughputBased {
				rate, floor = fmt.Sprintf("%.0f/s", s.perSec), fmt.Sprintf("%.0f/s", s.floorPerSec)
			}
			p50, p99 := "", ""
			if !s.throughputBased {
				p50, p99 = s.p50.Round(time.Microsecond).String(), s.p99.Round(time.Microsecond).String()
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", s.op, p50, p99, rate, s.floor, floor, s.ratio(), s.note)
		}
		fmt.Fprintln(&b)
	}
	if raw, err := os.ReadFile(filepath.Join(filepath.Dir(*reportPath), "results.txt")); err == nil {
		fmt.Fprintf(&b, "## Package benchmarks (go test -bench, same run)\n\n```\n%s```\n", raw)
	}
	if err := os.WriteFile(*reportPath, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("report written to %s", *reportPath)
}
