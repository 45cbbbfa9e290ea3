package client

import (
	"sync"
	"time"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// The bounds of the window in which a registration (Handle) recognises a delivery it
// has already handled. The SDK's own retries of a message come within seconds of the
// first attempt (a send's unanswered attempt after sendAttemptTimeout, a request's
// after its timeout and ten seconds, a minute and ten at most); an application that
// retries with MessageID has the same window. Variables for tests.
var (
	// dedupWindow is how long a message id is remembered.
	dedupWindow = 2 * time.Minute
	// dedupMaxEntries bounds the ids one registration remembers: past it the
	// oldest is forgotten early.
	dedupMaxEntries = 4096
	// dedupMaxAnswer is the largest answer to a request kept for a duplicate of
	// it; dedupMaxHeld bounds the answers one registration keeps in all.
	dedupMaxAnswer = 16 << 10
	dedupMaxHeld   = 1 << 20
)

// dedupKey names one message: ids are the sender's, and a path is part of the key
// so that an application using one business key as the id of messages on different
// paths does not lose them.
type dedupKey struct{ sender, path, id string }

// seenMsg is a message a registration has taken: for a request, what it answered.
type seenMsg struct {
	key dedupKey
	// at is when the message was taken, then when its handler returned: the
	// window counts from there.
	at time.Time
	// ended is set, under dedup.mu, when the handler has returned; until then the
	// window does not forget the message.
	ended bool
	// forgotten is set, under dedup.mu, when the message was dropped unhandled
	// (forget): a copy of it is not a duplicate.
	forgotten bool
	// done is closed once the handler has returned; the fields below are set
	// before it closes and not changed after.
	done chan struct{}
	held bool          // the answer is kept (ans), counted in dedup.held
	ans  handlerAnswer // only when held
	size int           // the answer's size (answerSize), kept or not
}

// handlerAnswer is what a handler answered a request: a payload and its content
// type, or an error.
type handlerAnswer struct {
	data        []byte
	contentType string
	err         *wire.Error
}

// dedup remembers the messages one registration has taken, while their handlers
// run and for dedupWindow after, at most dedupMaxEntries of them, forgotten in the
// order they came; a copy of one of them is a duplicate. Memory is bounded: the entries, and the answers kept for requests
// (each at most dedupMaxAnswer, dedupMaxHeld in all).
type dedup struct {
	// The bounds, read once when the registration is made.
	window               time.Duration
	maxEntries           int
	maxAnswer, maxBudget int

	mu    sync.Mutex
	seen  map[dedupKey]*seenMsg
	queue []*seenMsg // oldest first, from head
	head  int
	held  int // bytes of answers kept
}

func newDedup() *dedup {
	return &dedup{window: dedupWindow, maxEntries: dedupMaxEntries, maxAnswer: dedupMaxAnswer, maxBudget: dedupMaxHeld}
}

// take records the message key as taken now and returns its entry, or returns the
// entry of an earlier copy and true.
func (d *dedup) take(key dedupKey, now time.Time) (*seenMsg, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.takeLocked(key, now)
}

// retake returns e, the entry of an earlier copy, and true, unless e was forgotten:
// then it takes e's message anew, as take does.
func (d *dedup) retake(e *seenMsg, now time.Time) (*seenMsg, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !e.forgotten {
		return e, true
	}
	return d.takeLocked(e.key, now)
}

// forget records that e's message was dropped without its handler running: a later
// copy of it is taken as new. e ends now, without an answer, and leaves the window
// as an ended entry does.
func (d *dedup) forget(e *seenMsg, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.seen[e.key] == e {
		delete(d.seen, e.key)
	}
	e.at, e.ended, e.forgotten = now, true, true
	close(e.done)
}

func (d *dedup) takeLocked(key dedupKey, now time.Time) (*seenMsg, bool) {
	d.expire(now)
	if e, ok := d.seen[key]; ok {
		return e, true
	}
	if d.seen == nil {
		d.seen = map[dedupKey]*seenMsg{}
	}
	for len(d.queue)-d.head >= d.maxEntries {
		d.drop()
	}
	e := &seenMsg{key: key, at: now, done: make(chan struct{})}
	d.seen[key] = e
	d.queue = append(d.queue, e)
	return e, false
}

// expire forgets, oldest first, the entries whose handler returned a window ago. A
// handler still running keeps its message, and those after it, remembered: a copy
// retried because it ran long must not run it again (the number of entries still
// bounds them).
func (d *dedup) expire(now time.Time) {
	for d.head < len(d.queue) {
		if e := d.queue[d.head]; !e.ended || now.Sub(e.at) < d.window {
			break
		}
		d.drop()
	}
	if d.head == len(d.queue) { // empty: give the memory back
		d.queue, d.head = nil, 0
	}
}

// drop forgets the oldest entry. The queue is compacted once its dead front is half
// of it, so that it does not grow with the messages ever taken.
func (d *dedup) drop() {
	e := d.queue[d.head]
	d.queue[d.head] = nil
	d.head++
	if d.seen[e.key] == e {
		delete(d.seen, e.key)
	}
	if e.held {
		d.held -= e.size
	}
	if d.head > 64 && d.head*2 >= len(d.queue) {
		n := copy(d.queue, d.queue[d.head:])
		clear(d.queue[n:])
		d.queue, d.head = d.queue[:n], 0
	}
}

// len is the number of messages remembered.
func (d *dedup) len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.seen)
}

// finish records that the handler of e's message has returned, now, with its answer
// when the message was a request (answered), and releases the copies waiting for
// it. The answer is kept if it is small enough and the registration's budget allows;
// a send has none to keep. Its size counts all of it, an error's message and the
// content type included: uncounted, they were kept beside every entry, a send's
// too, and a handler failing with its payload quoted in the error held that much
// per message for the window (TestDedupBoundsErrorAnswersToo).
func (d *dedup) finish(e *seenMsg, answered bool, a handlerAnswer, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e.size = answerSize(a)
	e.at, e.ended = now, true
	if answered && e.size <= d.maxAnswer && d.held+e.size <= d.maxBudget && d.seen[e.key] == e {
		e.held = true
		e.ans = handlerAnswer{
			data:        append([]byte(nil), a.data...), // the handler may reuse its buffer
			contentType: a.contentType,
			err:         a.err,
		}
		d.held += e.size
	}
	close(e.done)
}

// answerSize is the memory an answer keeps: its payload, content type and error
// message.
func answerSize(a handlerAnswer) int {
	n := len(a.data) + len(a.contentType)
	if a.err != nil {
		n += len(a.err.Message)
	}
	return n
}

// answer returns the answer recorded for e, once finish has run: ok is false when
// it was not kept.
func (d *dedup) answer(e *seenMsg) (handlerAnswer, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return e.ans, e.held
}
