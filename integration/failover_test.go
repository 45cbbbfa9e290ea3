package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/kvstore"
	"github.com/seed-3c836eab/roster/pkg/lockcheck"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// scale picks the CI size of a test or, with -tags integration (make integration),
// the full one.
func scale(ci, full int) int {
	if fullRun {
		return full
	}
	return ci
}

// connect returns an SDK client connected to the cluster (any node).
func connect(t *testing.T, urls string) *client.Client {
	t.Helper()
	cl, err := client.Connect(urls)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Conn().Close() })
	return cl
}

// sessionHeaders returns the headers of a session-scoped request.
func sessionHeaders(id, token string) nats.Header {
	return nats.Header{wire.HeaderSession: {id}, wire.HeaderToken: {token}}
}

// TestKillJetStreamLeaderWhileOpeningSessions opens sessions from many connections
// while the leader of the sessions bucket is killed with SIGKILL, and checks that
// every session whose open was acknowledged is stored, and that SDK sessions
// connected to the killed node reconnect to another node and keep their ids.
func TestKillJetStreamLeaderWhileOpeningSessions(t *testing.T) {
	total := scale(10000, 10000)
	c := startCluster(t, 3)
	c.startServices(2)

	leader, err := c.streamLeader("KV_" + sessions.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	// SDK sessions on the node that will die.
	var sdk []*client.Session
	for range 5 {
		sdk = append(sdk, open(t, c.nodes[leader].url(), nil))
	}
	// Recorded, not sent on a channel: a listener must not block (the SDK calls it on
	// the goroutine that saw the change), and a send on a channel of one place per
	// session blocked for a session resumed twice — until the channel was read, after
	// every acknowledged session was checked, or for good once it had been.
	var backMu sync.Mutex
	back := map[string]bool{}
	for _, s := range sdk {
		s.OnStateChange(func(ch client.StateChange) {
			if ch.Old == client.StateRecovering && ch.New == client.StateActive {
				backMu.Lock()
				back[s.ID()] = true
				backMu.Unlock()
			}
		})
	}

	const workers = 32
	conns := make([]*client.Client, 8)
	for i := range conns {
		conns[i] = connect(t, c.urls())
	}
	var (
		mu       sync.Mutex
		acked    []string
		failures atomic.Int64
		next     atomic.Int64
		killed   atomic.Bool
		killAt   time.Time
	)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc := conns[w%len(conns)].Conn()
			for next.Add(1) <= int64(total) {
				for {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					var resp wire.SessionOpenResponse
					err := wire.Call(ctx, nc, wire.SubjectSessionOpen, nil, &wire.SessionOpenRequest{TimeoutMS: 600000}, &resp)
					cancel()
					if err == nil {
						mu.Lock()
						acked = append(acked, resp.Session.ID)
						n := len(acked)
						mu.Unlock()
						if n == total/4 && killed.CompareAndSwap(false, true) {
							killAt = time.Now()
							c.nodes[leader].kill()
						}
						break
					}
					failures.Add(1)
					if !unknownOutcome(err) || time.Since(start) > 3*time.Minute {
						t.Errorf("open failed: %v", err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if !killed.Load() {
		t.Fatal("the leader was never killed")
	}

	// Every acknowledged session is stored, in any node's view.
	nc, err := c.serviceConn()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(context.Background(), sessions.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	lost := 0
	for _, id := range acked {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		e, err := kv.Get(ctx, id)
		cancel()
		if err != nil {
			lost++
			if lost <= 5 {
				t.Errorf("acknowledged session %s: %v", id, err)
			}
			continue
		}
		if r, err := sessions.Decode(e.Value(), e.Revision()); err != nil || r.State != wire.StateActive {
			t.Errorf("session %s: got %+v (%v), want ACTIVE", id, r, err)
		}
	}

	// The SDK sessions on the killed node come back with the same ids.
	natstest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		backMu.Lock()
		defer backMu.Unlock()
		if len(back) < len(sdk) {
			return fmt.Errorf("%d of %d SDK sessions resumed on another node", len(back), len(sdk))
		}
		return nil
	})
	for _, s := range sdk {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		info, err := s.Refresh(ctx)
		cancel()
		if err != nil || info.ID != s.ID() || info.State != wire.StateActive {
			t.Errorf("SDK session %s after failover: %+v, %v", s.ID(), info, err)
		}
	}
	backMu.Lock()
	resumed := len(back)
	backMu.Unlock()
	t.Logf("figure: %d sessions acknowledged in %v (%d failed attempts retried around the kill of node %s at %v); %d acknowledged sessions lost; %d SDK sessions resumed on another node",
		len(acked), elapsed.Round(time.Millisecond), failures.Load(), c.nodes[leader].name, killAt.Sub(start).Round(time.Millisecond), lost, resumed)
	if lost > 0 {
		t.Fatalf("%d acknowledged sessions lost", lost)
	}
	c.restartNode(leader)
}

// unknownOutcome reports whether err leaves the outcome of a request unknown. A
// timeout is, whoever answers it: the caller's own (no reply before the deadline)
// or the service's, whose deadline can fall a millisecond before the caller's
// (Roster-Timeout is sent in whole milliseconds) — seen once: an open answered
// "the request's deadline passed: session storage did not answer in time" across
// a leader kill was taken for a final failure.
func unknownOutcome(err error) bool {
	var we *wire.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || !errors.As(err, &we) {
		return true
	}
	return we.Code == wire.CodeUnavailable || we.Code == wire.CodeInternal || we.Code == wire.CodeTimeout
}

// TestLockSafetyThroughFailures runs sessions contending for a few locks while
// nodes are killed and restarted, paused (SIGSTOP) and resumed, and lock-service
// instances are killed and replaced; the history is checked with porcupine.
func TestLockSafetyThroughFailures(t *testing.T) {
	run := time.Duration(scale(20, 120)) * time.Second
	c := startCluster(t, 3)
	c.startServices(2)

	const clients = 6
	names := []string{"safety/0", "safety/1"}
	rec := lockcheck.NewRecorder()
	ctx, cancel := context.WithTimeout(context.Background(), run)
	defer cancel()

	var faults []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // chaos: one fault at a time, each healed before the next
		defer wg.Done()
		rnd := rand.New(rand.NewPCG(3, 4))
		for ctx.Err() == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(1500+rnd.IntN(1000)) * time.Millisecond):
			}
			switch rnd.IntN(3) {
			case 0:
				i := rnd.IntN(len(c.nodes))
				c.nodes[i].kill()
				faults = append(faults, "kill "+c.nodes[i].name)
				time.Sleep(time.Second) // the node stays down for a while: that is the fault
				c.restartNode(i)
			case 1:
				i := rnd.IntN(len(c.nodes))
				c.nodes[i].signal(syscall.SIGSTOP)
				faults = append(faults, "pause "+c.nodes[i].name)
				time.Sleep(1500 * time.Millisecond) // paused for longer than the route ping
				c.nodes[i].signal(syscall.SIGCONT)
			case 2:
				locks := c.instances("lock")
				if len(locks) == 0 {
					// rand.IntN(0) panicked, and a panic in a goroutine ends the test
					// binary without its clean-ups or the other tests' results.
					t.Errorf("no lock instance is running; faults so far: %v", faults)
					return
				}
				victim := locks[rnd.IntN(len(locks))]
				victim.kill()
				faults = append(faults, "kill "+victim.name)
				c.startService("lock")
			}
		}
	}()

	// What a failure is explained from: each operation's request id, tries and
	// error (a client's last few are logged with its failure) and, when the
	// history is dumped (ROSTER_HISTORY_DUMP), every version of the locks' records
	// the bucket committed.
	var notes sync.Map // noteKey -> string
	dump := os.Getenv("ROSTER_HISTORY_DUMP")
	committed := func() string { return "" }
	if dump != "" {
		committed = watchCommits(t, c, "KV_roster_locks")
	}

	var ops atomic.Int64
	for i := range clients {
		s := open(t, c.urls(), nil)
		nc := s.Client().Conn()
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(i), 9))
			tries := 0
			var recent []string // this client's last operations, for its failure
			note := func(call int64, format string, args ...any) {
				n := fmt.Sprintf(format, args...)
				notes.Store(noteKey{i, call}, n)
				if recent = append(recent, n); len(recent) > 8 {
					recent = recent[1:]
				}
			}
			fail := func(format string, args ...any) {
				t.Errorf("client %d, session %s: %s; its last operations:\n\t%s", i, s.ID(), fmt.Sprintf(format, args...), strings.Join(recent, "\n\t"))
			}
			retry := func(subject string, req, resp any) error {
				tries = 0
				for {
					tries++
					rctx, rcancel := context.WithTimeout(context.Background(), 3*time.Second)
					err := wire.Call(rctx, nc, subject, sessionHeaders(s.ID(), s.Token()), req, resp)
					rcancel()
					if err == nil || !unknownOutcome(err) {
						return err
					}
					if time.Duration(rec.Now()) > run+time.Minute {
						return err
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
			for ctx.Err() == nil {
				name := names[rnd.IntN(len(names))]
				mode := wire.LockExclusive
				if rnd.IntN(3) == 0 {
					mode = wire.LockShared
				}
				in := lockcheck.Input{Name: name, Session: s.ID(), Op: "acquire", Mode: mode}
				call := rec.Now()
				var resp wire.LockAcquireResponse
				req := &wire.LockAcquireRequest{Name: name, Mode: mode, WaitMS: []int64{0, 100, 500}[rnd.IntN(3)], RequestID: nuid.Next()}
				err := retry(wire.SubjectLockAcquire, req, &resp)
				note(call, "acquire %s %s req=%s wait=%d tries=%d err=%v", name, mode, req.RequestID, req.WaitMS, tries, err)
				switch {
				case err == nil:
					rec.Add(i, in, call, lockcheck.Output{OK: true, Token: resp.Lock.Token})
				case errors.Is(err, wire.ErrTimeout), errors.Is(err, wire.ErrStaleRequest):
					// Not granted: the lock was taken, or an earlier copy of this
					// request was already answered without a grant.
					rec.Add(i, in, call, lockcheck.Output{})
					continue
				default:
					fail("acquire: %v", err)
					return
				}
				ops.Add(1)
				call = rec.Now()
				err = retry(wire.SubjectLockRelease, &wire.LockReleaseRequest{Name: name, Token: resp.Lock.Token}, nil)
				note(call, "release %s token=%d tries=%d err=%v", name, resp.Lock.Token, tries, err)
				if err != nil && !errors.Is(err, wire.ErrLockNotHeld) {
					fail("release: %v", err)
					return
				}
				rec.Add(i, lockcheck.Input{Name: name, Session: s.ID(), Op: "release"}, call, lockcheck.Output{OK: true})
			}
		}()
	}
	wg.Wait()
	history := rec.Operations()
	grants := lockcheck.Grants(history)
	res := porcupine.CheckOperations(lockcheck.Model(), history)
	t.Logf("figure: %d operations, %d grants over %v through %d faults %v; porcupine: %v", len(history), grants, run, len(faults), faults, res)
	if len(faults) == 0 || grants < 20 {
		t.Fatalf("the run did too little: %d faults, %d grants", len(faults), grants)
	}
	if dump != "" && (!res || t.Failed()) {
		dumpHistory(t, dump, history, &notes)
		if err := os.WriteFile(dump+".commits", []byte(committed()), 0o644); err != nil {
			t.Log(err)
		}
	}
	if !res {
		t.Fatal("the lock history is not linearizable")
	}
}

// noteKey names an operation of a history: its client and call time.
type noteKey struct {
	client int
	call   int64
}

// watchCommits records every message stream stores from now on, in order, and
// returns a function that lists them as text, one a line: sequence, subject,
// data. An ordered consumer resumes where it stopped across failures; a version
// replaced before the consumer read it (one version kept per key) is missed.
func watchCommits(t *testing.T, c *cluster, stream string) func() string {
	t.Helper()
	nc, err := c.serviceConn(nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var b strings.Builder
	cc, err := cons.Consume(func(m jetstream.Msg) {
		md, _ := m.Metadata()
		mu.Lock()
		defer mu.Unlock()
		var seq uint64
		if md != nil {
			seq = md.Sequence.Stream
		}
		fmt.Fprintf(&b, "%d %s %s %s\n", seq, m.Subject(), m.Headers().Get("KV-Operation"), m.Data())
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return func() string {
		mu.Lock()
		defer mu.Unlock()
		return b.String()
	}
}

// TestExpiryAcrossLeaderChange keeps half of a set of sessions alive and lets the
// other half go silent while the sessions bucket changes leader: no live session
// may close, and the silent ones must close soon after their timeout.
//
// A leader that steps down hands over at once: silent sessions close within their
// timeout + 1 s. A leader node killed with SIGKILL leaves the bucket without a
// leader until the others elect one — NATS's RAFT election timeout is 4 to 9 s and
// not configurable — and no write, a close included, can land before: there the
// bound is the timeout + the election (asserted as + 12 s, reported exactly).
func TestExpiryAcrossLeaderChange(t *testing.T) {
	t.Run("stepdown", func(t *testing.T) { testExpiryAcrossLeaderChange(t, false, time.Second) })
	t.Run("leader killed", func(t *testing.T) { testExpiryAcrossLeaderChange(t, true, 12*time.Second) })
}

func testExpiryAcrossLeaderChange(t *testing.T, kill bool, bound time.Duration) {
	const timeout = 3 * time.Second
	n := scale(20, 200)
	c := startCluster(t, 3)
	c.startServices(2)
	leader, err := c.streamLeader("KV_" + sessions.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	// The test's client stays on a node that lives: its keepalives must not pause
	// for a reconnect, or a live session would rightly expire.
	cl := connect(t, c.nodes[(leader+1)%len(c.nodes)].url())
	nc := cl.Conn()

	type sess struct {
		id, token string
		alive     bool
		last      atomic.Int64 // unix nanos of the last acknowledged activity
	}
	var all []*sess
	for i := range n {
		var resp wire.SessionOpenResponse
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := wire.Call(ctx, nc, wire.SubjectSessionOpen, nil, &wire.SessionOpenRequest{TimeoutMS: timeout.Milliseconds()}, &resp)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		s := &sess{id: resp.Session.ID, token: resp.Token, alive: i%2 == 0}
		s.last.Store(time.Now().UnixNano())
		all = append(all, s)
	}

	// Watch the bucket for closes.
	snc, err := c.serviceConn()
	if err != nil {
		t.Fatal(err)
	}
	defer snc.Close()
	js, _ := jetstream.New(snc)
	kv, err := js.KeyValue(context.Background(), sessions.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	// A close counts when the stream stored it (the entry's timestamp, set by the
	// leader), not when this watch delivered it: the watch's ordered consumer is R1,
	// on any node, and when that node is the one killed the watch resumes only once
	// its consumer is recreated — up to 4 s after the kill for kvstore.WatchAll, the
	// watch the services use (nats.go's kv.WatchAll: up to 20 s) — and the closes
	// arrive after they were written. Both are reported.
	var cmu sync.Mutex
	closedAt := map[string]time.Time{} // stored
	seenAt := map[string]time.Time{}   // delivered by the watch
	before := natstest.ConsumerNodes(t, js, "KV_"+sessions.Bucket)
	w, err := kvstore.WatchAll(context.Background(), snc, kv)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var watchNode []string // the node(s) of the consumers that appeared with the watch
	for name, node := range natstest.ConsumerNodes(t, js, "KV_"+sessions.Bucket) {
		if _, ok := before[name]; !ok {
			watchNode = append(watchNode, node)
		}
	}
	go func() {
		for e := range w.Updates() {
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			if r, err := sessions.Decode(e.Value(), e.Revision()); err == nil && r.State == wire.StateClosed {
				cmu.Lock()
				if _, seen := closedAt[r.ID]; !seen {
					closedAt[r.ID], seenAt[r.ID] = e.Created(), time.Now()
				}
				cmu.Unlock()
			}
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 4*timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range all {
		if !s.alive {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				rctx, rcancel := context.WithTimeout(ctx, time.Second)
				err := wire.Call(rctx, nc, wire.SubjectSessionKeepalive, sessionHeaders(s.id, s.token), &wire.SessionKeepaliveRequest{}, nil)
				rcancel()
				if err == nil {
					s.last.Store(time.Now().UnixNano())
				} else if errors.Is(err, wire.ErrSessionClosed) {
					t.Errorf("live session %s was closed", s.id)
					return
				}
				select {
				case <-ctx.Done():
				case <-time.After(500 * time.Millisecond):
				}
			}
		}()
	}
	time.Sleep(timeout / 2) // the silent sessions are half way to their expiry
	how := "step-down of"
	if kill {
		how = "kill of"
		c.nodes[leader].kill()
	} else if err := natstest.StepDown(context.Background(), snc, "KV_"+sessions.Bucket); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	var late []time.Duration
	var delay time.Duration // the longest a close took to reach the watch
	natstest.CheckFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		cmu.Lock()
		defer cmu.Unlock()
		for _, s := range all {
			if !s.alive {
				if _, ok := closedAt[s.id]; !ok {
					return fmt.Errorf("silent session %s not closed", s.id)
				}
			}
		}
		return nil
	})
	cmu.Lock()
	for _, s := range all {
		at, closed := closedAt[s.id]
		if s.alive {
			if closed && at.Before(time.Unix(0, s.last.Load()).Add(timeout)) {
				t.Errorf("live session %s closed early", s.id)
			}
			continue
		}
		delay = max(delay, seenAt[s.id].Sub(at))
		idle := at.Sub(time.Unix(0, s.last.Load()))
		if idle < timeout {
			t.Errorf("session %s closed after %v of silence, before its %v timeout", s.id, idle, timeout)
		}
		late = append(late, idle-timeout)
	}
	cmu.Unlock()
	sort.Slice(late, func(i, j int) bool { return late[i] < late[j] })
	worst := late[len(late)-1]
	t.Logf("figure: %d silent sessions closed %v to %v after their %v timeout across the %s leader %s (reaching a watch, its consumer on %v, up to %v after); %d live sessions kept",
		len(late), late[0].Round(time.Millisecond), worst.Round(time.Millisecond), timeout, how, c.nodes[leader].name, watchNode, delay.Round(time.Millisecond), n-len(late))
	if worst > bound {
		t.Errorf("a silent session closed %v after its timeout, want within %v", worst, bound)
	}
	if kill {
		c.restartNode(leader)
	}
}

// TestInstanceKillUnderLoad keeps requests flowing to every service while one
// instance of each is killed with SIGKILL: the other instances keep serving, each
// service's requests sent after the kills are answered. (Counted together, the
// requests of the services still served hid one no instance served any more.)
func TestInstanceKillUnderLoad(t *testing.T) {
	c := startCluster(t, 3)
	c.startServices(2)
	s := open(t, c.urls(), map[string]string{"Role": "target"})
	unhandle, err := s.Handle("load/ping", func(context.Context, *client.Message) ([]byte, error) { return []byte("pong"), nil })
	if err != nil {
		t.Fatal(err)
	}
	defer unhandle()

	// The requests, each answered by one service (open by auth and the registry).
	kinds := []string{"session refresh (registry)", "try lock and unlock (lock)", "send (messaging)", "open and close (auth, registry)"}
	ctx, cancel := context.WithCancel(context.Background())
	var ok, failed atomic.Int64
	// lastSent: per kind, when the last request answered was sent.
	lastSent := make([]atomic.Int64, len(kinds))
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
				sent := time.Now()
				var err error
				kind := (w + i) % len(kinds)
				switch kind {
				case 0:
					_, err = s.Refresh(rctx)
				case 1:
					var l *client.Lock
					if l, err = s.TryLock(rctx, fmt.Sprintf("load/%d", w), client.LockOptions{}); err == nil {
						err = l.Unlock(rctx)
					}
				case 2:
					_, err = s.Send(rctx, client.ToFilter(`Role is "target"`), "load/ping", []byte("x"))
				case 3:
					var x *client.Session
					if x, err = s.Client().Open(rctx, client.Options{}); err == nil {
						err = x.Close(rctx)
					}
				}
				rcancel()
				if err != nil {
					if ctx.Err() == nil {
						failed.Add(1)
					}
					continue
				}
				ok.Add(1)
				lastSent[kind].Store(sent.UnixNano())
			}
		}()
	}
	time.Sleep(time.Second)
	before := ok.Load()
	for _, name := range []string{"auth", "registry", "lock", "messaging"} {
		c.instances(name)[0].kill()
	}
	// Every kind of request keeps succeeding after the kills: one sent after them
	// was answered by the instances left.
	killedAt := time.Now()
	natstest.CheckFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		var none []string
		for k, name := range kinds {
			if lastSent[k].Load() <= killedAt.UnixNano() {
				none = append(none, name)
			}
		}
		if len(none) > 0 {
			return fmt.Errorf("no request sent since the kills has been answered: %s", strings.Join(none, ", "))
		}
		return nil
	})
	cancel()
	wg.Wait()
	t.Logf("figure: %d requests served before the kills, %d after (over the remaining instances), %d failed (in flight at a kill)", before, ok.Load()-before, failed.Load())
}

// dumpHistory writes a history as text, one operation a line in call order, for
// looking into a failed check.
func dumpHistory(t *testing.T, path string, ops []porcupine.Operation, notes *sync.Map) {
	sorted := append([]porcupine.Operation(nil), ops...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Call < sorted[j].Call })
	var b strings.Builder
	for _, op := range sorted {
		in, out := op.Input.(lockcheck.Input), op.Output.(lockcheck.Output)
		note, _ := notes.Load(noteKey{op.ClientId, op.Call})
		fmt.Fprintf(&b, "%12d %12d c%d %s %s %s %s ok=%v token=%d %v\n", op.Call/1e3, op.Return/1e3, op.ClientId, in.Name, in.Session[len(in.Session)-4:], in.Op, in.Mode, out.OK, out.Token, note)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Log(err)
	}
}

// TestSessionsOfAKilledNode kills NATS nodes that hold session connections. A killed
// node publishes no DISCONNECT advisory, so only the registry's connection checks
// find these connections gone: a node restarted at once comes back under a new
// identity without them, and a node that stays down stops answering. Either way the
// sessions become RECOVERING and their connection-scoped locks are released; before
// the checks they stayed ACTIVE, holding the locks, until their inactivity timeout.
func TestSessionsOfAKilledNode(t *testing.T) {
	c := startCluster(t, 3)
	c.startServices(1)
	watcher := open(t, c.nodes[0].url(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// A session on a connection to node i that will not reconnect, holding a
	// connection-scoped lock.
	onNode := func(i int, lock string) *client.Session {
		cl, err := client.Connect(c.nodes[i].url(), client.WithNATSOptions(nats.NoReconnect()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Conn().Close() })
		s, err := cl.Open(ctx, client.Options{Timeout: 10 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Lock(ctx, lock, client.LockOptions{Scope: wire.ScopeConnection}); err != nil {
			t.Fatal(err)
		}
		return s
	}
	waitLost := func(s *client.Session, lock string) {
		t.Helper()
		natstest.CheckFor(t, 90*time.Second, 250*time.Millisecond, func() error {
			// Each round bounded: a request lost while the cluster heals must not
			// take the rest of the test's time.
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			info, err := watcher.GetSession(ctx, s.ID())
			if err != nil {
				return err
			}
			if info.State != client.StateRecovering {
				return fmt.Errorf("session on the killed node is %s", info.State)
			}
			l, err := watcher.TryLock(ctx, lock, client.LockOptions{})
			if err != nil {
				return fmt.Errorf("its connection-scoped lock: %w", err)
			}
			return l.Unlock(ctx)
		})
	}

	restarted := onNode(2, "killed/restarted")
	c.nodes[2].kill()
	killedAt := time.Now()
	c.restartNode(2)
	waitLost(restarted, "killed/restarted")
	t.Logf("figure: session on a node killed and restarted at once: RECOVERING %v after the kill", time.Since(killedAt).Round(100*time.Millisecond))

	// Another node may go only once the restarted one has caught up: killed before,
	// it would take the cluster's quorum with it, and nothing could be written.
	c.waitStreamsCurrent(2 * time.Minute)
	gone := onNode(1, "killed/gone")
	c.nodes[1].kill()
	killedAt = time.Now()
	waitLost(gone, "killed/gone")
	t.Logf("figure: session on a node killed for good: RECOVERING %v after the kill (ServerGoneAfter 30 s, checks every 10 s)", time.Since(killedAt).Round(100*time.Millisecond))
}
