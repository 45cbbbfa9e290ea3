package messaging

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/schematest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

func TestSendToSessionAndFilter(t *testing.T) { forEachView(t, testSendToSessionAndFilter) }

func testSendToSessionAndFilter(t *testing.T, newEnv func(*testing.T, Config) *env) {
	e := newEnv(t, Config{})
	from := e.open(t, "sender", nil)
	a := e.open(t, "a", map[string]string{"Department": "Sales"})
	b := e.open(t, "b", map[string]string{"Department": "Sales"})
	c := e.open(t, "c", map[string]string{"Department": "Payroll"})
	ra, rb, rc := e.receive(t, a, nil), e.receive(t, b, nil), e.receive(t, c, nil)

	req := wire.MsgSendRequest{Message: wire.Message{SessionID: a.id, Path: "chat/room1", ContentType: "text/plain",
		Payload: []byte("hello"), Headers: map[string]string{"X-Kind": "greeting"}}}
	body, _ := json.Marshal(req)
	schematest.Validate(t, "msg.send.request", body)
	reply, err := e.call(from, wire.SubjectMsgSend, req)
	if err != nil {
		t.Fatalf("send to a: %v", err)
	}
	schematest.Validate(t, "msg.send.response", reply.Data)
	var resp wire.MsgSendResponse
	_ = json.Unmarshal(reply.Data, &resp)
	if resp.Delivered != 1 {
		t.Fatalf("send to one session: got delivered %d, want 1", resp.Delivered)
	}
	m := ra.next(t)
	if got, want := m.Subject, wire.DeliverSubject("", a.id, "chat/room1"); got != want {
		t.Errorf("delivery subject: got %s, want %s", got, want)
	}
	_, id, path, err := wire.ParseDeliverSubject(m.Subject)
	if err != nil || id != a.id || path != "chat/room1" {
		t.Errorf("ParseDeliverSubject(%s) = %s, %s, %v; want %s, chat/room1", m.Subject, id, path, err, a.id)
	}
	if string(m.Data) != "hello" || m.Header.Get(wire.HeaderSender) != from.id ||
		m.Header.Get(wire.HeaderContentType) != "text/plain" || m.Header.Get("X-Kind") != "greeting" {
		t.Errorf("delivery: got %q with headers %v; want hello from %s as text/plain with X-Kind", m.Data, m.Header, from.id)
	}

	reply, err = e.call(from, wire.SubjectMsgSend, wire.MsgSendRequest{Message: wire.Message{Filter: `Department is "Sales"`, Path: "orders/updates", Payload: []byte("x")}})
	if err != nil {
		t.Fatalf("send to filter: %v", err)
	}
	_ = json.Unmarshal(reply.Data, &resp)
	if resp.Delivered != 2 {
		t.Fatalf("send to Department is Sales: got delivered %d, want 2", resp.Delivered)
	}
	for _, r := range []*receiver{ra, rb} {
		if m := r.next(t); m.Header.Get(wire.HeaderContentType) != wire.DefaultContentType || !strings.HasSuffix(m.Subject, ".orders.updates") {
			t.Errorf("filter delivery: got %s with content type %q", m.Subject, m.Header.Get(wire.HeaderContentType))
		}
	}
	if n := rc.count(); n != 0 {
		t.Errorf("the Payroll session got %d deliveries, want 0", n)
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, Config{MaxPayload: 4096})
	from := e.open(t, "sender", nil)
	to := e.open(t, "a", nil)
	cases := []struct {
		name    string
		subject string
		from    session
		body    any
		code    wire.Code
		message string // a substring of the error message
	}{
		{"invalid filter", wire.SubjectMsgSend, from, wire.MsgSendRequest{Message: wire.Message{Filter: `Department is`, Path: "chat/x"}}, wire.CodeInvalidFilter, "offset 13"},
		{"unknown session", wire.SubjectMsgSend, from, wire.MsgSendRequest{Message: wire.Message{SessionID: "NoSuchSession000000000", Path: "chat/x"}}, wire.CodeSessionNotFound, "NoSuchSession000000000"},
		{"empty path", wire.SubjectMsgSend, from, wire.MsgSendRequest{Message: wire.Message{SessionID: to.id, Path: ""}}, wire.CodeInvalidName, "empty"},
		{"dotted path", wire.SubjectMsgRequest, from, wire.MsgRequestRequest{Message: wire.Message{SessionID: to.id, Path: "chat.x"}}, wire.CodeInvalidName, "'.'"},
		{"wildcard path", wire.SubjectMsgSend, from, wire.MsgSendRequest{Message: wire.Message{SessionID: to.id, Path: "chat/>"}}, wire.CodeInvalidName, "'>'"},
		{"oversized payload", wire.SubjectMsgSend, from, wire.MsgSendRequest{Message: wire.Message{SessionID: to.id, Path: "chat/x", Payload: make([]byte, 5000)}}, wire.CodeTooLarge, "at most"},
		{"bad JSON", wire.SubjectMsgSend, from, json.RawMessage(`{"path": 7}`), wire.CodeBadRequest, "path"},
		{"unknown field", wire.SubjectMsgSend, from, json.RawMessage(`{"path": "chat/x", "to": "x"}`), wire.CodeBadRequest, "to"},
		// encoding/json alone takes "Path" for "path" and "SESSION_ID" for
		// "session_id" (the message was delivered); the schema has no such fields.
		{"field in another case", wire.SubjectMsgSend, from, json.RawMessage(`{"Path": "chat/x", "session_id": "` + to.id + `"}`), wire.CodeBadRequest, `"Path"`},
		{"embedded field in another case", wire.SubjectMsgRequest, from, json.RawMessage(`{"path": "chat/x", "SESSION_ID": "` + to.id + `", "timeout_ms": 10}`), wire.CodeBadRequest, `"SESSION_ID"`},
		{"field named twice", wire.SubjectMsgSend, from, json.RawMessage(`{"path": "chat/x", "path": "orders/x", "session_id": "` + to.id + `"}`), wire.CodeBadRequest, "twice"},
		{"header named twice", wire.SubjectMsgSend, from, json.RawMessage(`{"path": "chat/x", "session_id": "` + to.id + `", "headers": {"X-A": "1", "X-A": "2"}}`), wire.CodeBadRequest, "twice"},
		{"no session has that id", wire.SubjectMsgSend, from, wire.MsgSendRequest{Message: wire.Message{SessionID: "not-a-session_id", Path: "chat/x"}}, wire.CodeBadRequest, "22 letters or digits"},
		{"no receiver", wire.SubjectMsgSend, from, wire.MsgSendRequest{Message: wire.Message{Path: "chat/x"}}, wire.CodeBadRequest, "session_id or filter"},
		{"both receivers", wire.SubjectMsgSend, from, wire.MsgSendRequest{Message: wire.Message{SessionID: to.id, Filter: "all", Path: "chat/x"}}, wire.CodeBadRequest, "exclusive"},
		{"reserved header", wire.SubjectMsgSend, from, wire.MsgSendRequest{Message: wire.Message{SessionID: to.id, Path: "chat/x", Headers: map[string]string{"Roster-Sender": "me"}}}, wire.CodeBadRequest, "reserved"},
		{"timeout too long", wire.SubjectMsgRequest, from, wire.MsgRequestRequest{Message: wire.Message{SessionID: to.id, Path: "chat/x"}, TimeoutMS: 600000}, wire.CodeBadRequest, "timeout_ms"},
		{"no session", wire.SubjectMsgSend, session{}, wire.MsgSendRequest{Message: wire.Message{SessionID: to.id, Path: "chat/x"}}, wire.CodeUnauthenticated, "Roster-Session"},
		{"wrong token", wire.SubjectMsgSend, session{id: from.id, token: "nope"}, wire.MsgSendRequest{Message: wire.Message{SessionID: to.id, Path: "chat/x"}}, wire.CodeInvalidToken, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.call(c.from, c.subject, c.body)
			var we *wire.Error
			if !errors.As(err, &we) {
				t.Fatalf("got %v, want a %s error", err, c.code)
			}
			if we.Code != c.code || !strings.Contains(we.Message, c.message) {
				t.Fatalf("got %s %q, want %s containing %q", we.Code, we.Message, c.code, c.message)
			}
			body, _ := json.Marshal(wire.ErrorBody{Error: we})
			schematest.Validate(t, "error", body)
		})
	}
}

func TestPermissions(t *testing.T) {
	e := newEnv(t, Config{})
	direct := e.open(t, "direct", nil)
	nobody := e.open(t, "nobody", nil)
	to := e.open(t, "a", nil)
	cases := []struct {
		name string
		from session
		msg  wire.Message
	}{
		{"filter without SEND_TO_FILTER", direct, wire.Message{Filter: "all", Path: "chat/x"}},
		{"session on a path outside the grant", direct, wire.Message{SessionID: to.id, Path: "orders/x"}},
		{"no grant at all", nobody, wire.Message{SessionID: to.id, Path: "chat/x"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.call(c.from, wire.SubjectMsgRequest, wire.MsgRequestRequest{Message: c.msg})
			if !errors.Is(err, wire.ErrForbidden) {
				t.Fatalf("got %v, want forbidden", err)
			}
			if we := err.(*wire.Error); we.Status() != 403 {
				t.Fatalf("got status %d, want 403", we.Status())
			}
		})
	}
	if _, err := e.call(direct, wire.SubjectMsgSend, wire.MsgSendRequest{Message: wire.Message{SessionID: to.id, Path: "chat/x/y"}}); err != nil {
		t.Fatalf("SEND_TO_SESSION on chat/** to chat/x/y: %v", err)
	}
}

// requestEnv opens a sender and four receivers that answer in four ways: ok, with an
// error, never (slow), and not at all because nobody subscribes (gone).
func requestEnv(t *testing.T) (e *env, from session, ids map[string]string, release func()) {
	e = newEnv(t, Config{})
	from = e.open(t, "sender", nil)
	ok := e.open(t, "ok", map[string]string{"Group": "g"})
	failing := e.open(t, "failing", map[string]string{"Group": "g"})
	slow := e.open(t, "slow", map[string]string{"Group": "g"})
	gone := e.open(t, "gone", map[string]string{"Group": "g"})
	e.receive(t, ok, func(m *nats.Msg) {
		r := nats.NewMsg(m.Reply)
		r.Header.Set(wire.HeaderContentType, "text/plain")
		r.Data = append([]byte("pong:"), m.Data...)
		_ = m.RespondMsg(r)
	})
	e.receive(t, failing, func(m *nats.Msg) { respondError(m, wire.Errorf(wire.CodeConflict, "not now")) })
	held := make(chan *nats.Msg, 16)
	e.receive(t, slow, func(m *nats.Msg) { held <- m })
	release = func() {
		for {
			select {
			case m := <-held:
				_ = m.Respond([]byte("too late"))
			default:
				return
			}
		}
	}
	t.Cleanup(release)
	ids = map[string]string{ok.id: "ok", failing.id: "failing", slow.id: "slow", gone.id: "gone"}
	return e, from, ids, release
}

func checkResults(t *testing.T, ids map[string]string, results []wire.MsgResult) {
	t.Helper()
	want := map[string]wire.MsgStatus{"ok": wire.StatusOK, "failing": wire.StatusError, "slow": wire.StatusTimeout, "gone": wire.StatusGone}
	if len(results) != len(ids) {
		t.Fatalf("got %d results, want %d", len(results), len(ids))
	}
	for _, r := range results {
		name := ids[r.SessionID]
		if r.Status != want[name] {
			t.Errorf("%s receiver: got status %s (%v), want %s", name, r.Status, r.Error, want[name])
		}
		switch name {
		case "ok":
			if string(r.Payload) != "pong:ping" || r.ContentType != "text/plain" {
				t.Errorf("ok receiver: got %q (%s), want pong:ping (text/plain)", r.Payload, r.ContentType)
			}
		case "failing":
			if r.Error == nil || r.Error.Code != wire.CodeConflict || r.Error.Message != "not now" {
				t.Errorf("failing receiver: got error %v, want conflict: not now", r.Error)
			}
		}
	}
}

func TestRequestToFilterReportsEachReceiver(t *testing.T) {
	e, from, ids, _ := requestEnv(t)
	req := wire.MsgRequestRequest{Message: wire.Message{Filter: `Group is "g"`, Path: "orders/ask", Payload: []byte("ping")}, TimeoutMS: 1000}
	body, _ := json.Marshal(req)
	schematest.Validate(t, "msg.request.request", body)
	reply, err := e.call(from, wire.SubjectMsgRequest, req)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	schematest.Validate(t, "msg.request.response", reply.Data)
	var resp wire.MsgRequestResponse
	_ = json.Unmarshal(reply.Data, &resp)
	if resp.Expected != 4 {
		t.Fatalf("got expected %d, want 4", resp.Expected)
	}
	checkResults(t, ids, resp.Results)
}

func TestRequestStreamsResults(t *testing.T) {
	e, from, ids, release := requestEnv(t)
	items := make(chan *nats.Msg, 16)
	sub, err := e.cc.ChanSubscribe(wire.ResultSubject("", from.id, "s1"), items)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	req := wire.MsgRequestRequest{Message: wire.Message{Filter: `Group is "g"`, Path: "orders/ask", Payload: []byte("ping")}, TimeoutMS: 1000, StreamID: "s1"}
	reply, err := e.call(from, wire.SubjectMsgRequest, req)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	schematest.Validate(t, "msg.request.response", reply.Data)
	var resp wire.MsgRequestResponse
	_ = json.Unmarshal(reply.Data, &resp)
	if resp.Expected != 4 || resp.Results != nil {
		t.Fatalf("streaming reply: got %+v, want expected 4 and no results", resp)
	}
	var kinds []wire.MsgStreamKind
	var results []wire.MsgResult
	var end wire.MsgStreamItem
	for end.Kind != wire.StreamEnd {
		var m *nats.Msg
		select {
		case m = <-items:
		case <-time.After(5 * time.Second):
			t.Fatalf("stream stopped after %v", kinds)
		}
		schematest.Validate(t, "msg.stream", m.Data)
		var it wire.MsgStreamItem
		if err := json.Unmarshal(m.Data, &it); err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, it.Kind)
		switch it.Kind {
		case wire.StreamResult:
			results = append(results, *it.Result)
		case wire.StreamEnd:
			end = it
		}
	}
	if kinds[0] != wire.StreamStart || len(kinds) != 6 {
		t.Fatalf("stream kinds: got %v, want start, 4 results, end", kinds)
	}
	checkResults(t, ids, results)
	want := map[wire.MsgStatus]int{wire.StatusOK: 1, wire.StatusError: 1, wire.StatusTimeout: 1, wire.StatusGone: 1}
	if end.Expected != 4 || len(end.Counts) != 4 || end.Counts[wire.StatusOK] != 1 {
		t.Fatalf("end: got %+v, want expected 4 and counts %v", end, want)
	}
	release() // a late answer is ignored
}

// TestFlowControl holds requests at a receiver until MaxInFlight are in flight: the
// next one gets limit_exceeded for that session, not a silent drop, and answering
// frees the slots.
func TestFlowControl(t *testing.T) {
	const limit = 3
	e := newEnv(t, Config{MaxInFlight: limit})
	from := e.open(t, "sender", nil)
	to := e.open(t, "busy", nil)
	held := make(chan *nats.Msg, 2*limit)
	e.receive(t, to, func(m *nats.Msg) { held <- m })
	for i := range limit {
		req := wire.MsgRequestRequest{Message: wire.Message{SessionID: to.id, Path: "chat/x"}, TimeoutMS: 30000, StreamID: "held" + string(rune('a'+i))}
		if _, err := e.call(from, wire.SubjectMsgRequest, req); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if n := len(held); n < limit {
			return errors.New("requests not delivered yet")
		}
		return nil
	})
	over := func() wire.MsgResult {
		reply, err := e.call(from, wire.SubjectMsgRequest, wire.MsgRequestRequest{Message: wire.Message{SessionID: to.id, Path: "chat/x"}, TimeoutMS: 200})
		if err != nil {
			t.Fatalf("request over the limit: %v", err)
		}
		var resp wire.MsgRequestResponse
		_ = json.Unmarshal(reply.Data, &resp)
		if len(resp.Results) != 1 {
			t.Fatalf("got %d results, want 1", len(resp.Results))
		}
		return resp.Results[0]
	}
	if r := over(); r.Status != wire.StatusLimitExceeded || r.Error == nil || r.Error.Code != wire.CodeLimitExceeded {
		t.Fatalf("request %d: got %s (%v), want limit_exceeded", limit+1, r.Status, r.Error)
	}
	for range limit {
		m := <-held
		_ = m.Respond([]byte("done"))
	}
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		e.msg.fan.inflight.mu.Lock()
		defer e.msg.fan.inflight.mu.Unlock()
		if n := e.msg.fan.inflight.n[to.id]; n != 0 {
			return errors.New("slots not released yet")
		}
		return nil
	})
	// The receiver holds this one too; it is delivered (not refused) and times out.
	if r := over(); r.Status != wire.StatusTimeout {
		t.Fatalf("after the answers: got %s (%v), want the request delivered (timeout)", r.Status, r.Error)
	}
	if DefaultMaxInFlight != 255 {
		t.Fatalf("DefaultMaxInFlight is %d, want 255 (seed 003)", DefaultMaxInFlight)
	}
}

// TestTraceContinuity checks the fan-out span and its attributes, and that the
// receiver's handler span joins the trace through the delivery's headers.
func TestTraceContinuity(t *testing.T) {
	e := newEnv(t, Config{})
	from := e.open(t, "sender", nil)
	to := e.open(t, "a", map[string]string{"Department": "Sales"})
	r := e.receive(t, to, nil)
	if _, err := e.call(from, wire.SubjectMsgSend, wire.MsgSendRequest{Message: wire.Message{Filter: `Department is "Sales"`, Path: "chat/x"}}); err != nil {
		t.Fatal(err)
	}
	m := r.next(t)
	// The receiver's handler, as the SDK runs it.
	ctx := wire.Extract(context.Background(), m.Header)
	_, span := e.tp.Tracer("receiver").Start(ctx, "handle chat/x")
	span.End()

	var fan, handler sdktrace.ReadOnlySpan
	for _, s := range e.spans.Ended() {
		switch s.Name() {
		case "msg.send fan-out":
			fan = s
		case "handle chat/x":
			handler = s
		}
	}
	if fan == nil || handler == nil {
		t.Fatalf("spans: fan-out %v, handler %v; want both", fan != nil, handler != nil)
	}
	if handler.Parent().SpanID() != fan.SpanContext().SpanID() || handler.SpanContext().TraceID() != fan.SpanContext().TraceID() {
		t.Fatalf("handler span's parent is %s in trace %s, want the fan-out span %s in trace %s",
			handler.Parent().SpanID(), handler.SpanContext().TraceID(), fan.SpanContext().SpanID(), fan.SpanContext().TraceID())
	}
	if !fan.Parent().IsValid() {
		t.Error("the fan-out span has no parent; want the endpoint's server span")
	}
	attrs := map[attribute.Key]attribute.Value{}
	for _, kv := range fan.Attributes() {
		attrs[kv.Key] = kv.Value
	}
	// The filter's shape, without the value it looks for (a session's property).
	if attrs["roster.filter"].AsString() != `Department is ?` || attrs["roster.candidates"].AsInt64() != 1 ||
		attrs["roster.matched"].AsInt64() != 1 || !attrs["roster.index_used"].AsBool() {
		t.Fatalf("fan-out span attributes: got %v", fan.Attributes())
	}
	if !strings.HasPrefix(m.Header.Get("traceparent"), "00-") {
		t.Fatalf("delivery headers %v: want a lowercase traceparent", m.Header)
	}
}

// TestClosedSessionNotSentTo closes a session through the registry: once the
// messaging instance has applied the close, the session is in no selection and a
// send naming it gets session_closed.
func TestClosedSessionNotSentTo(t *testing.T) { forEachView(t, testClosedSessionNotSentTo) }

func testClosedSessionNotSentTo(t *testing.T, newEnv func(*testing.T, Config) *env) {
	e := newEnv(t, Config{})
	from := e.open(t, "sender", nil)
	live := e.open(t, "a", map[string]string{"Group": "g"})
	closing := e.open(t, "b", map[string]string{"Group": "g"})
	all := make(chan *nats.Msg, 64)
	watcher := e.srv.ClientConn(t)
	sub, err := watcher.ChanSubscribe(wire.DeliverPrefix+".>", all)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := watcher.Flush(); err != nil { // the subscription is in place before any delivery
		t.Fatal(err)
	}

	if err := wire.Call(context.Background(), e.cc, wire.SubjectSessionClose, closing.header(), wire.SessionCloseRequest{}, nil); err != nil {
		t.Fatalf("close: %v", err)
	}
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if rec, ok := e.msg.view.Get(closing.id); !ok || !rec.Closed() {
			return errors.New("close not applied yet")
		}
		return nil
	})
	// The index dropped the session before the view showed it closed.
	if _, ok := e.msg.ix.get(closing.id); ok {
		t.Fatal("the view shows the session closed but the index still holds it")
	}
	reply, err := e.call(from, wire.SubjectMsgSend, wire.MsgSendRequest{Message: wire.Message{Filter: `Group is "g"`, Path: "chat/x"}})
	if err != nil {
		t.Fatal(err)
	}
	var resp wire.MsgSendResponse
	_ = json.Unmarshal(reply.Data, &resp)
	if resp.Delivered != 1 {
		t.Fatalf("send to the group after one closed: got delivered %d, want 1", resp.Delivered)
	}
	for delivered := false; !delivered; {
		select {
		case m := <-all:
			if _, _, _, err := wire.ParseDeliverSubject(m.Subject); err != nil {
				continue // not a delivery (the registry's notice of the close)
			}
			if !strings.Contains(m.Subject, live.id) {
				t.Fatalf("delivery went to %s, want only %s", m.Subject, live.id)
			}
			delivered = true
		case <-time.After(10 * time.Second):
			t.Fatal("no delivery within 10s")
		}
	}
	_, err = e.call(from, wire.SubjectMsgSend, wire.MsgSendRequest{Message: wire.Message{SessionID: closing.id, Path: "chat/x"}})
	if !errors.Is(err, wire.ErrSessionClosed) {
		t.Fatalf("send to the closed session: got %v, want session_closed", err)
	}
	// The closed sender may not send either.
	_, err = e.call(closing, wire.SubjectMsgSend, wire.MsgSendRequest{Message: wire.Message{SessionID: live.id, Path: "chat/x"}})
	if !errors.Is(err, wire.ErrSessionClosed) {
		t.Fatalf("send from the closed session: got %v, want session_closed", err)
	}
	select {
	case m := <-all:
		t.Fatalf("unexpected delivery to %s", m.Subject)
	default:
	}
}

func TestPathRoundTrip(t *testing.T) {
	for _, p := range []string{"chat", "chat/room1", "a/b_c/d-e~f=g:h@i+j,k!l", "x/" + strings.Repeat("y", 64)} {
		if err := wire.ValidatePath(p); err != nil {
			t.Fatalf("ValidatePath(%q): %v", p, err)
		}
		_, _, got, err := wire.ParseDeliverSubject(wire.DeliverSubject("K", "S", p))
		if err != nil || got != p {
			t.Fatalf("round trip of %q: got %q, %v", p, got, err)
		}
	}
	for _, p := range []string{"", "/a", "a/", "a//b", "a.b", "a/*", "a/>", "_a", "$a", "a b", "é", strings.Repeat("a/", 17) + "a", "x/" + strings.Repeat("y", 65)} {
		if err := wire.ValidatePath(p); !errors.Is(err, wire.ErrInvalidName) {
			t.Errorf("ValidatePath(%q) = %v, want invalid_name", p, err)
		}
	}
	if !slices.Contains([]string{wire.NoConnectionKey}, wire.DeliveryKey("")) {
		t.Error("an empty connection key must deliver under NoConnectionKey")
	}
}

// TestStreamedRequestsAreBounded: streamed requests outlive their handler, so the
// instance bounds how many it gathers at once.
func TestStreamedRequestsAreBounded(t *testing.T) {
	e := newEnv(t, Config{MaxStreams: 1})
	from := e.open(t, "sender", nil)
	to := e.open(t, "busy", nil)
	held := make(chan *nats.Msg, 2)
	e.receive(t, to, func(m *nats.Msg) { held <- m })
	req := wire.MsgRequestRequest{Message: wire.Message{SessionID: to.id, Path: "chat/x"}, TimeoutMS: 30000, StreamID: "first"}
	if _, err := e.call(from, wire.SubjectMsgRequest, req); err != nil {
		t.Fatal(err)
	}
	req.StreamID = "second"
	_, err := e.call(from, wire.SubjectMsgRequest, req)
	if !errors.Is(err, wire.ErrLimitExceeded) {
		t.Fatalf("second streamed request: got %v, want limit_exceeded", err)
	}
	(<-held).Respond([]byte("done"))
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		_, err := e.call(from, wire.SubjectMsgRequest, req)
		return err
	})
	(<-held).Respond([]byte("done"))
}

// TestStreamedResultsCarryTraceContext: every message of a result stream (start,
// results, end) is published by the request's fan-out, and carries its trace
// context as deliveries do; they were published without headers, so a requester's
// handling of its results could not join the trace.
func TestStreamedResultsCarryTraceContext(t *testing.T) {
	e := newEnv(t, Config{})
	from := e.open(t, "sender", nil)
	to := e.open(t, "a", nil)
	e.receive(t, to, func(m *nats.Msg) { _ = m.Respond([]byte("pong")) })
	items := make(chan *nats.Msg, 16)
	sub, err := e.cc.ChanSubscribe(wire.ResultSubject("", from.id, "traced"), items)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	req := wire.MsgRequestRequest{Message: wire.Message{SessionID: to.id, Path: "chat/x"}, TimeoutMS: 2000, StreamID: "traced"}
	if _, err := e.call(from, wire.SubjectMsgRequest, req); err != nil {
		t.Fatal(err)
	}
	var got []*nats.Msg
	for len(got) < 3 {
		select {
		case m := <-items:
			got = append(got, m)
		case <-time.After(5 * time.Second):
			t.Fatalf("stream stopped after %d messages", len(got))
		}
	}
	var fan sdktrace.ReadOnlySpan
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		for _, s := range e.spans.Ended() {
			if s.Name() == "msg.request fan-out" {
				fan = s
				return nil
			}
		}
		return errors.New("fan-out span not ended yet")
	})
	for i, m := range got {
		sc := trace.SpanContextFromContext(wire.Extract(context.Background(), m.Header))
		if sc.TraceID() != fan.SpanContext().TraceID() || sc.SpanID() != fan.SpanContext().SpanID() {
			t.Errorf("stream message %d (%s): trace context %v, want the fan-out span %s of trace %s",
				i, m.Data, m.Header, fan.SpanContext().SpanID(), fan.SpanContext().TraceID())
		}
	}
}

// A session opened a moment ago, whose record the instance's view has not received
// yet, is a target all the same: the instance reads it from the bucket instead of
// answering session_not_found.
func TestSendToASessionTheViewHasNotSeen(t *testing.T) {
	e := newEnvWith(t, Config{}, true)
	from := e.open(t, "sender", nil)
	e.view.Close() // the watch stops: the view learns nothing more by itself
	var resp wire.SessionOpenResponse
	if err := wire.Call(context.Background(), e.cc, wire.SubjectSessionOpen, nil, wire.SessionOpenRequest{}, &resp); err != nil {
		t.Fatalf("open session: %v", err)
	}
	to := session{id: resp.Session.ID, token: resp.Token}
	r := e.receive(t, to, nil)
	reply, err := e.call(from, wire.SubjectMsgSend, wire.MsgSendRequest{Message: wire.Message{SessionID: to.id, Path: "chat/new", Payload: []byte("hi")}})
	if err != nil {
		t.Fatal(err)
	}
	var out wire.MsgSendResponse
	if err := json.Unmarshal(reply.Data, &out); err != nil || out.Delivered != 1 {
		t.Fatalf("send to a session the view has not seen: got %+v, %v; want delivered to 1", out, err)
	}
	if m := r.next(t); string(m.Data) != "hi" {
		t.Fatalf("delivered %q, want hi", m.Data)
	}
}

// TestOversizedTraceHeadersAreNotForwarded: a sender chooses its trace-context
// headers, and the fan-out injects what it extracted into every delivery. The W3C
// limits hold on that path: a baggage or tracestate over its bound is dropped, not
// multiplied by the receivers, while the valid traceparent still joins the trace.
func TestOversizedTraceHeadersAreNotForwarded(t *testing.T) {
	e := newEnv(t, Config{})
	from := e.open(t, "sender", nil)
	to := e.open(t, "a", nil)
	r := e.receive(t, to, nil)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	h := from.header()
	h["traceparent"] = []string{"00-" + traceID + "-00f067aa0ba902b7-01"}
	h["tracestate"] = []string{strings.Repeat("k=v,", 10000) + "k=v"}
	h["baggage"] = []string{strings.Repeat("k=v,", 10000) + "k=v"}
	data, err := json.Marshal(wire.MsgSendRequest{Message: wire.Message{SessionID: to.id, Path: "chat/x"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := wire.CallRaw(ctx, e.cc, wire.SubjectMsgSend, h, data); err != nil {
		t.Fatal(err)
	}
	m := r.next(t)
	if got := m.Header.Get("traceparent"); !strings.Contains(got, traceID) {
		t.Errorf("delivery traceparent %q: want trace %s", got, traceID)
	}
	for _, k := range []string{"tracestate", "baggage"} {
		if v := wire.HeaderCarrier(m.Header).Get(k); v != "" {
			t.Errorf("delivery %s: got %d bytes, want none", k, len(v))
		}
	}
}
