package messaging

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/filter"
)

// benchSessions is the population of the selection and fan-out benchmarks.
const benchSessions = 100_000

// benchProps returns 12 short properties shaped like a real session's: unique ids,
// addresses and start times, and fields of low cardinality. Department has 100
// values, so an equality on it matches 1% of sessions.
func benchProps(r *rand.Rand, i int) (id string, props map[string]string) {
	id = fmt.Sprintf("%022d", i)
	roles := [][]string{{"client"}, {"client", "operator"}, {"admin"}}[r.IntN(3)]
	return id, map[string]string{
		"$SessionId":  id,
		"$Principal":  "user" + strconv.Itoa(r.IntN(5000)),
		"$Roles":      filter.RolesToString(roles),
		"$ClientIP":   fmt.Sprintf("10.%d.%d.%d", r.IntN(256), r.IntN(256), r.IntN(256)),
		"$Transport":  []string{"TCP", "WEBSOCKET"}[r.IntN(2)],
		"$ServerName": "roster-" + strconv.Itoa(r.IntN(3)),
		"$StartTime":  strconv.FormatInt(1_700_000_000_000+int64(i)*7, 10),
		"$Country":    []string{"UK", "DE", "FR", "US", "JP", "BR"}[r.IntN(6)],
		"$Language":   []string{"en", "de", "fr", "ja", "pt"}[r.IntN(5)],
		"Department":  "d" + strconv.Itoa(i%100),
		"Tier":        strconv.Itoa(r.IntN(4)),
		"Status":      []string{"Open", "Closed", "Away"}[r.IntN(3)],
	}
}

func benchIndex(tb testing.TB, n int) *index {
	tb.Helper()
	r := rand.New(rand.NewPCG(1, 1))
	ix := newIndex()
	for i := range n {
		id, p := benchProps(r, i)
		ix.upsert(id, "UDELIVERYKEY"+strconv.Itoa(i%1000), p)
	}
	return ix
}

// BenchmarkSelect measures choosing the targets of a filter among 100,000 live
// sessions: an equality matching 1% (the index's 1,000 candidates are exactly the
// matches), the same with a clause CEL must confirm on each candidate, "in", a
// hasRoles conjunction, and a filter the index cannot help (ne: CEL evaluates every
// session, which is the scan floor).
func BenchmarkSelect(b *testing.B) {
	ix := benchIndex(b, benchSessions)
	cases := []struct{ name, filter string }{
		{"equality_1pct", `Department is "d42"`},
		{"equality_1pct_cel_confirmed", `Department is "d42" and Status ne "Gone"`},
		{"in_3pct", `Department in ["d1", "d2", "d3"]`},
		{"hasRoles_and_eq", `hasRoles ["operator"] and $Country is "UK"`},
		{"or_of_equalities_and_eq", `(Department is "d1" or Department is "d2") and $Country is "UK"`},
		{"no_index_ne", `Status ne "Open"`},
	}
	for _, c := range cases {
		f, err := filter.Compile(c.filter)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			var matched, candidates int
			for b.Loop() {
				var targets []target
				targets, candidates, _, _ = ix.selectFilter(context.Background(), f)
				matched = len(targets)
			}
			b.ReportMetric(float64(matched), "matched")
			b.ReportMetric(float64(candidates), "candidates")
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/select")
		})
	}
}

// BenchmarkMemoryPerSession measures the heap an index of 100,000 sessions with 12
// short properties holds, per session. Strings are counted: the index interns its own
// copies. BenchmarkInstanceMemoryPerSession measures the index and the sessions view
// together, as an instance holds them (goal: at most 1 KiB).
func BenchmarkMemoryPerSession(b *testing.B) {
	// Build the input first, so that only the index is measured.
	r := rand.New(rand.NewPCG(1, 1))
	ids := make([]string, benchSessions)
	props := make([]map[string]string, benchSessions)
	keys := make([]string, benchSessions)
	for i := range ids {
		ids[i], props[i] = benchProps(r, i)
		keys[i] = "UDELIVERYKEY" + strconv.Itoa(i%1000)
	}
	var perSession float64
	for b.Loop() {
		before := heapInUse()
		start := time.Now()
		ix := newIndex()
		for i := range ids {
			ix.upsert(ids[i], keys[i], props[i])
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms/load")
		perSession = float64(heapInUse()-before) / benchSessions
		runtime.KeepAlive(ix)
	}
	b.ReportMetric(perSession, "B/session")
}

func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
