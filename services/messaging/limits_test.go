package messaging

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/filter"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/schematest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestHugeSessionIDGetsAnErrorReply: a session_id far outside the schema
// (maxLength 128, ^[0-9A-Za-z_-]+$) must get an error reply (bad_request), not
// silence: the service echoes the id twice (header and body) in session_not_found,
// the reply exceeds max_payload, and the caller only times out.
func TestHugeSessionIDGetsAnErrorReply(t *testing.T) {
	e := newEnv(t, Config{})
	from := e.open(t, "sender", nil)
	id := strings.Repeat("A", 600_000)
	start := time.Now()
	_, err := e.call(from, wire.SubjectMsgSend, wire.MsgSendRequest{Message: wire.Message{SessionID: id, Path: "chat/x"}})
	var we *wire.Error
	if !errors.As(err, &we) || we.Code == wire.CodeTimeout {
		t.Fatalf("after %v: got %v, want an error reply (bad_request)", time.Since(start).Round(time.Millisecond), err)
	}
	if we.Code != wire.CodeBadRequest {
		t.Fatalf("got %s, want bad_request (session_id violates the schema)", we.Code)
	}
}

// TestMalformedSessionIDIsBadRequest: "a.b" violates the schema's session id
// pattern; the service answers session_not_found instead of bad_request.
func TestMalformedSessionIDIsBadRequest(t *testing.T) {
	e := newEnv(t, Config{})
	from := e.open(t, "sender", nil)
	_, err := e.call(from, wire.SubjectMsgSend, wire.MsgSendRequest{Message: wire.Message{SessionID: "a.b>*", Path: "chat/x"}})
	if !errors.Is(err, wire.ErrBadRequest) {
		t.Fatalf("got %v, want bad_request", err)
	}
}

// TestStreamedLargeResultIsDelivered: a receiver answers with 800 KB (which
// NATS carries); streamed, the result item is base64 in JSON (> 1 MB) and its
// publish fails silently: the stream has start and end but no result, while end
// counts it as ok.
func TestStreamedLargeResultIsDelivered(t *testing.T) {
	e := newEnv(t, Config{})
	from := e.open(t, "sender", nil)
	to := e.open(t, "big", nil)
	e.receive(t, to, func(m *nats.Msg) { _ = m.Respond(make([]byte, 800_000)) })
	items := make(chan *nats.Msg, 16)
	sub, err := e.cc.ChanSubscribe(wire.ResultSubject("", from.id, "big"), items)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := e.cc.Flush(); err != nil {
		t.Fatal(err)
	}
	req := wire.MsgRequestRequest{Message: wire.Message{SessionID: to.id, Path: "chat/x"}, TimeoutMS: 2000, StreamID: "big"}
	if _, err := e.call(from, wire.SubjectMsgRequest, req); err != nil {
		t.Fatalf("request: %v", err)
	}
	var results int
	for {
		var m *nats.Msg
		select {
		case m = <-items:
		case <-time.After(5 * time.Second):
			t.Fatalf("stream stopped after %d results", results)
		}
		var it wire.MsgStreamItem
		if err := json.Unmarshal(m.Data, &it); err != nil {
			t.Fatal(err)
		}
		switch it.Kind {
		case wire.StreamResult:
			results++
		case wire.StreamEnd:
			if results != it.Expected {
				t.Fatalf("end: expected %d with counts %v, but %d result messages arrived", it.Expected, it.Counts, results)
			}
			return
		}
	}
}

// TestResultsTooLargeIsReported: two receivers answer ok with a Content-Type of
// 200,000 '<'. resultsSize counts 1 byte per character, but encoding/json writes
// '<' as \u003c (6 bytes): the reply (≈ 2.4 MB) passes the too_large check, fails to
// publish, and the caller gets no reply at all instead of too_large.
func TestResultsTooLargeIsReported(t *testing.T) {
	e := newEnv(t, Config{})
	from := e.open(t, "sender", nil)
	ct := strings.Repeat("<", 200_000)
	for _, name := range []string{"a", "b"} {
		s := e.open(t, name, map[string]string{"Group": "big"})
		e.receive(t, s, func(m *nats.Msg) {
			r := nats.NewMsg(m.Reply)
			r.Header.Set(wire.HeaderContentType, ct)
			r.Data = []byte("x")
			_ = m.RespondMsg(r)
		})
	}
	start := time.Now()
	_, err := e.call(from, wire.SubjectMsgRequest, wire.MsgRequestRequest{Message: wire.Message{Filter: `Group is "big"`, Path: "chat/x"}, TimeoutMS: 2000})
	if !errors.Is(err, wire.ErrTooLarge) {
		t.Fatalf("after %v: got %v, want too_large", time.Since(start).Round(time.Millisecond), err)
	}
}

// TestHeaderNameNATSRejectsIsBadRequest: Message.Validate only refuses header
// names with space, tab, CR, LF or ':', but nats.go refuses to publish any name
// outside printable ASCII or with one of "()/,;<=>?@[\]{}. Such a header passes
// validation, then every publish fails: a send answers internal (500), a request
// answers 200 with an unavailable error per receiver.
func TestHeaderNameNATSRejectsIsBadRequest(t *testing.T) {
	e := newEnv(t, Config{})
	from := e.open(t, "sender", nil)
	to := e.open(t, "a", nil)
	e.receive(t, to, func(m *nats.Msg) { _ = m.Respond([]byte("ok")) })
	msg := wire.Message{SessionID: to.id, Path: "chat/x", Headers: map[string]string{"X-Id(1)": "v"}}
	_, err := e.call(from, wire.SubjectMsgSend, wire.MsgSendRequest{Message: msg})
	if !errors.Is(err, wire.ErrBadRequest) {
		t.Errorf("send: got %v, want bad_request", err)
	}
	reply, err := e.call(from, wire.SubjectMsgRequest, wire.MsgRequestRequest{Message: msg, TimeoutMS: 1000})
	if !errors.Is(err, wire.ErrBadRequest) {
		var resp wire.MsgRequestResponse
		if reply != nil {
			_ = json.Unmarshal(reply.Data, &resp)
		}
		t.Errorf("request: got %v with results %+v, want bad_request", err, resp.Results)
	}
}

// TestExpensiveFilterDoesNotHoldTheIndex: selecting with an expensive filter (16 KiB
// of "ne" clauses over 4,000 sessions: seconds) must not hold the index while CEL
// runs. A session change waits for the index's write lock while holding the view's
// lock, which every request authenticates through: with the evaluation under the
// read lock, one sender's filter stalled every request of the process for seconds
// (found by review). Here the change must be applied while the selection still runs.
func TestExpensiveFilterDoesNotHoldTheIndex(t *testing.T) {
	ix := newIndex()
	for i := range 4000 {
		ix.upsert(fmt.Sprintf("s%d", i), "-", map[string]string{"Desk": fmt.Sprint(i % 50)})
	}
	var b strings.Builder
	b.WriteString(`Desk ne "x0"`)
	for i := 1; b.Len() < filter.MaxLength-30; i++ {
		fmt.Fprintf(&b, ` and Desk ne "x%d"`, i)
	}
	f, err := filter.Compile(b.String())
	if err != nil {
		t.Fatal(err)
	}
	selected := changeDuringSelection(t, ix, f, context.Background(), map[string]string{"Desk": "1"})
	if n := <-selected; n < 4000 {
		t.Fatalf("selected %d of the 4,000 sessions", n)
	}
}

// TestLongConjunctionDoesNotHoldTheIndex: a plan's lookups run under the index's
// read lock, and a filter can make them cost as much as CEL would: 16 terms of a
// thousand atoms, each selecting every session, made a selection over 100,000
// sessions intersect the whole population 16,000 times, seconds under the lock with
// no look at the context, while every session change waited (found by review). A
// selection costing more than a few scans of the index takes every session as a
// candidate and confirms them with CEL, outside the lock and a chunk at a time.
func TestLongConjunctionDoesNotHoldTheIndex(t *testing.T) {
	var b strings.Builder
	b.WriteString("(")
	for i := range filter.MaxPlanTerms {
		if i > 0 {
			b.WriteString(" or ")
		}
		fmt.Fprintf(&b, "Country in ['', 'x%d']", i)
	}
	b.WriteString(")")
	for b.Len() < filter.MaxLength-20 {
		b.WriteString(" and has Country")
	}
	f, err := filter.Compile(b.String())
	if err != nil {
		t.Fatal(err)
	}
	if p := f.Plan(); len(p.Terms) != filter.MaxPlanTerms || len(p.Terms[0]) < 900 || !p.Exact {
		t.Fatalf("plan of %d terms, the first of %d atoms, exact %v: not the plan meant", len(p.Terms), len(p.Terms[0]), p.Exact)
	}
	fill := func(n int) (*index, map[string]map[string]string) {
		ix, all := newIndex(), map[string]map[string]string{}
		for i := range n {
			id := fmt.Sprintf("s%d", i)
			all[id] = map[string]string{"Country": "", "Desk": fmt.Sprint(i % 50)}
			if i%7 == 0 {
				delete(all[id], "Country")
			}
			ix.upsert(id, "-", all[id])
		}
		return ix, all
	}

	ix, _ := fill(20_000)
	base, cancel := context.WithCancel(context.Background())
	defer cancel()
	changeDuringSelection(t, ix, f, base, map[string]string{"Country": ""})
	cancel() // the rest is CEL over 20,000 sessions: seconds

	// Selected that way, the sessions are those the filter matches.
	small, all := fill(300)
	if got, want := selectIDs(small, f), bruteForce(f, all); !slices.Equal(got, want) || len(want) == 0 {
		t.Fatalf("selected %d sessions, the filter matches %d", len(got), len(want))
	}
}

// checkedCtx is a context that closes second when its Err is called the second
// time.
type checkedCtx struct {
	context.Context
	calls  atomic.Int32
	second chan struct{}
}

func (c *checkedCtx) Err() error {
	if c.calls.Add(1) == 2 {
		close(c.second)
	}
	return c.Context.Err()
}

// TestRequestResultsMemoryIsBounded: a non-streamed request keeps every
// receiver's answer until the last one is in, although a reply can carry at most
// MaxPayload (1 MB here) and is refused with too_large beyond it. 16 receivers
// answering 900 KB while one more is slow make one request hold ~14 MB; with a
// filter matching thousands of sessions and 256 concurrent requests, gigabytes.
func TestRequestResultsMemoryIsBounded(t *testing.T) {
	e := newEnv(t, Config{})
	from := e.open(t, "sender", nil)
	answered := make(chan struct{}, 32)
	for i := range 16 {
		s := e.open(t, fmt.Sprintf("big%d", i), map[string]string{"Group": "g"})
		e.receive(t, s, func(m *nats.Msg) {
			_ = m.Respond(make([]byte, 900_000))
			answered <- struct{}{}
		})
	}
	slow := e.open(t, "slow", map[string]string{"Group": "g"})
	e.receive(t, slow, nil) // never answers: the request waits for its timeout
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC() // and what sync.Pools kept through the first
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	done := make(chan error, 1)
	go func() {
		_, err := e.call(from, wire.SubjectMsgRequest, wire.MsgRequestRequest{Message: wire.Message{Filter: `Group is "g"`, Path: "chat/x"}, TimeoutMS: 4000})
		done <- err
	}()
	for range 16 {
		<-answered
	}
	// The heap is measured once the 16 answers are in the gather: measured before,
	// the request holds less than it will, and the bound passes whatever it keeps.
	natstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		f := e.msg.fan
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, g := range f.gathers {
			g.mu.Lock()
			defer g.mu.Unlock()
			if g.remaining != 1 {
				return fmt.Errorf("%d of the 17 results are not in, want 1 (the slow receiver's)", g.remaining)
			}
			return nil
		}
		return errors.New("the request has no gather")
	})
	runtime.GC()
	runtime.GC() // and what sync.Pools kept through the first
	runtime.ReadMemStats(&ms)
	held := int64(ms.HeapAlloc) - int64(before)
	select {
	case err := <-done:
		t.Fatalf("the request ended (%v) before the heap was measured: its timeout is too short for this machine", err)
	default:
	}
	err := <-done
	if !errors.Is(err, wire.ErrTooLarge) {
		t.Fatalf("got %v, want too_large", err)
	}
	runtime.GC()
	runtime.GC() // and what sync.Pools kept through the first
	runtime.ReadMemStats(&ms)
	after := int64(ms.HeapAlloc) - int64(before)
	// What the request itself held is what its end released; the rest is the
	// connections' buffers, grown for the large messages.
	t.Logf("held during the wait: %d MB; after the request ended: %d MB", held>>20, after>>20)
	if limit := int64(e.msg.cfg.MaxPayload) * 2; held-after > limit {
		t.Fatalf("while waiting for the slow receiver the request held %d MB (a reply carries at most %d MB)",
			(held-after)>>20, e.msg.cfg.MaxPayload>>20)
	}
}

// TestJSONStringLen checks the size estimate of strings against encoding/json.
func TestJSONStringLen(t *testing.T) {
	for _, s := range []string{"", "plain", `"quoted" \ back`, "<a&b>", "\x00\x01\n\r\t\x1f", "héllo wörld ✓",
		"\u2028\u2029", "bad \xff\xfe utf-8", strings.Repeat("<", 1000)} {
		data, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := jsonStringLen(s), len(data)-2; got != want {
			t.Errorf("jsonStringLen(%q) = %d, encoding/json writes %d", s, got, want)
		}
	}
}

// TestLengthsCountCharactersAsTheSchema: the schema bounds content_type (256) and
// header values (4,096) with maxLength, which counts characters, and refuses CR and
// LF in them; the service counted bytes, so a content type of 200 "é" (400 bytes)
// that the schema accepts was refused with bad_request.
func TestLengthsCountCharactersAsTheSchema(t *testing.T) {
	e := newEnv(t, Config{})
	from := e.open(t, "sender", nil)
	to := e.open(t, "a", nil)
	r := e.receive(t, to, nil)
	accepted := []wire.Message{
		{SessionID: to.id, Path: "chat/x", ContentType: strings.Repeat("é", 256)},
		{SessionID: to.id, Path: "chat/x", Headers: map[string]string{"X-Note": strings.Repeat("é", 4096)}},
	}
	for i, m := range accepted {
		body, _ := json.Marshal(wire.MsgSendRequest{Message: m})
		schematest.Validate(t, "msg.send.request", body)
		if _, err := e.call(from, wire.SubjectMsgSend, json.RawMessage(body)); err != nil {
			t.Fatalf("message %d, valid by the schema: got %v, want it delivered", i, err)
		}
		if got := r.next(t); !utf8.ValidString(got.Header.Get(wire.HeaderContentType)) {
			t.Fatalf("message %d: content type %q is not UTF-8", i, got.Header.Get(wire.HeaderContentType))
		}
	}
	refused := []wire.Message{
		{SessionID: to.id, Path: "chat/x", ContentType: strings.Repeat("é", 257)},
		{SessionID: to.id, Path: "chat/x", Headers: map[string]string{"X-Note": strings.Repeat("é", 4097)}},
		{SessionID: to.id, Path: "chat/x", ContentType: "text/plain\r\nX-Evil: 1"},
		{SessionID: to.id, Path: "chat/x", Headers: map[string]string{"X-Note": "a\nb"}},
	}
	for i, m := range refused {
		body, _ := json.Marshal(wire.MsgSendRequest{Message: m})
		if err := schematest.Check("msg.send.request", body); err == nil {
			t.Errorf("message %d: the schema accepts it; want it refused as the service refuses it", i)
		}
		if _, err := e.call(from, wire.SubjectMsgSend, json.RawMessage(body)); !errors.Is(err, wire.ErrBadRequest) {
			t.Errorf("message %d: got %v, want bad_request", i, err)
		}
	}
}

// TestSelectionEndsWithTheContext: confirming candidates with CEL can take minutes
// for an expensive filter over many sessions (16 KiB of "ne" clauses: seconds for
// 4,000), and the selection went on whatever the context said, so a service being
// stopped waited for it however long it took (Stop waits for every handler). It now
// checks the context between chunks and gives up with unavailable.
func TestSelectionEndsWithTheContext(t *testing.T) {
	ix := newIndex()
	for i := range 4000 {
		ix.upsert(fmt.Sprintf("s%d", i), "-", map[string]string{"Desk": fmt.Sprint(i % 50)})
	}
	f, err := filter.Compile(`Desk ne "x"`)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	targets, candidates, _, err := ix.selectFilter(ctx, f)
	if !errors.Is(err, wire.ErrUnavailable) || len(targets) != 0 {
		t.Fatalf("with the context ended: got %d targets of %d candidates and %v; want none and unavailable", len(targets), candidates, err)
	}
	// An exact plan confirms nothing: it is answered whatever the context.
	all, err := filter.Compile("all")
	if err != nil {
		t.Fatal(err)
	}
	if targets, _, _, err := ix.selectFilter(context.Background(), all); err != nil || len(targets) != 4000 {
		t.Fatalf("all: got %d targets and %v, want 4000", len(targets), err)
	}
}

// TestReservedHeaderNamesAgreeWithTheSchema: the service refuses a header it puts on
// deliveries itself (Roster-*, Nats-*, trace context, Content-Type, Status,
// Description) in any letter case, and so does the schema. The schema said so only
// in words, so a client validating its request against it sent one and got
// bad_request (found by review). Names that merely begin alike are anyone's.
func TestReservedHeaderNamesAgreeWithTheSchema(t *testing.T) {
	e := newEnv(t, Config{})
	from := e.open(t, "sender", nil)
	to := e.open(t, "a", nil)
	for _, c := range []struct {
		name     string
		reserved bool
	}{
		{"Roster-Sender", true}, {"roster-x", true}, {"ROSTER-", true}, {"Nats-Msg-Id", true}, {"nAtS-x", true},
		{"traceparent", true}, {"Tracestate", true}, {"BAGGAGE", true}, {"content-type", true},
		{"Status", true}, {"description", true},
		{"Roster", false}, {"RosterX", false}, {"Nats", false}, {"X-Roster-Id", false}, {"Statuses", false},
		{"Content-Types", false}, {"traceparent2", false}, {"Baggage-Id", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := wire.MsgSendRequest{Message: wire.Message{SessionID: to.id, Path: "chat/x", Headers: map[string]string{c.name: "v"}}}
			body, err := json.Marshal(req)
			if err != nil {
				t.Fatal(err)
			}
			schemaErr := schematest.Check("msg.send.request", body)
			_, err = e.call(from, wire.SubjectMsgSend, req)
			if refused := errors.Is(err, wire.ErrBadRequest); refused != c.reserved {
				t.Errorf("service: got %v, want refused %v", err, c.reserved)
			}
			if refused := schemaErr != nil; refused != c.reserved {
				t.Errorf("schema: got %v, want refused %v", schemaErr, c.reserved)
			}
		})
	}
}

// changeDuringSelection starts a selection of f over ix and, once it is seen
// evaluating its second chunk, changes a session of the index: the change must not
// wait for the selection, which must therefore not hold the index's lock while it
// evaluates. It returns the channel the selection's count arrives on.
func changeDuringSelection(t *testing.T, ix *index, f *filter.Filter, base context.Context, change map[string]string) <-chan int {
	t.Helper()
	var selecting atomic.Bool
	selecting.Store(true)
	selected := make(chan int, 1)
	ctx := &checkedCtx{Context: base, second: make(chan struct{})}
	go func() {
		targets, _, _, _ := ix.selectFilter(ctx, f)
		selecting.Store(false)
		selected <- len(targets)
	}()
	// The selection checks ctx before each chunk it evaluates: at the second check
	// it has planned and evaluated a chunk. A change made before the selection
	// took the index would pass however long the evaluation held it.
	select {
	case <-ctx.second:
	case n := <-selected:
		t.Fatalf("the selection ended (%d sessions) without being seen evaluating a second chunk: it ran under the index's lock", n)
	case <-time.After(30 * time.Second):
		t.Fatal("the selection did not reach its second chunk within 30 s")
	}
	ix.upsert("late", "-", change)
	if !selecting.Load() {
		t.Fatal("a session change waited for the whole selection")
	}
	return selected
}
