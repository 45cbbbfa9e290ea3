package auth

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// ThrottleConfig limits failed attempts. After MaxFailures failures for one principal
// or one client address (IPv6: one /64) within Window, further attempts for it are refused with
// throttled (429) — without checking the credentials — until the window has passed.
// Instances share their counts (throttleshare.go). A failed attempt that repeats one
// counted within Window — the same credentials from the same address — counts once:
// a client with several server URLs presents its credentials to each server in turn
// (nats.go tries every one), and a repeated guess teaches an attacker nothing.
type ThrottleConfig struct {
	// MaxFailures is the number of failures allowed per window (default 5).
	MaxFailures int
	// Window is how long failures count (default 1 minute).
	Window time.Duration
	// MaxKeys bounds the memory used: at most this many principals, and as many
	// addresses, are counted at once (default 100,000 of each). They are bounded
	// apart so that a flood of failures from many addresses (cheap: a bad token
	// costs no bcrypt) never makes room by forgetting a principal's failures.
	MaxKeys int
	// MaxWait bounds how long an attempt waits for the same principal's or address's
	// attempts in flight (default 10 s); it then fails with timeout. A callout
	// attempt also stops when the server stops waiting for its answer.
	MaxWait time.Duration
}

type failures struct {
	count    int
	first    time.Time
	inflight int // attempts being checked now
}

type throttle struct {
	cfg ThrottleConfig
	now func() time.Time
	// tell, when set, shares what this instance counts with the other instances
	// (throttleshare.go): the keys of each failure, and each principal that proved
	// itself after failing.
	tell func(wire.AuthThrottleNote)

	mu sync.Mutex
	// principals and addresses hold the failures counted per key (principalKey,
	// addressKey), each at most MaxKeys of them (table).
	principals, addresses map[string]*failures
	// repeats holds, for each failed attempt counted within the window, when it was
	// counted, by its fingerprint (Service.fingerprint).
	repeats map[string]time.Time
	// settled is closed, and replaced, whenever an attempt ends: attempts waiting
	// for a key's attempts in flight look again.
	settled chan struct{}
}

func newThrottle(cfg ThrottleConfig, now func() time.Time) *throttle {
	if cfg.MaxFailures <= 0 {
		cfg.MaxFailures = 5
	}
	if cfg.Window <= 0 {
		cfg.Window = time.Minute
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 100_000
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 10 * time.Second
	}
	if now == nil {
		now = time.Now
	}
	return &throttle{cfg: cfg, now: now, principals: map[string]*failures{}, addresses: map[string]*failures{},
		repeats: map[string]time.Time{}, settled: make(chan struct{})}
}

// begin admits an attempt for keys, or refuses it (false) when any key has used up
// its failures. An attempt in flight may still fail, so a key admits no more
// attempts at once than it has failures left: those beyond wait for one in flight to
// end — a success makes room, a failure may use up the key — instead of all passing
// the check before any failure is counted (a burst of concurrent guesses would
// otherwise all be checked). Legitimate concurrent attempts from one address are
// delayed, never refused — but wait at most MaxWait (nothing tells the internal
// authenticate endpoint that its caller gave up, and a waiting attempt holds a
// worker). Every admitted attempt ends with end. err is context.DeadlineExceeded
// after MaxWait, or the context's when it ends first.
func (t *throttle) begin(ctx context.Context, keys ...string) (bool, error) {
	var waited <-chan time.Time // armed at the first wait
	for {
		t.mu.Lock()
		now := t.now()
		full := false
		for _, k := range keys {
			if k == "" {
				continue
			}
			f, ok := t.table(k)[k]
			if !ok {
				continue
			}
			if f.count > 0 && now.Sub(f.first) >= t.cfg.Window {
				if f.count = 0; f.inflight == 0 {
					delete(t.table(k), k)
					continue
				}
			}
			if f.count >= t.cfg.MaxFailures {
				t.mu.Unlock()
				return false, nil
			}
			full = full || f.count+f.inflight >= t.cfg.MaxFailures
		}
		if !full {
			for _, k := range keys {
				if k != "" {
					t.entryLocked(k, now).inflight++
				}
			}
			t.mu.Unlock()
			return true, nil
		}
		settled := t.settled
		t.mu.Unlock()
		if waited == nil {
			timer := time.NewTimer(t.cfg.MaxWait)
			defer timer.Stop()
			waited = timer.C
		}
		select {
		case <-settled:
		case <-waited:
			return false, context.DeadlineExceeded
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// end ends an attempt begin admitted: failed counts a failure against each key —
// unless it repeats the failed attempt repeat (its fingerprint; "" for none) counted
// within the window — and tells the other instances.
func (t *throttle) end(failed bool, repeat string, keys ...string) {
	if t.settle(true, failed, repeat, keys) && t.tell != nil {
		t.tell(wire.AuthThrottleNote{Failed: slices.DeleteFunc(slices.Clone(keys), func(k string) bool { return k == "" }), Repeat: repeat})
	}
}

// failed counts a failure another instance saw against each key, unless it repeats
// one counted already.
func (t *throttle) failed(repeat string, keys ...string) {
	t.settle(false, true, repeat, keys)
}

// settle records the end of an attempt against each key: one fewer in flight when
// inflight, one more failure when failed and not a repeat. It reports whether it
// counted a failure. Attempts waiting on the keys look again.
func (t *throttle) settle(inflight, failed bool, repeat string, keys []string) (counted bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if failed && repeat != "" {
		if at, ok := t.repeats[repeat]; ok && now.Sub(at) < t.cfg.Window {
			failed = false
		} else {
			if len(t.repeats) >= t.cfg.MaxKeys {
				t.pruneRepeatsLocked(now)
			}
			t.repeats[repeat] = now
		}
	}
	for _, k := range keys {
		if k == "" {
			continue
		}
		f := t.entryLocked(k, now) // the entry may have been pruned meanwhile
		if inflight {
			f.inflight = max(f.inflight-1, 0)
		}
		if failed {
			if f.count == 0 || now.Sub(f.first) >= t.cfg.Window {
				f.count, f.first = 0, now
			}
			f.count++
		}
		if f.count == 0 && f.inflight == 0 {
			delete(t.table(k), k)
		}
	}
	close(t.settled)
	t.settled = make(chan struct{})
	return failed
}

// pruneRepeatsLocked drops the fingerprints older than the window, or all of them
// when that is not enough (letting a repeat count again over exhausting memory).
func (t *throttle) pruneRepeatsLocked(now time.Time) {
	for r, at := range t.repeats {
		if now.Sub(at) >= t.cfg.Window {
			delete(t.repeats, r)
		}
	}
	if len(t.repeats) >= t.cfg.MaxKeys {
		clear(t.repeats)
	}
}

// table returns the map k's failures are counted in: principals for a principal's
// key, addresses for any other.
func (t *throttle) table(k string) map[string]*failures {
	if strings.HasPrefix(k, principalPrefix) {
		return t.principals
	}
	return t.addresses
}

// entryLocked returns k's entry, adding an empty one.
func (t *throttle) entryLocked(k string, now time.Time) *failures {
	keys := t.table(k)
	f, ok := keys[k]
	if !ok {
		if len(keys) >= t.cfg.MaxKeys {
			t.pruneLocked(keys, now)
		}
		f = &failures{first: now}
		keys[k] = f
	}
	return f
}

// succeed forgets the failures of a key (a principal that proved itself) and, when
// it had any, tells the other instances: they counted the same failures.
func (t *throttle) succeed(key string) {
	if t.forget(key) && t.tell != nil {
		t.tell(wire.AuthThrottleNote{Succeeded: key})
	}
}

// forget forgets the failures of a key, reporting whether it had any.
func (t *throttle) forget(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := t.table(key)
	f, ok := keys[key]
	if !ok {
		return false
	}
	had := f.count > 0
	f.count = 0
	if f.inflight == 0 {
		delete(keys, key)
	}
	return had
}

// pruneLocked drops the expired entries of keys (one of the throttle's tables); if
// it is still full it drops them all, which errs on the side of letting attempts
// through over exhausting memory — for that kind of key only.
func (t *throttle) pruneLocked(keys map[string]*failures, now time.Time) {
	for k, f := range keys {
		if now.Sub(f.first) >= t.cfg.Window && f.inflight == 0 {
			delete(keys, k)
		}
	}
	if len(keys) >= t.cfg.MaxKeys {
		clear(keys)
	}
}

// principalPrefix starts a principal's key; an address's starts with "a:".
const principalPrefix = "p:"

func principalKey(p string) string {
	if p == "" {
		return ""
	}
	return principalPrefix + p
}

// addressKey is the key failures from ip count against. An IPv6 client usually
// holds a whole /64 and can take a fresh address in it for every attempt, so IPv6
// addresses count by their /64; an IPv4 address written as IPv6 (::ffff:a.b.c.d)
// counts as itself.
func addressKey(ip string) string {
	if ip == "" {
		return ""
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return "a:" + ip
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		return "a:" + netip.PrefixFrom(a, 64).Masked().String()
	}
	return "a:" + a.String()
}
