package registry

import (
	"log/slog"
	"sync"
	"time"
)

// throttledWarn logs a warning that can repeat for every event while storage is
// away — thousands of lines saying the same — at most once per interval, with the
// number of occurrences left out since the last line.
type throttledWarn struct {
	log      *slog.Logger
	msg      string
	interval time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int
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
		w.mu.Unlock()
		return
	}
	n := w.suppressed
	w.last, w.suppressed = now, 0
	w.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	w.log.Warn(w.msg, args...)
}
