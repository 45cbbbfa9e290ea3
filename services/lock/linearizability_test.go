package lock

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/seed-3c836eab/roster/pkg/lockcheck"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

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
	rec := lockcheck.NewRecorder()
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
			// Not startLock: t.Fatal may only be called from the test's goroutine.
			fresh, err := e.launchLock(t, cfg, noop.NewTracerProvider())
			if err != nil {
				t.Errorf("restarting a killed instance: %v", err)
				return
			}
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
			// retry repeats a request until its outcome is known, and reports whether
			// an attempt's outcome was unknown.
			retry := func(subject string, req any, resp any) (retried bool, err error) {
				for {
					rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
					err := c.call(rctx, subject, req, resp)
					rcancel()
					if err == nil || !unknown(err) {
						return retried, err
					}
					retried = true
					cmu.Lock()
					retries++
					cmu.Unlock()
					if time.Duration(rec.Now()) > run+20*time.Second {
						return retried, err
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
				in := lockcheck.Input{Name: name, Session: c.id, Op: "acquire", Mode: mode}
				call := rec.Now()
				var resp wire.LockAcquireResponse
				_, err := retry(wire.SubjectLockAcquire, &wire.LockAcquireRequest{Name: name, Mode: mode, WaitMS: wait, RequestID: nuid.Next()}, &resp)
				switch {
				case err == nil:
					rec.Add(i, in, call, lockcheck.Output{OK: true, Token: resp.Lock.Token})
				case errors.Is(err, wire.ErrTimeout), errors.Is(err, wire.ErrStaleRequest):
					rec.Add(i, in, call, lockcheck.Output{})
					continue
				default:
					t.Errorf("acquire: %v", err)
					return
				}
				// Hold it a moment, as a client does its work: released at once, a lock
				// is rarely held when another request comes, and waits rarely end
				// while it is.
				time.Sleep(time.Duration(rnd.IntN(20)) * time.Millisecond)
				call = rec.Now()
				retried, err := retry(wire.SubjectLockRelease, &wire.LockReleaseRequest{Name: name}, nil)
				if err != nil && !errors.Is(err, wire.ErrLockNotHeld) {
					t.Errorf("release: %v", err)
					return
				}
				// lock_not_held after an unknown attempt means that attempt released it;
				// without one, the session lost a lock it was granted, which the model
				// refuses (a release refused while the session holds the lock).
				released := err == nil || retried
				rec.Add(i, lockcheck.Input{Name: name, Session: c.id, Op: "release"}, call, lockcheck.Output{OK: released})
			}
		}()
	}
	wg.Wait()

	ops := rec.Operations()
	granted := lockcheck.Grants(ops)
	t.Logf("%d operations (%d grants), %d instance kills, %d retried requests", len(ops), granted, kills, retries)
	if kills == 0 || granted < 20 {
		t.Fatalf("the run did too little: %d kills, %d grants", kills, granted)
	}
	res, info := porcupine.CheckOperationsVerbose(lockcheck.Model(), ops, time.Minute)
	if res != porcupine.Ok {
		if res == porcupine.Illegal {
			path := t.TempDir() + "/history.html"
			if err := porcupine.VisualizePath(lockcheck.Model(), info, path); err == nil {
				t.Logf("visualization: %s", path)
			}
		}
		t.Fatalf("porcupine: %v", res)
	}
}
