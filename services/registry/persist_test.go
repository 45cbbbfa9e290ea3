package registry

import (
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/sessions"
)

// Sessions that come due together are persisted over half an interval, oldest
// first; a round never writes more than its share.
func TestPersistBatchSpreadsWrites(t *testing.T) {
	t.Parallel()
	const interval = 5 * time.Minute
	every := interval / 10
	base := time.Unix(1_700_000_000, 0)
	stale := func(n int) []*sessions.Record {
		out := make([]*sessions.Record, n)
		for i := range out {
			// Descending, so that oldest-first has to reorder them.
			out[i] = &sessions.Record{ID: newID(), LastActivity: base.Add(-time.Duration(i) * time.Second)}
		}
		return out
	}

	// 100,000 live sessions all due at once: a round (30 s) writes a fifth of them,
	// so they are all written within the five rounds of half an interval, at 667/s.
	got := persistBatch(stale(100_000), 100_000, every, interval)
	if len(got) != 20_000 {
		t.Fatalf("one round writes %d, want 20000", len(got))
	}
	for i := 1; i < len(got); i++ {
		if got[i].LastActivity.Before(got[i-1].LastActivity) {
			t.Fatalf("round not oldest first at %d", i)
		}
	}
	if oldest := base.Add(-99_999 * time.Second); !got[0].LastActivity.Equal(oldest) {
		t.Fatalf("first written %v, want the oldest %v", got[0].LastActivity, oldest)
	}
	perSecond := float64(len(got)) / every.Seconds()
	if perSecond > 2*100_000/interval.Seconds()+1 {
		t.Fatalf("%.0f writes/s in a round, want at most twice the average %.0f", perSecond, 100_000/interval.Seconds())
	}

	// Fewer due than the share: all of them. At least one per round however few live.
	if got := persistBatch(stale(10), 100_000, every, interval); len(got) != 10 {
		t.Fatalf("got %d of 10 due, want all", len(got))
	}
	if got := persistBatch(stale(3), 1, every, interval); len(got) != 1 {
		t.Fatalf("got %d with one live session, want 1", len(got))
	}
}
