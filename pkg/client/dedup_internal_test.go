package client

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

func testDedup(window time.Duration, entries, maxAnswer, budget int) *dedup {
	return &dedup{window: window, maxEntries: entries, maxAnswer: maxAnswer, maxBudget: budget}
}

func key(i int) dedupKey { return dedupKey{sender: "S", path: "p", id: strconv.Itoa(i)} }

// TestDedupRemembersWithinTheWindow: a message is a duplicate until the window has
// passed since its handler returned, and taken afresh after.
func TestDedupRemembersWithinTheWindow(t *testing.T) {
	t.Parallel()
	d := testDedup(time.Minute, 100, 0, 0)
	t0 := time.Unix(1000, 0)
	e, dup := d.take(key(1), t0)
	if dup {
		t.Fatal("the first copy: got a duplicate")
	}
	d.finish(e, false, handlerAnswer{}, t0)
	for _, at := range []time.Duration{0, time.Second, time.Minute - time.Nanosecond} {
		if _, dup := d.take(key(1), t0.Add(at)); !dup {
			t.Errorf("a copy %v after the first: got new, want a duplicate", at)
		}
	}
	for _, k := range []dedupKey{{"S", "p", "2"}, {"T", "p", "1"}, {"S", "q", "1"}} {
		if _, dup := d.take(k, t0.Add(time.Second)); dup {
			t.Errorf("%+v: got a duplicate of %+v, want new (sender, path and id make the key)", k, key(1))
		}
	}
	if _, dup := d.take(key(1), t0.Add(time.Minute)); dup {
		t.Error("a copy a window after the first: got a duplicate, want new")
	}
}

// TestDedupRemembersWhileTheHandlerRuns: the window counted from when a message was
// taken, so a copy retried because its handler ran longer than the window (a slow
// request, its requester's retry) found it forgotten and ran the handler again,
// beside the first. A message is now remembered while its handler runs, and for the
// window after it returns.
func TestDedupRemembersWhileTheHandlerRuns(t *testing.T) {
	t.Parallel()
	d := testDedup(time.Minute, 100, 0, 0)
	t0 := time.Unix(1000, 0)
	e, _ := d.take(key(1), t0)
	d.take(key(2), t0.Add(time.Second)) // after it, its handler returned at once
	d.finish(d.seen[key(2)], false, handlerAnswer{}, t0.Add(time.Second))
	if _, dup := d.take(key(1), t0.Add(10*time.Minute)); !dup {
		t.Fatal("a copy while the handler still runs, 10 windows on: got new, want a duplicate")
	}
	if _, dup := d.take(key(2), t0.Add(10*time.Minute)); !dup {
		t.Error("a message after a running one: forgotten before it, want remembered in order")
	}
	d.finish(e, false, handlerAnswer{}, t0.Add(10*time.Minute))
	if _, dup := d.take(key(1), t0.Add(10*time.Minute+time.Minute-time.Nanosecond)); !dup {
		t.Error("a copy within a window of the handler's return: got new, want a duplicate")
	}
	if _, dup := d.take(key(1), t0.Add(11*time.Minute)); dup {
		t.Error("a copy a window after the handler returned: got a duplicate, want new")
	}
}

// TestDedupIsBounded: however many messages come, the window holds at most its
// number of entries (the oldest forgotten first), its queue does not grow with the
// messages ever taken, and the answers it keeps stay within the budget.
func TestDedupIsBounded(t *testing.T) {
	t.Parallel()
	const entries = 64
	d := testDedup(time.Hour, entries, 100, 1000)
	t0 := time.Unix(1000, 0)
	for i := range 10_000 {
		e, _ := d.take(key(i), t0.Add(time.Duration(i)*time.Millisecond))
		d.finish(e, true, handlerAnswer{data: make([]byte, 60)}, t0.Add(time.Duration(i)*time.Millisecond))
		if n := d.len(); n > entries {
			t.Fatalf("after %d messages: %d remembered, want at most %d", i+1, n, entries)
		}
		if d.held > 1000 {
			t.Fatalf("after %d messages: %d bytes of answers kept, want at most 1000", i+1, d.held)
		}
		if cap(d.queue) > 4*entries+128 {
			t.Fatalf("after %d messages: a queue of capacity %d for %d entries", i+1, cap(d.queue), entries)
		}
	}
	if _, dup := d.take(key(9999), t0.Add(10*time.Second)); !dup {
		t.Error("the newest message: got new, want a duplicate")
	}
	e, dup := d.take(key(0), t0.Add(10*time.Second))
	if dup {
		t.Error("the first of 10,000 messages, past the bound: got a duplicate, want new")
	}
	d.finish(e, false, handlerAnswer{}, t0.Add(10*time.Second))
	// All expired: the memory is given back.
	d.take(key(-1), t0.Add(2*time.Hour))
	if n, c, h := d.len(), cap(d.queue), d.held; n != 1 || c > 1 || h != 0 {
		t.Errorf("after the window: %d remembered, queue capacity %d, %d bytes held; want 1, at most 1, 0", n, c, h)
	}
}

// TestDedupKeepsSmallAnswers: a request's answer is kept for its copies when it is
// at most the largest kept and fits the budget; a send has none. An answer's size
// counts its content type ("text/plain", 10 bytes, in every case here).
func TestDedupKeepsSmallAnswers(t *testing.T) {
	t.Parallel()
	d := testDedup(time.Hour, 10, 20, 35)
	now := time.Unix(1000, 0)
	cases := []struct {
		name     string
		answered bool
		data     []byte
		err      *wire.Error
		kept     bool
	}{
		{"small", true, []byte("0123456789"), nil, true},
		{"too large", true, []byte("0123456789a"), nil, false},
		{"over the budget", true, []byte("012345"), nil, false},
		{"an error", true, nil, &wire.Error{Code: wire.CodeNotFound, Message: "no"}, true},
		{"a send", false, nil, nil, false},
	}
	for i, c := range cases {
		e, _ := d.take(key(i), now)
		d.finish(e, c.answered, handlerAnswer{data: c.data, contentType: "text/plain", err: c.err}, now)
		a, ok := d.answer(e)
		if ok != c.kept || ok && (string(a.data) != string(c.data) || a.err != c.err || a.contentType != "text/plain") {
			t.Errorf("%s: got %q, %v, %q, kept %v; want kept %v", c.name, a.data, a.err, a.contentType, ok, c.kept)
		}
	}
}

// TestDedupBoundsErrorAnswersToo: what a registration keeps of its messages is
// bounded by the answers' budget whatever the answer is. An error's message (a
// handler's error text, which may quote a whole payload) and the content type were
// kept beside every entry without being counted — for sends, which have no answer
// to give again, too — so that 4,096 messages whose handler failed with a 1 MiB
// message held 4 GiB for the window.
func TestDedupBoundsErrorAnswersToo(t *testing.T) {
	const maxAnswer, budget = 100, 1000
	d := testDedup(time.Hour, 64, maxAnswer, budget)
	now := time.Unix(1000, 0)
	long := &wire.Error{Code: wire.CodeInternal, Message: strings.Repeat("x", 10*maxAnswer)}
	short := &wire.Error{Code: wire.CodeNotFound, Message: strings.Repeat("y", maxAnswer/2)}
	for i := range 60 {
		e, _ := d.take(key(i), now)
		answered := i%3 != 0 // every third a send
		err := long
		if i%2 == 0 {
			err = short
		}
		d.finish(e, answered, handlerAnswer{err: err, contentType: strings.Repeat("t", 20)}, now)
		a, ok := d.answer(e)
		if want := answered && err == short && d.held <= budget; ok && !want || ok && a.err != err {
			t.Errorf("message %d (answered %v, an error of %d bytes): kept %v (%v), want %v", i, answered, len(err.Message), ok, a.err != nil, want)
		}
		retained := 0
		for _, e := range d.queue[d.head:] {
			retained += len(e.ans.data) + len(e.ans.contentType)
			if e.ans.err != nil {
				retained += len(e.ans.err.Message)
			}
		}
		if retained > budget {
			t.Fatalf("after %d messages: %d bytes of answers retained, want at most the budget (%d)", i+1, retained, budget)
		}
	}
	e, _ := d.take(key(1000), now)
	d.finish(e, true, handlerAnswer{err: long}, now)
	if _, ok := d.answer(e); ok {
		t.Errorf("an error of %d bytes: kept, want not kept (at most %d)", len(long.Message), maxAnswer)
	}
}
