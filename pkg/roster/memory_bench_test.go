package roster_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// BenchmarkProcessMemoryPerSession reports what a whole Roster process (roster
// serve: the embedded server and the four services) holds per session with twelve
// user properties: live, and closed (a tombstone, kept for TombstoneRetention, a
// day by default — with sessions that live minutes, the tombstones of the last day
// are most of the sessions a process knows). The figure is the growth of the heap
// after a collection between 2,000 and 6,000 sessions, so that what does not grow
// with them (the server's write buffers, caches filled once) cancels out.
//
//	go test -run '^$' -bench ProcessMemoryPerSession -benchtime 1x ./pkg/roster/
func BenchmarkProcessMemoryPerSession(b *testing.B) {
	for _, closed := range []bool{false, true} {
		name := "live"
		if closed {
			name = "closed"
		}
		b.Run(name, func(b *testing.B) {
			for range b.N {
				perSession := processMemoryPerSession(b, closed)
				b.ReportMetric(perSession, "B/session")
			}
		})
	}
}

func processMemoryPerSession(b *testing.B, closed bool) float64 {
	p := rostertest.Start(b)
	nc, err := nats.Connect(p.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	props := map[string]string{}
	for i := range 12 {
		props[fmt.Sprintf("Prop%d", i)] = fmt.Sprintf("value-%d", i)
	}
	ctx := context.Background()
	add := func(n int) {
		for range n {
			var resp wire.SessionOpenResponse
			if err := wire.Call(ctx, nc, wire.SubjectSessionOpen, nil, &wire.SessionOpenRequest{TimeoutMS: 600000, Properties: props}, &resp); err != nil {
				b.Fatal(err)
			}
			if !closed {
				continue
			}
			h := nats.Header{}
			h.Set(wire.HeaderSession, resp.Session.ID)
			h.Set(wire.HeaderToken, resp.Token)
			if err := wire.Call(ctx, nc, wire.SubjectSessionClose, h, &wire.SessionCloseRequest{}, nil); err != nil {
				b.Fatal(err)
			}
		}
	}
	const first, then = 2000, 4000
	add(first)
	before := settledHeap()
	add(then)
	after := settledHeap()
	return float64(int64(after)-int64(before)) / then
}

// settledHeap is the live heap once the process has caught up with its last
// writes (the views' watches, the events' acknowledgements) and the server has
// dropped the caches of the blocks it wrote (after 10 s unused): what the sessions
// cost a process that runs for long, not while they were being written.
func settledHeap() uint64 {
	time.Sleep(12 * time.Second)
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
