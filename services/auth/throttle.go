package auth

import (
	"sync"
	"time"
)

// ThrottleConfig limits failed attempts. After MaxFailures failures for one principal
// or one client address within Window, further attempts for it are refused with
// throttled (429) — without checking the credentials — until the window has passed.
// Counts are kept per auth service instance.
type ThrottleConfig struct {
	// MaxFailures is the number of failures allowed per window (default 5).
	MaxFailures int
	// Window is how long failures count (default 1 minute).
	Window time.Duration
	// MaxKeys bounds the memory used (default 100,000 principals and addresses).
	MaxKeys int
}

type failures struct {
	count int
	first time.Time
}

type throttle struct {
	cfg ThrottleConfig
	now func() time.Time

	mu   sync.Mutex
	keys map[string]*failures
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
	if now == nil {
		now = time.Now
	}
	return &throttle{cfg: cfg, now: now, keys: map[string]*failures{}}
}

// blocked reports whether any of keys has used up its failures.
func (t *throttle) blocked(keys ...string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	for _, k := range keys {
		if k == "" {
			continue
		}
		if f, ok := t.keys[k]; ok {
			if now.Sub(f.first) >= t.cfg.Window {
				delete(t.keys, k)
				continue
			}
			if f.count >= t.cfg.MaxFailures {
				return true
			}
		}
	}
	return false
}

// fail counts a failure against each key.
func (t *throttle) fail(keys ...string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	for _, k := range keys {
		if k == "" {
			continue
		}
		f, ok := t.keys[k]
		if !ok || now.Sub(f.first) >= t.cfg.Window {
			if len(t.keys) >= t.cfg.MaxKeys {
				t.pruneLocked(now)
			}
			f = &failures{first: now}
			t.keys[k] = f
		}
		f.count++
	}
}

// succeed forgets the failures of a key (a principal that proved itself).
func (t *throttle) succeed(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.keys, key)
}

// pruneLocked drops expired entries; if the map is still full it drops everything,
// which errs on the side of letting attempts through over exhausting memory.
func (t *throttle) pruneLocked(now time.Time) {
	for k, f := range t.keys {
		if now.Sub(f.first) >= t.cfg.Window {
			delete(t.keys, k)
		}
	}
	if len(t.keys) >= t.cfg.MaxKeys {
		clear(t.keys)
	}
}

func principalKey(p string) string {
	if p == "" {
		return ""
	}
	return "p:" + p
}

func addressKey(ip string) string {
	if ip == "" {
		return ""
	}
	return "a:" + ip
}
