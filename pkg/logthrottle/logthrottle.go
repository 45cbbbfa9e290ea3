// Package logthrottle logs a warning that can repeat for every event of a kind —
// while storage is away, or while a process is overloaded — at most once per
// interval, with the number of occurrences left out since the last line: thousands
// of lines a second saying the same hide every other line and cost what the
// process is short of.
package logthrottle

import (
	"log/slog"
	"sync"
	"time"
)

// Warner logs one warning message at most once per interval. The first occurrence
// is logged at once, with its attributes; occurrences within the interval after a
// line are counted, and the next line says how many were left out ("suppressed").
// Occurrences left out when none follows are counted in a line of their own at the
// end of the interval, or at Flush. Safe for concurrent use.
type Warner struct {
	log      *slog.Logger
	msg      string
	interval time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int
	flush      *time.Timer // pending while occurrences are left out
}

// New returns a Warner logging msg to log at most once per interval.
func New(log *slog.Logger, msg string, interval time.Duration) *Warner {
	return &Warner{log: log, msg: msg, interval: interval}
}

// Warn logs the message with args, or counts it when a line went out within the
// interval.
func (w *Warner) Warn(args ...any) {
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

// Flush logs now how many occurrences were left out since the last line, if any,
// rather than at the end of the interval: a program stopping before then would
// never say.
func (w *Warner) Flush() {
	w.mu.Lock()
	if w.flush != nil {
		w.flush.Stop()
		w.flush = nil
	}
	w.mu.Unlock()
	w.flushSuppressed()
}

// flushSuppressed logs how many occurrences were left out when no later one said so.
func (w *Warner) flushSuppressed() {
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
