package logthrottle

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// TestWarner: a warning repeated for every event while storage is away is logged
// once per interval, the next line counting the ones left out; before, an outage
// logged one line per event.
func TestWarner(t *testing.T) {
	var logs natstest.Buffer
	w := New(logs.Logger(), "publishing a session event", time.Hour)
	for range 1000 {
		w.Warn("err", "no responders")
	}
	if n := strings.Count(logs.String(), "publishing a session event"); n != 1 {
		t.Fatalf("1000 failures in an interval logged %d lines, want 1:\n%s", n, logs.String())
	}
	w.last = w.last.Add(-time.Hour) // the interval has passed
	w.Warn("err", "no responders")
	if !strings.Contains(logs.String(), `"suppressed":999`) {
		t.Fatalf("the line after the interval does not count the 999 left out:\n%s", logs.String())
	}
}

// TestWarnerCountsTheLastOnes: occurrences left out that no later line counts (the
// failures stopped within the interval) are counted at its end; they were never
// logged.
func TestWarnerCountsTheLastOnes(t *testing.T) {
	var logs natstest.Buffer
	w := New(logs.Logger(), "publishing a session event", 50*time.Millisecond)
	for range 10 {
		w.Warn("err", "no responders")
	}
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if got := suppressed(t, logs.String()); got != 9 {
			return fmt.Errorf("%d of the 9 left out are counted:\n%s", got, logs.String())
		}
		return nil
	})
}

// TestFlushCountsTheOnesLeftOut: Flush says at once how many were left out since
// the last line, and only once; the interval's end then has nothing to add.
func TestFlushCountsTheOnesLeftOut(t *testing.T) {
	var logs natstest.Buffer
	w := New(logs.Logger(), "request dropped", time.Hour)
	for range 5 {
		w.Warn("path", "work")
	}
	w.Flush()
	if !strings.Contains(logs.String(), `"suppressed":4`) {
		t.Fatalf("Flush did not count the 4 left out:\n%s", logs.String())
	}
	w.Flush()
	if n := strings.Count(logs.String(), "request dropped"); n != 2 {
		t.Fatalf("%d lines after a second Flush with nothing left out, want 2:\n%s", n, logs.String())
	}
	w.mu.Lock()
	pending := w.flush != nil
	w.mu.Unlock()
	if pending {
		t.Fatal("a count is still due at the interval's end after Flush")
	}
}

// suppressed adds up the counts of the lines in logs.
func suppressed(t *testing.T, logs string) int {
	t.Helper()
	total := 0
	for line := range strings.Lines(logs) {
		var n int
		if i := strings.Index(line, `"suppressed":`); i >= 0 {
			if _, err := fmt.Sscanf(line[i+len(`"suppressed":`):], "%d", &n); err != nil {
				t.Fatalf("%q: %v", line, err)
			}
		}
		total += n
	}
	return total
}
