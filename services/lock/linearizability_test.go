package lock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// The model: per lock name, the holders (session, mode, token) and the highest
// token granted so far. Operations are acquire (granted with a token, or not) and
// release. It accepts a history only if no exclusive holder ever overlaps another
// holder, and every grant's token is higher than every earlier one (or, for shared
// holders granted by one write, equal to the current shared holders' token).

type lockInput struct {
	name    string
	session string
	op      string // "acquire" or "release"
	mode    wire.LockMode
}

type lockOutput struct {
	ok    bool // granted / released
	token uint64
}

type hold struct {
	session string
	mode    wire.LockMode
	token   uint64
}

type lockState struct {
	holders []hold // sorted by session
	max     uint64
}

func (s lockState) find(session string) (hold, bool) {
	for _, h := range s.holders {
		if h.session == session {
			return h, true
		}
	}
	return hold{}, false
}

func lockModel() porcupine.Model {
	return porcupine.Model{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			byName := map[string][]porcupine.Operation{}
			var names []string
			for _, op := range history {
				n := op.Input.(lockInput).name
				if _, ok := byName[n]; !ok {
					names = append(names, n)
				}
				byName[n] = append(byName[n], op)
			}
			var out [][]porcupine.Operation
			for _, n := range names {
				out = append(out, byName[n])
			}
			return out
		},
		Init: func() any { return lockState{} },
		Step: func(state, input, output any) (bool, any) {
			st, in, out := state.(lockState), input.(lockInput), output.(lockOutput)
			h, holds := st.find(in.session)
			switch in.op {
			case "release":
				if !out.ok || !holds {
					return !out.ok && !holds, st
				}
				next := lockState{max: st.max}
				for _, x := range st.holders {
					if x.session != in.session {
						next.holders = append(next.holders, x)
					}
				}
				return true, next
			default: // acquire
				if holds {
					// A repeated acquire returns the equal lock.
					return out.ok && out.token == h.token, st
				}
				if !out.ok {
					// Refused (try once, or its wait ended) only while someone holds it.
					return len(st.holders) > 0, st
				}
				compatible := len(st.holders) == 0 || (in.mode == wire.LockShared && st.holders[0].mode == wire.LockShared)
				if !compatible {
					return false, st
				}
				if out.token <= st.max {
					joins := in.mode == wire.LockShared && out.token == st.max && len(st.holders) > 0 &&
						slices.ContainsFunc(st.holders, func(x hold) bool { return x.token == st.max })
					if !joins {
						return false, st
					}
				}
				next := lockState{max: max(st.max, out.token), holders: slices.Clone(st.holders)}
				next.holders = append(next.holders, hold{in.session, in.mode, out.token})
				slices.SortFunc(next.holders, func(a, b hold) int { return strings.Compare(a.session, b.session) })
				return true, next
			}
		},
		Equal: func(a, b any) bool {
			x, y := a.(lockState), b.(lockState)
			return x.max == y.max && slices.Equal(x.holders, y.holders)
		},
		DescribeOperation: func(input, output any) string {
			in, out := input.(lockInput), output.(lockOutput)
			if in.op == "release" {
				return fmt.Sprintf("%s release(%s) -> %v", in.session[len(in.session)-4:], in.name, out.ok)
			}
			return fmt.Sprintf("%s acquire(%s, %s) -> %v token %d", in.session[len(in.session)-4:], in.name, in.mode, out.ok, out.token)
		},
	}
}

func TestModelRejectsOverlap(t *testing.T) {
	m := lockModel()
	op := func(c int, call, ret int64, in lockInput, out lockOutput) porcupine.Operation {
		return porcupine.Operation{ClientId: c, Input: in, Call: call, Output: out, Return: ret}
	}
	a := lockInput{name: "l", session: "sessA", op: "acquire", mode: wire.LockExclusive}
	b := lockInput{name: "l", session: "sessB", op: "acquire", mode: wire.LockExclusive}
	good := []porcupine.Operation{
		op(0, 0, 1, a, lockOutput{true, 5}),
		op(0, 2, 3, lockInput{name: "l", session: "sessA", op: "release"}, lockOutput{ok: true}),
		op(1, 1, 4, b, lockOutput{true, 7}),
	}
	if !porcupine.CheckOperations(m, good) {
		t.Fatal("a valid history was rejected")
	}
	for name, bad := range map[string][]porcupine.Operation{
		"two exclusive holders": {op(0, 0, 1, a, lockOutput{true, 5}), op(1, 2, 3, b, lockOutput{true, 7})},
		"token goes back": {op(0, 0, 1, a, lockOutput{true, 5}), op(0, 2, 3, lockInput{name: "l", session: "sessA", op: "release"}, lockOutput{ok: true}),
			op(1, 4, 5, b, lockOutput{true, 5})},
		"refused while free": {op(1, 0, 1, b, lockOutput{})},
	} {
		if porcupine.CheckOperations(m, bad) {
			t.Errorf("%s: accepted", name)
		}
	}
}

// recorder collects the history with timestamps from one monotonic clock.
type recorder struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
}

func (r *recorder) now() int64 { return int64(time.Since(r.start)) }

func (r *recorder) add(client int, in lockInput, call int64, out lockOutput) {
	ret := r.now()
	r.mu.Lock()
	r.ops = append(r.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
	r.mu.Unlock()
}

// unknown reports whether err leaves the outcome of a request unknown: no reply
// (the instance died with it), no instance answering, or storage unavailable.
func unknown(err error) bool {
	var we *wire.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || !errors.As(err, &we) {
		return true
	}
	return we.Code == wire.CodeUnavailable || we.Code == wire.CodeInternal
}

// TestLinearizableUnderInstanceKills runs clients on a few locks while lock
// instances are killed (their connection dropped mid-request) and replaced, and
// checks the history with porcupine. A request whose outcome is unknown is retried
// with the same request id until it has one; acquire and release are idempotent for
// a session, so the attempts together form one operation from the first call to the
// last return.
func TestLinearizableUnderInstanceKills(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	e := newEnv(t)
	cfg := Config{ExpiryGrace: 300 * time.Millisecond}
	var imu sync.Mutex
	instances := []*instance{e.startLock(t, cfg), e.startLock(t, cfg), e.startLock(t, cfg)}

	const clients = 6
	names := []string{"p/0", "p/1"}
	run := 3 * time.Second
	rec := &recorder{start: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), run)
	defer cancel()

	var wg sync.WaitGroup
	var kills, retries int
	var cmu sync.Mutex
	wg.Add(1)
	go func() { // the killer
		defer wg.Done()
		rnd := rand.New(rand.NewPCG(1, 2))
		tk := time.NewTicker(300 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
			imu.Lock()
			i := rnd.IntN(len(instances))
			victim := instances[i]
			instances = slices.Delete(instances, i, i+1)
			imu.Unlock()
			victim.kill()
			fresh := e.startLock(t, cfg)
			imu.Lock()
			instances = append(instances, fresh)
			imu.Unlock()
			cmu.Lock()
			kills++
			cmu.Unlock()
		}
	}()

	conns := []*nats.Conn{e.srv.ClientConn(t), e.srv.ClientConn(t), e.srv.ClientConn(t)}
	for i := range clients {
		c := e.openOn(t, conns[i%len(conns)], "admin", 0)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(i), 7))
			// retry repeats a request until its outcome is known.
			retry := func(subject string, req any, resp any) error {
				for {
					rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
					err := c.call(rctx, subject, req, resp)
					rcancel()
					if err == nil || !unknown(err) {
						return err
					}
					cmu.Lock()
					retries++
					cmu.Unlock()
					if time.Since(rec.start) > run+20*time.Second {
						return err
					}
				}
			}
			for ctx.Err() == nil {
				name := names[rnd.IntN(len(names))]
				mode := wire.LockExclusive
				if rnd.IntN(3) == 0 {
					mode = wire.LockShared
				}
				wait := []int64{0, 50, 300}[rnd.IntN(3)]
				in := lockInput{name: name, session: c.id, op: "acquire", mode: mode}
				call := rec.now()
				var resp wire.LockAcquireResponse
				err := retry(wire.SubjectLockAcquire, &wire.LockAcquireRequest{Name: name, Mode: mode, WaitMS: wait, RequestID: nuid.Next()}, &resp)
				switch {
				case err == nil:
					rec.add(i, in, call, lockOutput{ok: true, token: resp.Lock.Token})
				case errors.Is(err, wire.ErrTimeout):
					rec.add(i, in, call, lockOutput{})
					continue
				default:
					t.Errorf("acquire: %v", err)
					return
				}
				call = rec.now()
				err = retry(wire.SubjectLockRelease, &wire.LockReleaseRequest{Name: name}, nil)
				if err != nil && !errors.Is(err, wire.ErrLockNotHeld) {
					t.Errorf("release: %v", err)
					return
				}
				// lock_not_held after an unknown attempt means that attempt released it.
				rec.add(i, lockInput{name: name, session: c.id, op: "release"}, call, lockOutput{ok: true})
			}
		}()
	}
	wg.Wait()

	granted := 0
	for _, op := range rec.ops {
		if op.Input.(lockInput).op == "acquire" && op.Output.(lockOutput).ok {
			granted++
		}
	}
	t.Logf("%d operations (%d grants), %d instance kills, %d retried requests", len(rec.ops), granted, kills, retries)
	if kills == 0 || granted < 20 {
		t.Fatalf("the run did too little: %d kills, %d grants", kills, granted)
	}
	res, info := porcupine.CheckOperationsVerbose(lockModel(), rec.ops, time.Minute)
	if res != porcupine.Ok {
		if res == porcupine.Illegal {
			path := t.TempDir() + "/history.html"
			if err := porcupine.VisualizePath(lockModel(), info, path); err == nil {
				t.Logf("visualization: %s", path)
			}
		}
		t.Fatalf("porcupine: %v", res)
	}
}
