package registry

import (
	"log/slog"
	"sync"
	"time"
)

// throttledWarn logs a warning that can repeat for every event while storage is
// away — thousands of lines saying the same — at most once per interval, with the
// number of occurrences left out since the last line. Occurrences left out when
// none follows are counted in a line of their own at the end of the interval.
type throttledWarn struct {
	log      *slog.Logger
	msg      string
	interval time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int
	flush      *time.Timer // pending while occurrences are left out
}

func newThrottledWarn(log *slog.Logger, msg string, interval time.Duration) *throttledWarn {
	return &throttledWarn{log: log, msg: msg, interval: interval}
}

// warn logs msg with args, or counts it when a line went out within the interval.
func (w *throttledWarn) warn(args ...any) {
	now := time.Now()
	w.mu.Lock()
	if !w.last.IsZero() && now.Sub(w.last) < w.interval {
		w.suppressed++
		if w.flush == nil {
			w.flush = time.AfterFunc(w.interval-now.Sub(w.last), w.flushSuppressed)
		}
		w.mu.Unlock()
		return
	}
	n := w.suppressed
	w.last, w.suppressed = now, 0
	if w.flush != nil {
		w.flush.Stop()
		w.flush = nil
	}
	w.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	w.log.Warn(w.msg, args...)
}

// flushSuppressed logs how many occurrences were left out when no later one said so.
func (w *throttledWarn) flushSuppressed() {
	w.mu.Lock()
	n := w.suppressed
	w.suppressed, w.flush = 0, nil
	if n > 0 {
		w.last = time.Now()
	}
	w.mu.Unlock()
	if n > 0 {
		w.log.Warn(w.msg, "suppressed", n)
	}
}
