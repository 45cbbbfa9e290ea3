package messaging

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// fanout publishes deliveries and gathers the replies of requests.
//
// Deliveries of one send share one nats.Msg and one header set; only the subject
// changes, built in one reused buffer, and the connection is flushed once at the end.
// Replies to requests arrive on one wildcard subscription of the service instance:
// <inbox>.<gather id>.<target index>, so a fan-out to 1,000 sessions costs no
// subscription and no goroutine per receiver.
type fanout struct {
	nc       *nats.Conn
	tracer   trace.Tracer
	log      *slog.Logger
	inbox    string // reply prefix, ends with '.'
	sub      *nats.Subscription
	inflight *inflight
	nextID   atomic.Uint64

	mu      sync.Mutex
	gathers map[string]*gather
}

func newFanout(nc *nats.Conn, maxInFlight int, tracer trace.Tracer, log *slog.Logger) (*fanout, error) {
	f := &fanout{
		nc:       nc,
		tracer:   tracer,
		log:      log,
		inbox:    nc.NewInbox() + ".",
		inflight: newInflight(maxInFlight),
		gathers:  map[string]*gather{},
	}
	sub, err := nc.Subscribe(f.inbox+">", f.onReply)
	if err != nil {
		return nil, fmt.Errorf("messaging: reply subscription: %w", err)
	}
	// Replies of a large fan-out arrive in a burst: let them queue rather than drop.
	if err := sub.SetPendingLimits(-1, 256<<20); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("messaging: reply subscription: %w", err)
	}
	f.sub = sub
	return f, nil
}

func (f *fanout) close() {
	if f.sub != nil {
		_ = f.sub.Unsubscribe()
	}
}

// flushTimeout bounds the wait for the server to take a send's deliveries.
const flushTimeout = 10 * time.Second

// delivery is what is sent to each target: the same payload and headers for all.
type delivery struct {
	path        string
	pathTokens  string
	contentType string
	sender      string
	messageID   string // the sender's Message.MessageID, if any
	payload     []byte
	headers     map[string]string
}

// header builds the one header set shared by every delivery of a send, carrying the
// trace context of ctx and the sender's message id: built once per send, it costs
// the fan-out nothing per delivery but its bytes.
func (d *delivery) header(ctx context.Context) nats.Header {
	h := make(nats.Header, len(d.headers)+5)
	for k, v := range d.headers {
		h[k] = []string{v}
	}
	h[wire.HeaderSender] = []string{d.sender}
	if d.messageID != "" {
		h[wire.HeaderMessageID] = []string{d.messageID}
	}
	ct := d.contentType
	if ct == "" {
		ct = wire.DefaultContentType
	}
	h[wire.HeaderContentType] = []string{ct}
	wire.Inject(ctx, h)
	return h
}

// headerSize is the encoded size of h, as NATS puts it on the wire.
func headerSize(h nats.Header) int {
	n := len("NATS/1.0\r\n") + 2
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// checkSize refuses a delivery that the NATS server would refuse, with a message
// saying by how much. replyRoom is added for requests, whose reply subject and id
// header are not known yet.
func checkSize(h nats.Header, payload []byte, limit int) error {
	size := headerSize(h) + len(payload)
	if size > limit {
		return wire.Errorf(wire.CodeTooLarge, "the payload is %d bytes and its headers %d; a delivery may be at most %d bytes (the NATS max_payload)",
			len(payload), size-len(payload), limit)
	}
	return nil
}

// publish sends the delivery to every target and flushes once. It returns how many
// deliveries were published.
func (f *fanout) publish(ctx context.Context, d *delivery, h nats.Header, targets []target) (int, error) {
	msg := &nats.Msg{Header: h, Data: d.payload}
	buf := make([]byte, 0, 128)
	for i, t := range targets {
		buf = wire.AppendDeliverSubject(buf[:0], t.deliveryKey, t.id, d.pathTokens)
		msg.Subject = string(buf)
		if err := f.nc.PublishMsg(msg); err != nil {
			return i, publishError(err)
		}
	}
	// One round trip: when it returns, the server has taken every delivery.
	fctx, cancel := context.WithTimeout(ctx, flushTimeout)
	defer cancel()
	if err := f.nc.FlushWithContext(fctx); err != nil {
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			// The flush's own bound, not the service's stop: the server did not
			// confirm the deliveries in time (a slow or unreachable server).
			return len(targets), errors.Join(wire.Errorf(wire.CodeUnavailable, "NATS did not confirm the deliveries within %v", flushTimeout), err)
		}
		return len(targets), publishError(err)
	}
	return len(targets), nil
}

// notDelivered is the result of a receiver whose request could not be published:
// publishError's code and message, or unavailable for a NATS error without one. It
// says what failed in Roster's words; the NATS client's error text is for the log.
func notDelivered(err error) *wire.Error {
	var we *wire.Error
	if errors.As(publishError(err), &we) {
		return wire.Errorf(we.Code, "not delivered: %s", we.Message)
	}
	return wire.Errorf(wire.CodeUnavailable, "not delivered: publishing to NATS failed")
}

func publishError(err error) error {
	switch {
	case errors.Is(err, nats.ErrMaxPayload):
		return wire.Errorf(wire.CodeTooLarge, "the delivery is larger than the NATS max_payload")
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionDraining),
		errors.Is(err, nats.ErrReconnectBufExceeded):
		return errors.Join(wire.Errorf(wire.CodeUnavailable, "the connection to NATS is not available"), err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return errors.Join(wire.Errorf(wire.CodeUnavailable, "the service is stopping"), err)
	}
	return err
}

// gather collects the results of one request fan-out.
type gather struct {
	id      string
	targets []target
	emit    func(wire.MsgResult) // called for each result as it is decided; may be nil

	mu        sync.Mutex
	results   []wire.MsgResult
	remaining int
	done      chan struct{}
	release   func(id string)
	// size is the JSON size of the results so far (resultsSize). Without emit they
	// are the reply: past limit it cannot carry them, and the payloads are dropped
	// as they come rather than held until the last result (the request then
	// answers too_large). With emit only a result's status is held: the result is
	// already on its way.
	size  int
	limit int
}

// settle records the result for target i unless it already has one.
func (g *gather) settle(i int, r wire.MsgResult) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if i < 0 || i >= len(g.results) || g.results[i].Status != "" {
		return
	}
	r.SessionID = g.targets[i].id
	if r.Status != wire.StatusLimitExceeded {
		g.release(r.SessionID)
	}
	if g.emit != nil {
		// Streamed: the result is on its way; its status alone marks it settled.
		g.emit(r)
		r = wire.MsgResult{Status: r.Status}
	} else {
		before := g.size
		if g.size += resultSize(&r); g.size > g.limit {
			// The reply will be too_large: neither payloads nor receivers' errors
			// (as large as a payload) are held for it.
			r.Payload, r.Error = nil, nil
			if before <= g.limit { // just went over: drop what is held
				for j := range g.results {
					g.results[j].Payload, g.results[j].Error = nil, nil
				}
			}
		}
	}
	g.results[i] = r
	g.remaining--
	if g.remaining == 0 {
		close(g.done)
	}
}

// settleRest gives every target without a result r.
func (g *gather) settleRest(r wire.MsgResult) {
	for i := range g.targets {
		g.settle(i, r)
	}
}

// request delivers to every target as a NATS request and gathers one result per
// target: each target's reply, an error, gone when nobody subscribes, limit_exceeded
// when the target already has the maximum in flight, or timeout. emit, if not nil,
// receives each result as it is decided. request returns when every target has a
// result, at most timeout after its deliveries were published (and the server took
// them), or when ctx ends (the rest then are errors: unavailable). answerBy, when
// not zero, is when the results must be in hand (the requester's deadline, less the
// time the reply needs): request returns by then too, each receiver is told only
// the time left until then when that is less than timeout (Roster-Timeout), and one
// whose turn comes after it is not asked (timeout). Without emit it also returns
// the JSON size of the results; past limit their payloads are dropped (the caller
// answers too_large).
func (f *fanout) request(ctx context.Context, d *delivery, h nats.Header, targets []target, timeout time.Duration, answerBy time.Time, emit func(wire.MsgResult), limit int, asked func(n int)) ([]wire.MsgResult, int) {
	g := &gather{
		id:        strconv.FormatUint(f.nextID.Add(1), 36),
		targets:   targets,
		emit:      emit,
		results:   make([]wire.MsgResult, len(targets)),
		remaining: len(targets),
		done:      make(chan struct{}),
		release:   f.inflight.release,
		size:      resultsOverhead,
		limit:     limit,
	}
	if len(targets) == 0 {
		asked(0)
		return g.results, g.size
	}
	f.mu.Lock()
	f.gathers[g.id] = g
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.gathers, g.id)
		f.mu.Unlock()
	}()

	h[wire.HeaderRequestID] = []string{g.id}
	told := int64(-1) // the Roster-Timeout in h, in ms
	tell := func(d time.Duration) {
		// At least 1 ms: a timeout under a millisecond (a requester's deadline all
		// but gone) written as 0 is no deadline to the SDK.
		if ms := max(d.Milliseconds(), 1); ms != told {
			h[wire.HeaderTimeout] = []string{strconv.FormatInt(ms, 10)}
			told = ms
		}
	}
	tell(timeout)
	msg := &nats.Msg{Header: h, Data: d.payload}
	subj := make([]byte, 0, 128)
	reply := make([]byte, 0, len(f.inbox)+24)
	n, failed := 0, 0
	var failure error // the first publish error, for the log
	for i, t := range targets {
		if !f.inflight.acquire(t.id) {
			g.settle(i, wire.MsgResult{Status: wire.StatusLimitExceeded, Error: wire.Errorf(wire.CodeLimitExceeded,
				"session %s has %d requests in flight; the limit is %d", t.id, f.inflight.max, f.inflight.max)})
			continue
		}
		if !answerBy.IsZero() {
			// A receiver has no more time than the requester waits for the
			// results, however long the publishes before its own took: told the
			// whole timeout, its answer came after the reply, and the service,
			// waiting for it, answered after its requester had given up.
			left := time.Until(answerBy)
			if left <= 0 {
				g.settle(i, wire.MsgResult{Status: wire.StatusTimeout, Error: wire.Errorf(wire.CodeTimeout,
					"not asked: the requester's deadline passed before the request could be published to the session")})
				continue
			}
			tell(min(timeout, left))
		}
		subj = wire.AppendDeliverSubject(subj[:0], t.deliveryKey, t.id, d.pathTokens)
		reply = append(append(append(reply[:0], f.inbox...), g.id...), '.')
		reply = strconv.AppendInt(reply, int64(i), 10)
		msg.Subject, msg.Reply = string(subj), string(reply)
		if err := f.nc.PublishMsg(msg); err != nil {
			g.settle(i, wire.MsgResult{Status: wire.StatusError, Error: notDelivered(err)})
			if failed++; failure == nil {
				failure = err
			}
			continue
		}
		n++
	}
	// Every delivery is out (nats.go copied each): the payload is not held while
	// the answers come in, up to a minute, for each of the thousands of requests
	// an instance may have in progress.
	msg.Data, d.payload = nil, nil
	if failed > 0 { // once per request: a fan-out to thousands fails for one cause
		f.log.WarnContext(ctx, "request not delivered", "receivers", failed, "err", failure)
	}
	// Bounded as a send's flush is, and by ctx: a stopping service answers at once.
	fctx, cancel := context.WithTimeout(ctx, flushTimeout)
	_ = f.nc.FlushWithContext(fctx)
	cancel()
	asked(n)
	// The timeout counts from the publishes, as Roster-Timeout tells each receiver:
	// counted from before them, the receivers of a long fan-out had that much less
	// than they were told, and an answer within their deadline came too late.
	wait, late := timeout, wire.Errorf(wire.CodeTimeout, "no response within %v", timeout)
	if left := time.Until(answerBy); !answerBy.IsZero() && left < wait {
		wait, late = max(left, 0), wire.Errorf(wire.CodeTimeout, "no response before the requester's deadline")
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-g.done:
	case <-timer.C:
		g.settleRest(wire.MsgResult{Status: wire.StatusTimeout, Error: late})
	case <-ctx.Done():
		g.settleRest(wire.MsgResult{Status: wire.StatusError, Error: wire.Errorf(wire.CodeUnavailable, "the messaging service stopped before the response")})
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.results, g.size
}

// onReply routes a receiver's reply to its gather.
func (f *fanout) onReply(m *nats.Msg) {
	rest := strings.TrimPrefix(m.Subject, f.inbox)
	gid, idx, ok := strings.Cut(rest, ".")
	if !ok {
		return
	}
	i, err := strconv.Atoi(idx)
	if err != nil {
		return
	}
	f.mu.Lock()
	g := f.gathers[gid]
	f.mu.Unlock()
	if g == nil {
		return // late: the request already timed out
	}
	g.settle(i, resultOf(m))
}

// resultOf interprets a reply: no responders (status 503 with no body) means nobody
// subscribes to the session's path; a micro error reply is the receiver's error.
func resultOf(m *nats.Msg) wire.MsgResult {
	if m.Header != nil && m.Header.Get("Status") == "503" && len(m.Data) == 0 {
		return wire.MsgResult{Status: wire.StatusGone, Error: wire.Errorf(wire.CodeUnavailable, "no receiver subscribes to the path (the session's connection is gone or has no handler)")}
	}
	if err := wire.ReplyError(m); err != nil {
		var we *wire.Error
		if !errors.As(err, &we) {
			we = wire.Errorf(wire.CodeInternal, "receiver error")
		}
		if !we.Code.Known() {
			we = &wire.Error{Code: wire.CodeInternal, Message: we.Message}
		}
		return wire.MsgResult{Status: wire.StatusError, Error: we}
	}
	ct := ""
	if m.Header != nil {
		ct = m.Header.Get(wire.HeaderContentType)
	}
	return wire.MsgResult{Status: wire.StatusOK, ContentType: ct, Payload: m.Data}
}

// streamer publishes a request's results to the requesting session, in order: start,
// one result per target, end. Each message carries the trace context of the
// request's fan-out, as its deliveries do.
type streamer struct {
	nc      *nats.Conn
	max     int // the largest message it may publish, headers included
	subject string
	header  nats.Header
	counts  map[wire.MsgStatus]int
}

func newStreamer(ctx context.Context, nc *nats.Conn, max int, subject string) *streamer {
	h := nats.Header{}
	wire.Inject(ctx, h)
	return &streamer{nc: nc, max: max, subject: subject, header: h, counts: map[wire.MsgStatus]int{}}
}

func (s *streamer) publish(data []byte) {
	_ = s.nc.PublishMsg(&nats.Msg{Subject: s.subject, Header: s.header, Data: data})
}

func (s *streamer) send(item wire.MsgStreamItem) {
	data, err := json.Marshal(item)
	if err != nil {
		return
	}
	s.publish(data)
}

func (s *streamer) start(expected int) {
	s.send(wire.MsgStreamItem{Kind: wire.StreamStart, Expected: expected})
}

// result is the gather's emit: it runs under the gather's lock, so results are
// published one at a time and counted without another lock.
func (s *streamer) result(r wire.MsgResult) {
	data, err := json.Marshal(wire.MsgStreamItem{Kind: wire.StreamResult, Result: &r})
	if err != nil || headerSize(s.header)+len(data) > s.max {
		// An answer that fits a reply to the service may not fit a stream message
		// once base64-encoded: report it rather than lose it.
		r = wire.MsgResult{SessionID: r.SessionID, Status: wire.StatusError, Error: wire.Errorf(wire.CodeTooLarge,
			"the answer (%d bytes) is too large to stream: at most %d bytes per message, encoded", len(r.Payload), s.max)}
		data, _ = json.Marshal(wire.MsgStreamItem{Kind: wire.StreamResult, Result: &r})
	}
	s.counts[r.Status]++
	s.publish(data)
}

// end publishes the end of the stream and flushes, for no longer than ctx allows:
// a stopping instance's drain is not held up by a connection that is away (the
// process drains the connection after).
func (s *streamer) end(ctx context.Context, expected int) {
	s.send(wire.MsgStreamItem{Kind: wire.StreamEnd, Expected: expected, Counts: s.counts})
	fctx, cancel := context.WithTimeout(ctx, flushTimeout)
	defer cancel()
	_ = s.nc.FlushWithContext(fctx)
}

// inflight counts the requests in flight per receiving session.
type inflight struct {
	max int
	mu  sync.Mutex
	n   map[string]int
}

func newInflight(max int) *inflight { return &inflight{max: max, n: map[string]int{}} }

// acquire takes a slot for session id, or reports that it has max in flight.
func (c *inflight) acquire(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[id] >= c.max {
		return false
	}
	c.n[id]++
	return true
}

func (c *inflight) release(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[id] <= 1 {
		delete(c.n, id)
		return
	}
	c.n[id]--
}
