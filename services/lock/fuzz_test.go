package lock

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// FuzzRecordOperations drives one lock record through sequences of operations, the
// way the service makes them (locks.go builds the requests, apply.go commitBatch
// applies them in group-commit writes), and checks after every operation and every
// write the properties the state machine's doc comments promise. See fuzzModel for
// how the input bytes are decoded and checkRecord, checkWrite for the properties.
func FuzzRecordOperations(f *testing.F) {
	for _, seed := range append(fuzzSeeds(), fuzzCases()...) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		newFuzzModel(t, data).run()
	})
}

// fuzzSeeds are the seed corpus: sequences of operations with random arguments
// from a fixed seed, mostly arriving with the last record (as without lag), so
// that `go test` runs a few hundred writes of every kind.
func fuzzSeeds() [][]byte {
	// The bytes of each operation after its code (see the fuzzModel methods).
	args := [opCount]int{opAcquire: 7, opRelease: 4, opCancel: 3, opExpire: 1, opDrop: 2, opTick: 1, opSession: 2, opPermission: 1}
	weights := []int{opAcquire, opAcquire, opAcquire, opAcquire, opRelease, opRelease, opCancel,
		opExpire, opDrop, opFlush, opFlush, opFlush, opTick, opTick, opSession, opPermission, opWithdraw}
	rnd := rand.New(rand.NewPCG(1, 2))
	var seeds [][]byte
	for i := range 32 {
		b := []byte{byte(i), byte(i >> 1)} // maxHolders, maxWaiters
		for range 20 + rnd.IntN(60) {
			op := weights[rnd.IntN(len(weights))]
			b = append(b, byte(op))
			for j := range args[op] {
				v := byte(rnd.UintN(256))
				// An arrival's bytes (the last two of acquire and release): mostly
				// the last record, now.
				if (op == opAcquire || op == opRelease) && j >= args[op]-2 && rnd.IntN(4) != 0 {
					v = 0
				}
				if op == opTick {
					v %= 40
				}
				b = append(b, v)
			}
		}
		seeds = append(seeds, b)
	}
	return seeds
}

// fuzzCases are seeds that reach, in a few operations, paths random sequences
// rarely do; the fuzzer mutates from there. Each is maxHolders, maxWaiters and the
// operations' bytes (see the fuzzModel methods).
func fuzzCases() [][]byte {
	const (
		s0, s1, s2      = 0, 1, 2
		a, b, c         = 0, 1, 2
		excl, wait, nid = 1, 4, 16 // acquire flags; shared without excl
		forever         = 2        // acquire's wait byte: WaitForever
	)
	now := []byte{0, 0} // an arrival: the last record, now
	acquire := func(session, id, flags byte, arrival ...byte) []byte {
		if arrival == nil {
			arrival = now
		}
		return append([]byte{opAcquire, session, id, flags, 0, forever}, arrival...)
	}
	flush := []byte{opFlush}
	tick := func(ms byte) []byte { return []byte{opTick, ms} }
	seed := func(maxHolders, maxWaiters byte, ops ...[]byte) []byte {
		b := []byte{maxHolders, maxWaiters}
		for _, op := range ops {
			b = append(b, op...)
		}
		return b
	}
	var own [][]byte // s0 waits with more requests than waitersApiece
	for range waitersApiece + 1 {
		own = append(own, acquire(s0, a, excl|wait|nid), flush)
	}
	return [][]byte{
		// A late copy: s0/a waits (stored at t), is re-issued at t+10 (taken
		// over), and a copy that arrived at t+5, its instance's record showing
		// the first version, is applied after (lag 2: the write before the
		// takeover, at t): refused, the re-issue's reply kept.
		seed(0, 0, acquire(s1, b, excl), flush, acquire(s0, a, excl|wait), flush, tick(10),
			acquire(s0, a, excl|wait), flush, tick(10), acquire(s0, a, excl|wait, 0x12, 15), flush),
		// A re-issue in another mode at the head of the queue, behind a shared
		// holder, is granted, with the shared waiter behind it.
		seed(0, 0, acquire(s1, b, 0), flush, acquire(s0, a, excl|wait), flush, acquire(s2, c, wait), flush,
			acquire(s0, a, wait), flush),
		// A waiting copy answered when its session already holds: s0/b and s0/a
		// wait with s2/c between them; s1's release grants s0/b; s0/a, re-issued,
		// gets the equal lock, and its waiting copy is answered with it.
		seed(0, 0, acquire(s1, b, excl), flush, acquire(s0, b, excl|wait), acquire(s2, c, excl|wait),
			acquire(s0, a, excl|wait), flush, []byte{opRelease, s1, 1, 0, 0}, flush, tick(1),
			acquire(s0, a, excl|wait), flush),
		// The queue's bound (maxWaiters 3), then one session's (waitersApiece).
		seed(0, 1, acquire(s1, b, excl), flush, acquire(s0, a, excl|wait), acquire(s0, b, excl|wait),
			acquire(s2, a, excl|wait), flush, acquire(s2, b, excl|wait), flush),
		seed(0, 0, append([][]byte{acquire(s1, b, excl), flush}, own...)...),
		// s0 waits at the head and loses the grant: the release answers it
		// forbidden and grants s2 behind it.
		seed(0, 0, acquire(s1, b, excl), flush, acquire(s0, a, excl|wait), acquire(s2, c, excl|wait), flush,
			[]byte{opPermission, s0}, []byte{opRelease, s1, 0, 0, 0}, flush),
		// s2 waits behind s0 and loses the grant: the withdrawal takes it out of
		// the queue, s0 keeps its place.
		seed(0, 0, acquire(s1, b, excl), flush, acquire(s0, a, excl|wait), acquire(s2, c, excl|wait), flush,
			[]byte{opPermission, s2}, []byte{opWithdraw}, flush),
	}
}

// Operation codes: the first byte of each operation, modulo opCount.
const (
	opAcquire    = iota // a task: an acquire (acquireBy), wait or try once
	opRelease           // a task: a release (releaseBy)
	opCancel            // a task: a cancel
	opExpire            // a task: an expiry by one of two instances
	opDrop              // a task: the service's release of what a session lost (dropSession)
	opFlush             // write the tasks pending as one batch
	opTick              // the clock moves on
	opSession           // a session's record changes (no write)
	opPermission        // a session gains or loses ACQUIRE_LOCK on the lock (no write)
	opWithdraw          // a task: the withdrawal of the waiters that may not acquire (withdrawForbidden)
	opCount
)

const (
	fuzzSessions  = 4
	fuzzMaxWait   = 100 // ms: Config.MaxWait
	fuzzGrace     = 50  // ms: Config.ExpiryGrace
	fuzzReattach  = 80  // ms: Config.Reattach
	fuzzMaxBatch  = 4   // tasks in one write
	fuzzHistory   = 6   // committed records a lagging view may still have
	fuzzLagStates = 3   // session records a lagging view may still have
)

var fuzzIDs = []string{"a", "b", "c", "d", "e"}

// fuzzInput reads the fuzz bytes; past their end it reads zeros.
type fuzzInput struct {
	b []byte
	i int
}

func (in *fuzzInput) more() bool { return in.i < len(in.b) }

func (in *fuzzInput) byte() byte {
	if in.i >= len(in.b) {
		return 0
	}
	c := in.b[in.i]
	in.i++
	return c
}

func (in *fuzzInput) n(k int) int { return int(in.byte()) % k }

// committed is a record as a write left it, with the revision and time of the
// write and its encoding then (records as read are never changed: checked).
type committed struct {
	rec  *record // nil: absent
	rev  uint64
	at   int64
	json string
}

// fuzzSession is the history of a session's record, as the session views see it.
type fuzzSession struct {
	id     string
	states []sessionState // oldest first
	conns  int
}

func (s *fuzzSession) latest() sessionState { return s.states[len(s.states)-1] }

// lagged returns the state lag records before the latest (a view that lags).
func (s *fuzzSession) lagged(lag int) sessionState {
	return s.states[max(len(s.states)-1-lag, 0)]
}

// fuzzTask is one operation of a batch: apply runs it (maybe inside a write with
// others, as commitBatch does), check checks what it returned right after it ran,
// and answer checks what its handler answers from the write's outcome.
type fuzzTask struct {
	name   string
	apply  func(r *record, now int64, o *outcome)
	check  func(m *fuzzModel, before, after *record)
	answer func(m *fuzzModel, c committed, o *outcome)
	// owes is the reply subject the service owes an answer once the task has run
	// (an acquire queued: endpoint.ErrReplyLater), and dead the reply of a waiter
	// the task took over (see acquire), which is never answered.
	owes, dead string
	// dropsFirst is set for an acquire (acquireBy): the release of what its
	// session's state shows lost comes first, as an operation of its own.
	dropsFirst func(r *record, now int64)
}

type fuzzModel struct {
	t    *testing.T
	in   *fuzzInput
	now  int64
	cur  committed
	hist []committed // the last fuzzHistory committed records, newest last
	// maxHolders and maxWaiters are the service's Config.
	maxHolders, maxWaiters int
	sessions               []*fuzzSession
	sessionRev             uint64
	replies                int
	pending                []*fuzzTask
	// answered are the reply subjects answered so far; owed those the service has
	// yet to answer (waiters queued with them).
	answered map[string]string
	owed     map[string]bool
	// setAt is, for each waiting request (id, session), when the request that
	// set its reply subject arrived: the model's one clock, so a copy that arrived
	// before it is late (lateCopy), and one that arrived after it is not.
	setAt map[[2]string]int64
	// denied are the sessions that may not acquire the lock now (record.allowed):
	// their acquires are refused when they arrive (the handler's check), and a
	// waiter of theirs is never granted.
	denied map[string]bool
	writes int
	ops    []string // for failure messages
}

func newFuzzModel(t *testing.T, data []byte) *fuzzModel {
	in := &fuzzInput{b: data}
	m := &fuzzModel{t: t, in: in, now: 1_000_000, answered: map[string]string{}, owed: map[string]bool{}, setAt: map[[2]string]int64{}, denied: map[string]bool{}}
	m.maxHolders = []int{0, 2}[in.n(2)]
	m.maxWaiters = []int{64, 3}[in.n(2)]
	m.cur = committed{at: m.now, json: "null"}
	m.hist = []committed{m.cur}
	for i := range fuzzSessions {
		m.sessionRev++
		s := &fuzzSession{id: fmt.Sprintf("s%d", i)}
		s.states = []sessionState{{connected: true, conn: s.id + "-c0", rev: m.sessionRev}}
		m.sessions = append(m.sessions, s)
	}
	return m
}

func (m *fuzzModel) fatalf(format string, args ...any) {
	m.t.Helper()
	m.t.Fatalf("write %d, record %s: %s\noperations:\n%s", m.writes, encode(m.cur.rec), fmt.Sprintf(format, args...), joinLines(m.ops))
}

func joinLines(lines []string) string {
	out := ""
	for _, l := range lines[max(len(lines)-40, 0):] {
		out += "  " + l + "\n"
	}
	return out
}

func encode(r *record) string {
	if r == nil {
		return "null"
	}
	b, err := json.Marshal(r)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func (m *fuzzModel) run() {
	for m.in.more() {
		switch m.in.n(opCount) {
		case opAcquire:
			m.queue(m.acquireTask())
		case opRelease:
			m.queue(m.releaseTask())
		case opCancel:
			m.queue(m.cancelTask())
		case opExpire:
			m.queue(m.expireTask())
		case opDrop:
			m.queue(m.dropTask())
		case opFlush:
			m.flush()
		case opTick:
			m.tick()
		case opSession:
			m.sessionChange()
		case opPermission:
			m.permissionChange()
		case opWithdraw:
			m.queue(m.withdrawTask())
		}
	}
	m.flush()
}

func (m *fuzzModel) queue(t *fuzzTask) {
	if t == nil {
		return
	}
	m.pending = append(m.pending, t)
	if len(m.pending) == fuzzMaxBatch {
		m.flush()
	}
}

// tick moves the clock on by a few milliseconds, now and then past doneRetention.
func (m *fuzzModel) tick() {
	step := int64(m.in.byte())
	if step == 255 {
		step = doneRetention + 1
	}
	m.now += step
	m.ops = append(m.ops, fmt.Sprintf("tick %d -> %d", step, m.now))
}

// sessionChange changes a session's record: it loses its connection, comes back on
// it, resumes on another, or closes (for good).
func (m *fuzzModel) sessionChange() {
	s := m.sessions[m.in.n(fuzzSessions)]
	kind := m.in.n(4)
	st := s.latest()
	if st.closed {
		return
	}
	m.sessionRev++
	st.rev = m.sessionRev
	switch kind {
	case 0:
		st.connected = false
	case 1:
		st.connected = true
	case 2:
		s.conns++
		st.connected, st.conn = true, fmt.Sprintf("%s-c%d", s.id, s.conns)
	case 3:
		st = sessionState{closed: true}
	}
	s.states = append(s.states, st)
	m.ops = append(m.ops, fmt.Sprintf("session %s -> %+v", s.id, st))
}

// permissionChange gives a session ACQUIRE_LOCK on the lock, or takes it away (the
// policy changed, or the session's principal).
func (m *fuzzModel) permissionChange() {
	s := m.sessions[m.in.n(fuzzSessions)]
	m.denied[s.id] = !m.denied[s.id]
	m.ops = append(m.ops, fmt.Sprintf("permission %s denied=%v", s.id, m.denied[s.id]))
}

// allowed is record.allowed as the model's sessions have it when a task runs.
func (m *fuzzModel) allowed(session string) bool { return !m.denied[session] }

// withdrawTask is the service's withdrawal of the waiters whose sessions may no
// longer acquire the lock (service.go withdrawForbidden).
func (m *fuzzModel) withdrawTask() *fuzzTask {
	t := &fuzzTask{name: "withdrawForbidden"}
	t.apply = func(r *record, now int64, o *outcome) { r.withdrawForbidden(now, o) }
	t.check = func(m *fuzzModel, before, after *record) {
		for _, w := range after.Waiters {
			if m.denied[w.Session] {
				m.fatalf("%s: waiter %s/%s of a denied session still waits", t.name, w.Session, w.ID)
			}
		}
		// Holds stay (it may grant more).
		for _, h := range before.Holders {
			if _, holds := after.holder(h.Session); !holds {
				m.fatalf("%s: the hold of %s was taken away", t.name, h.Session)
			}
		}
	}
	return t
}

// arrival decodes when a request arrived and what record its instance had then:
// the last committed record (zero bytes), or one of the few before it (its view
// lags), or none; at a time between that record's write and now (now for zero).
func (m *fuzzModel) arrival() arrival {
	b := m.in.byte()
	lag := 0
	if b&0x10 != 0 {
		lag = int(b & 7)
	}
	c := m.hist[max(len(m.hist)-1-lag, 0)]
	at := m.now - int64(m.in.byte())%(m.now-c.at+1)
	if b&8 != 0 {
		return arrival{at: at}
	}
	return arrival{at: at, seen: c.rec}
}

// acquireTask is an acquire as locks.go's acquire builds it: the waiter from the
// session's record as the authenticating view has it (maybe lagging), and the
// request's arrival.
func (m *fuzzModel) acquireTask() *fuzzTask {
	s := m.sessions[m.in.n(fuzzSessions)]
	id := fuzzIDs[m.in.n(len(fuzzIDs))]
	flags := m.in.byte()
	st := s.lagged(m.in.n(fuzzLagStates))
	waitMS := []int64{30, 150, -1}[m.in.n(3)] // -1: WaitForever
	a := m.arrival()
	if st.closed {
		return nil // not authenticated
	}
	if m.denied[s.id] {
		return nil // refused forbidden when it arrives
	}
	mode := wire.LockShared
	if flags&1 != 0 {
		mode = wire.LockExclusive
	}
	scope := wire.ScopeSession
	if flags&2 != 0 {
		scope = wire.ScopeConnection
		if !st.connected {
			return nil // refused: needs the session ACTIVE on the request's connection
		}
	}
	wait := flags&4 != 0
	owner := []string{"i1", "i2"}[flags>>3&1]
	clientID := flags&16 == 0
	m.replies++
	now := a.at // the instance's clock when the request arrived
	w := waiter{
		ID: id, Session: s.id, Mode: mode, Scope: scope, Conn: st.conn, SessionRev: st.rev,
		Reply: fmt.Sprintf("r%d", m.replies), Owner: owner, EnqueuedAt: now, Deadline: now + fuzzMaxWait,
	}
	if wait && waitMS > 0 {
		w.Until = now + waitMS
		w.Deadline = min(w.Deadline, w.Until)
	}
	if !clientID {
		w.ID = fmt.Sprintf("n%d", m.replies) // nuid.Next()
	}
	t := &fuzzTask{name: fmt.Sprintf("acquire %s/%s %s %s wait=%v until=%d clientID=%v st=%+v arrival=%d seen=%v reply=%s",
		w.Session, w.ID, mode, scope, wait, w.Until, clientID, st, a.at, a.seen != nil, w.Reply)}
	var granted bool
	var err error
	t.dropsFirst = func(r *record, now int64) { r.dropSession(w.Session, st, now, &outcome{}) }
	var pre struct {
		holds, waits bool
		oldReply     string
		wasCompleted bool
	}
	key := [2]string{w.ID, w.Session}
	t.apply = func(r *record, now int64, o *outcome) {
		// acquireBy releases what st shows lost first, remembering the ids it
		// answered: a copy of the request that took a lost hold is one of them.
		// What it finds then is what the request meets.
		probe := r.clone()
		t.dropsFirst(probe, now)
		_, pre.holds = probe.holder(w.Session)
		pre.oldReply, pre.waits = "", false
		if i := probe.waiterIndex(w.ID, w.Session); i >= 0 {
			pre.oldReply, pre.waits = probe.Waiters[i].Reply, true
		}
		pre.wasCompleted = probe.completed(w.ID, w.Session)
		granted, err = r.acquireBy(st, a, w, wait, clientID, m.maxWaiters, now, o)
	}
	t.check = func(m *fuzzModel, before, after *record) {
		// acquireBy: what st shows lost is released first; nothing lost stays.
		m.checkNothingLost(after, w.Session, st, "acquireBy")
		// overtaken: judged from the record as read; with none read, never — but
		// for a late copy of a waiter queued earlier in the same write (lateCopy,
		// checked below).
		if errors.Is(err, ErrOvertaken) && before.prior == nil && !(pre.waits && !pre.holds) {
			m.fatalf("%s: ErrOvertaken with no record read (prior nil)", t.name)
		}
		// acquire: granted=true when w's session holds the lock afterwards.
		if _, holds := after.holder(w.Session); granted && !holds {
			m.fatalf("%s: granted, but the session holds nothing afterwards", t.name)
		}
		if granted && err != nil {
			m.fatalf("%s: granted with error %v", t.name, err)
		}
		// A late duplicate (ErrCompleted) is refused only for an id remembered
		// (before, or by the release of what st shows lost).
		if errors.Is(err, ErrCompleted) && !pre.wasCompleted {
			m.fatalf("%s: ErrCompleted for an id not remembered", t.name)
		}
		if !granted && err == nil {
			if !wait {
				m.fatalf("%s: a try-once acquire neither granted nor refused", t.name)
			}
			// Queued (or took its copy's place over): the reply is owed.
			if i := after.waiterIndex(w.ID, w.Session); i < 0 || after.Waiters[i].Reply != w.Reply {
				m.fatalf("%s: answered later, but not queued with its reply", t.name)
			}
			t.owes = w.Reply
		}
		// A request whose id is already waiting takes over that waiter (its reply
		// subject): the old reply is answered by nobody (a known limit, see the
		// docs: the client re-issues). Only when it took the waiter's place over —
		// queued, or granted at the head — not when its session held the lock
		// (the copy is answered with the lock then).
		if wait && err == nil && !pre.holds && pre.oldReply != "" && pre.oldReply != w.Reply {
			t.dead = pre.oldReply
		}
		// lateCopy: a copy of a waiting request, its session not holding, takes
		// the waiter over (queued, granted at the head, or, trying once, ending
		// the wait) only when it arrived after the request that set the waiter's
		// reply subject; it is refused (ErrOvertaken), the waiter untouched, only
		// when it arrived before. One clock here: no skew to excuse either.
		if pre.waits && !pre.holds {
			tookOver := err == nil || errors.Is(err, ErrWouldBlock)
			switch set := m.setAt[key]; {
			case tookOver && a.at < set:
				m.fatalf("%s: a copy that arrived at %d took over the waiter whose reply subject was set by a request that arrived at %d", t.name, a.at, set)
			case errors.Is(err, ErrOvertaken) && a.at >= set:
				m.fatalf("%s: a copy that arrived at %d, after the waiter's reply subject was set (%d), was refused as late", t.name, a.at, set)
			case errors.Is(err, ErrOvertaken):
				if i := after.waiterIndex(w.ID, w.Session); i < 0 || after.Waiters[i].Reply != pre.oldReply {
					m.fatalf("%s: refused as a late copy, but the waiter's reply subject changed (was %s)", t.name, pre.oldReply)
				}
			}
		}
		if i := after.waiterIndex(w.ID, w.Session); i >= 0 && after.Waiters[i].Reply == w.Reply {
			m.setAt[key] = a.at
		}
		// A try-once refusal of a client's id is remembered (acquire doc), and its
		// waiting copy ended.
		if errors.Is(err, ErrWouldBlock) {
			if after.waiterIndex(w.ID, w.Session) >= 0 {
				m.fatalf("%s: refused, but a copy still waits", t.name)
			}
			if clientID && !after.completed(w.ID, w.Session) {
				m.fatalf("%s: a try-once refusal of the client's id is not remembered", t.name)
			}
		}
	}
	// What the handler answers (locks.go acquire), checked against what the write
	// did to this very request: the lock only when its session holds it after the
	// write (or released it in the write), and never another session's.
	t.answer = func(m *fuzzModel, c committed, o *outcome) {
		if !granted {
			return
		}
		released, derr, ok := o.direct(w.ID, w.Session)
		var got *holder
		switch {
		case ok && derr != nil:
		case ok && released != nil:
			got = released
		default:
			i, holds := heldBy(c.rec, w.Session)
			if !holds {
				m.fatalf("%s: granted, and the handler finds no hold of its session after the write (\"released concurrently\")", t.name)
			}
			got = &c.rec.Holders[i]
		}
		if got != nil && got.Session != w.Session {
			m.fatalf("%s: the handler answers the hold of session %s", t.name, got.Session)
		}
	}
	return t
}

// heldBy is record.holder on a record that may be absent (nil).
func heldBy(r *record, session string) (int, bool) {
	if r == nil {
		return -1, false
	}
	return r.holder(session)
}

// releaseTask is a release as locks.go's release makes it: a token of 0, the one
// held as the instance's view or the last write has it, or a wrong one.
func (m *fuzzModel) releaseTask() *fuzzTask {
	s := m.sessions[m.in.n(fuzzSessions)]
	which := m.in.n(4)
	a := m.arrival()
	var token uint64
	switch which {
	case 1:
		if r := m.cur.rec; r != nil {
			if i, ok := r.holder(s.id); ok {
				token = r.Holders[i].Token
			}
		}
	case 2:
		if r := a.seen; r != nil {
			if i, ok := r.holder(s.id); ok {
				token = r.Holders[i].Token
			}
		}
	case 3:
		token = m.cur.rev + 1 // not granted yet
	}
	t := &fuzzTask{name: fmt.Sprintf("release %s token %d arrival=%d seen=%v", s.id, token, a.at, a.seen != nil)}
	var released holder
	var err error
	t.apply = func(r *record, now int64, o *outcome) {
		released, err = r.releaseBy(s.id, token, a, now, o)
	}
	t.check = func(m *fuzzModel, before, after *record) {
		// releaseBy: ErrOvertaken only for a release without a token, judged from
		// the record as read.
		if errors.Is(err, ErrOvertaken) && (token != 0 || before.prior == nil) {
			m.fatalf("%s: ErrOvertaken with token %d, prior %v", t.name, token, before.prior != nil)
		}
		if err != nil {
			return
		}
		// release: the session's hold is gone, and it was the one with the token.
		// (Its session may hold anew: a waiting request of its own was granted.)
		if i, holds := after.holder(s.id); holds && after.Holders[i].Token != 0 {
			m.fatalf("%s: released, but the session still holds the lock", t.name)
		}
		if released.Session != s.id || (token != 0 && released.Token != token) {
			m.fatalf("%s: released %+v", t.name, released)
		}
	}
	return t
}

// cancelTask is a cancel (locks.go cancelWait); remember is the policy's say.
func (m *fuzzModel) cancelTask() *fuzzTask {
	s := m.sessions[m.in.n(fuzzSessions)]
	id := fuzzIDs[m.in.n(len(fuzzIDs))]
	remember := m.in.n(4) != 0
	t := &fuzzTask{name: fmt.Sprintf("cancel %s/%s remember=%v", s.id, id, remember)}
	var waiting, released bool
	var err error
	t.apply = func(r *record, now int64, o *outcome) {
		waiting, released, err = r.cancel(id, s.id, now, remember, o)
	}
	t.check = func(m *fuzzModel, before, after *record) {
		// cancel: the request no longer waits, and no hold answers it.
		if after.waiterIndex(id, s.id) >= 0 {
			m.fatalf("%s: the request still waits", t.name)
		}
		if i, holds := after.holder(s.id); holds && after.Holders[i].answers(id) {
			m.fatalf("%s: the hold still answers the request", t.name)
		}
		if i, holds := after.holder(s.id); released && holds && after.Holders[i].Token != 0 {
			m.fatalf("%s: released, but the session still holds the lock", t.name)
		}
		if (waiting && released) || (err != nil && (waiting || released || !errors.Is(err, ErrNoWaiter))) {
			m.fatalf("%s: waiting %v released %v err %v", t.name, waiting, released, err)
		}
		// An id cancelled, or unknown and remembered, is refused should it arrive.
		if (err == nil || remember) && !after.completed(id, s.id) {
			m.fatalf("%s: the cancelled id is not remembered", t.name)
		}
	}
	return t
}

// expireTask is an expiry by one of two instances (service.go's expiry loop).
func (m *fuzzModel) expireTask() *fuzzTask {
	e := expiry{instance: []string{"i1", "i2"}[m.in.n(2)], grace: fuzzGrace, reattach: fuzzReattach}
	t := &fuzzTask{name: fmt.Sprintf("expire by %s", e.instance)}
	t.apply = func(r *record, now int64, o *outcome) { r.expire(e, now, o) }
	t.check = func(m *fuzzModel, before, after *record) {
		// expire: no waiter is left whose deadline (with the grace) has passed,
		// other than a detached one.
		for _, w := range after.Waiters {
			if w.Reply != "" && w.Deadline+expiryDelay(w, e.instance, e.grace) <= m.now {
				m.fatalf("%s: waiter %s/%s is past its deadline and still attached", t.name, w.Session, w.ID)
			}
		}
	}
	return t
}

// dropTask is the service's release of what a session may no longer hold
// (service.go dropSession), with the session's record as a view has it.
func (m *fuzzModel) dropTask() *fuzzTask {
	s := m.sessions[m.in.n(fuzzSessions)]
	st := s.lagged(m.in.n(fuzzLagStates))
	t := &fuzzTask{name: fmt.Sprintf("dropSession %s st=%+v", s.id, st)}
	t.apply = func(r *record, now int64, o *outcome) { r.dropSession(s.id, st, now, o) }
	t.check = func(m *fuzzModel, before, after *record) { m.checkNothingLost(after, s.id, st, "dropSession") }
	return t
}

// checkNothingLost: after dropSession (also the first step of acquireBy), session
// neither holds nor waits in a way st shows lost.
func (m *fuzzModel) checkNothingLost(r *record, session string, st sessionState, what string) {
	for _, h := range r.Holders {
		if h.Session == session && lostIn(st, h.Scope, h.Conn, h.SessionRev) {
			m.fatalf("%s: %s kept a hold %+v that %+v shows lost", what, session, h, st)
		}
	}
	for _, w := range r.Waiters {
		if w.Session == session && lostIn(st, w.Scope, w.Conn, w.SessionRev) {
			m.fatalf("%s: %s kept a waiter %+v that %+v shows lost", what, session, w, st)
		}
	}
}

// flush writes the pending tasks as one batch, as commitBatch does: applied in
// order to a copy of the record as read, whose prior is that record; written
// (materialized at the next revision) when the outcome says it changed, deleted
// when empty.
func (m *fuzzModel) flush() {
	batch := m.pending
	m.pending = nil
	if len(batch) == 0 {
		return
	}
	m.writes++
	read := m.cur
	r := &record{Name: "x"}
	if read.rec != nil {
		r = read.rec.clone()
	}
	r.maxHolders, r.allowed, r.prior = m.maxHolders, m.allowed, read.rec
	o := &outcome{}
	for _, t := range batch {
		m.ops = append(m.ops, t.name)
		before := r.clone()
		// The ids remembered when the task runs: those past doneRetention are
		// forgotten; and for an acquire, those that the release of what its
		// session lost remembers may push out (doneApiece) those of the session's
		// earlier requests, as they would in a write of its own.
		probe := r.clone()
		probe.forget(m.now, &outcome{})
		if t.dropsFirst != nil {
			t.dropsFirst(probe, m.now)
		}
		done := doneSet(probe)
		granted, removed := grantKeys(o), len(o.removed)
		t.apply(r, m.now, o)
		m.checkRecord(r, t.name)
		// A request id answered for good is never granted while remembered.
		for _, g := range o.granted {
			if !granted[grantKey(g)] && done[[2]string{g.ID, g.Session}] {
				m.fatalf("%s: granted %s/%s, an id answered for good before", t.name, g.Session, g.ID)
			}
			// promote: a waiter of a session that may not acquire the lock is never
			// granted from the queue. A request granted at once was checked when it
			// arrived (before its session lost the grant, maybe), and so was its
			// waiting copy answered with the same lock.
			if !granted[grantKey(g)] && !g.direct && m.denied[g.Session] && !grantedAtOnce(o, g) {
				m.fatalf("%s: granted waiter %s/%s of a session that may not acquire the lock", t.name, g.Session, g.ID)
			}
		}
		// forbid: a waiter is answered forbidden only when its session may not
		// acquire the lock, and its id is remembered — unless later ids of its
		// session pushed it out (doneApiece).
		for _, rm := range o.removed[removed:] {
			if !errors.Is(rm.err, wire.ErrForbidden) {
				continue
			}
			if !m.denied[rm.w.Session] {
				m.fatalf("%s: waiter %s/%s of a session that may acquire the lock answered forbidden", t.name, rm.w.Session, rm.w.ID)
			}
			if !r.completed(rm.w.ID, rm.w.Session) && remembered(r, rm.w.Session) < doneApiece {
				m.fatalf("%s: waiter %s/%s answered forbidden is not remembered", t.name, rm.w.Session, rm.w.ID)
			}
		}
		t.check(m, before, r)
	}
	c := committed{rec: read.rec, rev: read.rev, at: read.at, json: read.json}
	if !o.changed {
		// Not written: the operations must have changed nothing.
		want := read.rec
		if want == nil {
			want = &record{Name: "x"}
		}
		if encode(r) != encode(want) {
			m.fatalf("the batch changed the record to %s but not outcome.changed: the change is lost", encode(r))
		}
	} else {
		rev := read.rev + 1
		r.materialize(rev)
		r.prior, r.allowed = nil, nil
		c = committed{rec: r, rev: rev, at: m.now}
		if r.empty() {
			c.rec = nil
		}
		c.json = encode(c.rec)
		m.checkTokens(read, c)
	}
	m.checkWrite(batch, read, c, o)
	m.cur = c
	m.hist = append(m.hist, c)
	if len(m.hist) > fuzzHistory {
		m.hist = m.hist[1:]
	}
	// The state machine never changes a record as read (prior, arrival.seen).
	for _, h := range m.hist {
		if encode(h.rec) != h.json {
			m.fatalf("committed record at rev %d changed since: %s, was %s", h.rev, encode(h.rec), h.json)
		}
	}
}

// remembered counts the ids of session r remembers.
func remembered(r *record, session string) int {
	n := 0
	for _, d := range r.Done {
		if d.Session == session {
			n++
		}
	}
	return n
}

// grantedAtOnce reports whether g's request was also granted at once in the write
// (acquire answers a waiting copy of it with the same lock).
func grantedAtOnce(o *outcome, g grantee) bool {
	return slices.ContainsFunc(o.granted, func(d grantee) bool { return d.direct && d.ID == g.ID && d.Session == g.Session })
}

func doneSet(r *record) map[[2]string]bool {
	out := map[[2]string]bool{}
	for _, d := range r.Done {
		out[[2]string{d.ID, d.Session}] = true
	}
	return out
}

type grantKeyT struct {
	id, session, reply string
	direct             bool
}

func grantKey(g grantee) grantKeyT {
	return grantKeyT{g.ID, g.Session, g.Reply, g.direct}
}

func grantKeys(o *outcome) map[grantKeyT]bool {
	out := map[grantKeyT]bool{}
	for _, g := range o.granted {
		out[grantKey(g)] = true
	}
	return out
}

// checkRecord checks what must hold of a record after every operation.
func (m *fuzzModel) checkRecord(r *record, op string) {
	m.t.Helper()
	fail := func(format string, args ...any) {
		m.t.Helper()
		m.fatalf("after %s: record %s: %s", op, encode(r), fmt.Sprintf(format, args...))
	}
	// compatible, grant: an exclusive holder holds alone; shared holders are at
	// most maxHolders (when positive).
	for _, h := range r.Holders {
		if h.Mode == wire.LockExclusive && len(r.Holders) > 1 {
			fail("an exclusive holder beside others")
		}
	}
	if m.maxHolders > 0 && len(r.Holders) > m.maxHolders {
		fail("%d holders, more than maxHolders %d", len(r.Holders), m.maxHolders)
	}
	// grant: a session holds once (a second acquire is an equal lock).
	seen := map[string]bool{}
	done := doneSet(r)
	for _, h := range r.Holders {
		if seen[h.Session] {
			fail("session %s holds twice", h.Session)
		}
		seen[h.Session] = true
		// maxAlso bounds the ids a hold remembers besides its own.
		if len(h.Also) > maxAlso {
			fail("hold of %s remembers %d ids", h.Session, len(h.Also))
		}
		// cancel: the last request withdrawn releases the hold, so a hold answers
		// at least one request.
		if h.Request == "" && len(h.Also) == 0 {
			fail("hold of %s answers no request", h.Session)
		}
		// A request answered for good is not answered with a hold still there.
		for _, id := range append([]string{h.Request}, h.Also...) {
			if id != "" && done[[2]string{id, h.Session}] {
				fail("hold of %s answers %s, remembered as answered for good", h.Session, id)
			}
		}
		// Tokens are the revisions of the writes that granted: none from later.
		if h.Token > m.cur.rev {
			fail("hold of %s has token %d, past the last write's revision %d", h.Session, h.Token, m.cur.rev)
		}
	}
	// acquire: a request already waiting is taken over, so a request waits once;
	// a session has at most waitersApiece waiting, the queue at most maxWaiters.
	queued := map[[2]string]bool{}
	perSession := map[string]int{}
	for _, w := range r.Waiters {
		k := [2]string{w.ID, w.Session}
		if queued[k] {
			fail("request %s/%s waits twice", w.Session, w.ID)
		}
		queued[k] = true
		if perSession[w.Session]++; perSession[w.Session] > waitersApiece {
			fail("session %s has more than waitersApiece waiters", w.Session)
		}
		// A waiting request is not one answered for good.
		if done[k] {
			fail("waiter %s/%s is remembered as answered for good", w.Session, w.ID)
		}
	}
	if len(r.Waiters) > m.maxWaiters {
		fail("%d waiters, more than maxWaiters %d", len(r.Waiters), m.maxWaiters)
	}
	// promote: waiters are granted from the head while compatible with the holders
	// (or their session holds already: an equal lock, or ErrUpgrade answered); a
	// waiter whose wait is over is answered instead. So the head is never a waiter
	// the holders admit.
	if len(r.Waiters) > 0 {
		w := r.Waiters[0]
		if _, holds := r.holder(w.Session); holds || r.compatible(w.Mode) {
			fail("the head waiter %s/%s (%s) is admitted by the holders but waits", w.Session, w.ID, w.Mode)
		}
	}
	// remember: at most doneApiece ids of a session, maxDone in all.
	if len(r.Done) > maxDone {
		fail("%d remembered ids", len(r.Done))
	}
	mine := map[string]int{}
	for _, d := range r.Done {
		if mine[d.Session]++; mine[d.Session] > doneApiece {
			fail("more than doneApiece ids of %s remembered", d.Session)
		}
	}
}

// checkTokens: materialize gives the holds granted by a write its revision as
// their token; a hold kept keeps its token. So every token is non-zero and at most
// the current revision, and a new grant's token is greater than every earlier one
// (holds granted by one write share it).
func (m *fuzzModel) checkTokens(read, c committed) {
	if c.rec == nil {
		return
	}
	for _, h := range c.rec.Holders {
		if h.Token == 0 || h.Token > c.rev {
			m.fatalf("hold of %s has token %d after the write at rev %d", h.Session, h.Token, c.rev)
		}
		if h.Token == c.rev {
			continue
		}
		i, held := heldBy(read.rec, h.Session)
		if !held || read.rec.Holders[i].Token != h.Token {
			m.fatalf("hold of %s has token %d, neither its earlier one nor the write's revision %d", h.Session, h.Token, c.rev)
		}
	}
}

// checkWrite checks what a write's outcome answers (apply.go finish) and what the
// handlers answer from it: every waiting request is answered exactly once, for
// what became of it.
func (m *fuzzModel) checkWrite(batch []*fuzzTask, read, c committed, o *outcome) {
	final := c.rec
	if final == nil {
		final = &record{}
	}
	// finish: a granted waiter is answered with its session's hold after the
	// write, or with the hold its session released in the write.
	answers := map[string]string{}
	for _, g := range o.granted {
		if g.released != nil {
			if g.released.Session != g.Session {
				m.fatalf("granted %s/%s answered with the released hold of %s", g.Session, g.ID, g.released.Session)
			}
		} else if i, holds := final.holder(g.Session); !holds {
			m.fatalf("granted %s/%s, but its session holds nothing after the write", g.Session, g.ID)
		} else if h := final.Holders[i]; len(h.Also) < maxAlso && g.ID != "" && !h.answers(g.ID) {
			m.fatalf("granted %s/%s, but the hold %+v does not answer it", g.Session, g.ID, h)
		}
		if g.direct {
			continue
		}
		if g.Reply == "" {
			continue
		}
		if answers[g.Reply] != "" {
			m.fatalf("reply %s answered twice in one write", g.Reply)
		}
		answers[g.Reply] = "granted"
	}
	for _, rm := range o.removed {
		if rm.direct {
			// ungrant moves a grant to the removed, so a request granted at once
			// that is in both was granted again after (a copy, its session's state
			// as a lagging view had it): its handlers answer the grant, which
			// the handler checks (fuzzTask.answer) hold to.
			continue
		}
		if rm.w.Reply == "" {
			continue
		}
		if answers[rm.w.Reply] != "" {
			m.fatalf("reply %s answered twice in one write (%s, then %v)", rm.w.Reply, answers[rm.w.Reply], rm.err)
		}
		answers[rm.w.Reply] = rm.err.Error()
	}
	for reply, a := range answers {
		if prev, ok := m.answered[reply]; ok {
			m.fatalf("reply %s answered again (%s), after %s", reply, a, prev)
		}
		m.answered[reply] = a
	}
	// A waiter still queued has not been answered.
	queued := map[string]bool{}
	for _, w := range final.Waiters {
		if w.Reply == "" {
			continue
		}
		if a, ok := m.answered[w.Reply]; ok {
			m.fatalf("waiter %s/%s still queued with reply %s, answered %s", w.Session, w.ID, w.Reply, a)
		}
		queued[w.Reply] = true
	}
	// Every request held for an answer gets one: its waiter is still queued, or
	// the write answered it — unless a copy took its place over (dead).
	for _, t := range batch {
		if t.owes != "" {
			m.owed[t.owes] = true
		}
		if t.dead != "" {
			delete(m.owed, t.dead)
		}
	}
	for reply := range m.owed {
		_, answered := answers[reply]
		switch {
		case answered:
			delete(m.owed, reply)
		case !queued[reply]:
			m.fatalf("reply %s left the queue unanswered", reply)
		}
	}
	for _, t := range batch {
		if t.answer != nil {
			t.answer(m, c, o)
		}
	}
}
