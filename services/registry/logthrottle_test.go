package registry

import (
	"strings"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// TestThrottledWarn: a warning repeated for every event while storage is away is
// logged once per interval, the next line counting the ones left out; before, an
// outage logged one line per event.
func TestThrottledWarn(t *testing.T) {
	var logs natstest.Buffer
	w := newThrottledWarn(logs.Logger(), "publishing a session event", time.Hour)
	for range 1000 {
		w.warn("err", "no responders")
	}
	if n := strings.Count(logs.String(), "publishing a session event"); n != 1 {
		t.Fatalf("1000 failures in an interval logged %d lines, want 1:\n%s", n, logs.String())
	}
	w.last = w.last.Add(-time.Hour) // the interval has passed
	w.warn("err", "no responders")
	if !strings.Contains(logs.String(), `"suppressed":999`) {
		t.Fatalf("the line after the interval does not count the 999 left out:\n%s", logs.String())
	}
}
