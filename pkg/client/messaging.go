package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// Target names the receivers of a message: one session or every session matching a
// filter.
type Target struct {
	SessionID string
	Filter    string
}

// ToSession addresses one session (SEND_TO_SESSION on the path).
func ToSession(id string) Target { return Target{SessionID: id} }

// ToFilter addresses every session matching a filter (SEND_TO_FILTER on the path).
// Put a value that is not a constant into the filter with filter.EscapeString:
// unescaped, a quote in it ends the string and the rest becomes clauses.
func ToFilter(filter string) Target { return Target{Filter: filter} }

// MessageOption sets optional parts of a message.
type MessageOption func(*wire.Message)

// ContentType sets the media type of the payload (default application/octet-stream).
func ContentType(ct string) MessageOption { return func(m *wire.Message) { m.ContentType = ct } }

// Header adds an application header to every delivery.
func Header(key, value string) MessageOption {
	return func(m *wire.Message) {
		if m.Headers == nil {
			m.Headers = map[string]string{}
		}
		m.Headers[key] = value
	}
}

// MessageID names the message for de-duplication: 1 to 64 letters, digits, '-' or
// '_' (ErrBadRequest otherwise). Without it Send and Request give each call an id of
// their own, which their retries keep. Set it to make retries of your own — a send
// repeated after ErrTimeout, or after a restart — count as the same message: a
// receiver using this SDK handles a message with the same sender, path and id once
// within its window (two minutes, 4,096 messages per Handle). Give each logical
// message its own id; a new message with an id already used is dropped.
func MessageID(id string) MessageOption { return func(m *wire.Message) { m.MessageID = id } }

func message(to Target, path string, payload []byte, opts []MessageOption) wire.Message {
	m := wire.Message{SessionID: to.SessionID, Filter: to.Filter, Path: path, Payload: payload}
	for _, o := range opts {
		o(&m)
	}
	if m.MessageID == "" {
		m.MessageID = nuid.Next()
	}
	return m
}

// Send delivers payload on path to the target and returns how many sessions it was
// delivered to. Delivery is fire-and-forget: a session without a handler for the
// path counts as delivered.
//
// An outcome Send cannot learn — the connection lost during the call, no messaging
// instance answering, the instance stopping mid fan-out, or no answer within
// sendAttemptTimeout (20 s) while ctx allows more — is retried, up to four times
// while ctx allows and for at most 105 s after the first attempt (the receivers'
// window, less a margin), with the same message id (MessageID): receivers using this SDK
// handle the message once even when an attempt whose answer was lost delivered it.
// Receivers using another client see Roster-Message-Id and must drop copies
// themselves. A filter is evaluated again by each attempt: a session that matches
// only the retry's selection gets the message from it. While the connection is away
// (Roster restarting, say) every attempt fails at once, so the retries are spent
// within about 1.5 s and Send fails with ErrUnavailable however long ctx allows: a
// caller that must outlast a restart sends again once the session is ACTIVE again
// (OnStateChange), with the same MessageID.
func (s *Session) Send(ctx context.Context, to Target, path string, payload []byte, opts ...MessageOption) (int, error) {
	req := &wire.MsgSendRequest{Message: message(to, path, payload, opts)}
	var resp wire.MsgSendResponse
	err := s.retry(ctx, sendAttemptTimeout, func(ctx context.Context) error {
		return s.doOther(ctx, wire.SubjectMsgSend, req, &resp)
	})
	if err != nil {
		return 0, err
	}
	return resp.Delivered, nil
}

// sendAttemptTimeout bounds one attempt of Send: the service flushes a fan-out
// within 10 s, so an attempt unanswered past this lost its answer (its instance
// died). A variable for tests.
var sendAttemptTimeout = 20 * time.Second

// retries is how often Send and Request try again after an outcome they could not
// learn.
const retries = 4

// retryHorizon is how long after its first attempt a message may still be sent
// again: within the receivers' window, with an eighth of it left for the copy to
// arrive.
func retryHorizon() time.Duration { return dedupWindow - dedupWindow/8 }

// retry runs attempt until it succeeds, fails in a way a retry cannot cure, or ctx
// or the retries run out, with a growing pause between attempts (100 ms to 800 ms:
// the connection comes back within about a second). An attempt that fails with
// ErrUnavailable is retried, and with bound > 0 so is one that got no answer within
// bound while ctx lived on. The last attempt's error is returned.
//
// No attempt starts once the first is retryHorizon old: its copies would reach
// receivers that have forgotten the message (dedupWindow), which would handle it
// again. Four attempts of a request with a minute's timeout, each failing late,
// would otherwise go on for almost five minutes.
func (s *Session) retry(ctx context.Context, bound time.Duration, attempt func(context.Context) error) error {
	start := time.Now()
	for n := 0; ; n++ {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if bound > 0 {
			actx, cancel = context.WithTimeout(ctx, bound)
		}
		err := attempt(actx)
		unanswered := bound > 0 && actx.Err() != nil && ctx.Err() == nil
		cancel()
		pause := 100 * time.Millisecond << n
		if err == nil || n == retries || ctx.Err() != nil || s.c.nc.IsClosed() ||
			!(unanswered || errors.Is(err, ErrUnavailable)) || time.Since(start)+pause >= retryHorizon() {
			return err
		}
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return err
		}
	}
}

// Results are the outcome of a request: one result per matched session.
type Results struct {
	// Expected is how many sessions the request went to.
	Expected int
	Results  []wire.MsgResult
}

// Request sends payload on path to the target and waits up to timeout for every
// matched session to answer. Each session has one result: ok with its payload, the
// error it answered with, timeout, gone (no handler or no connection), or
// limit_exceeded (too many requests in flight to it). A timeout of 0 is the
// service's default (5 s); above a minute the service refuses it, and a negative
// one is refused before anything is sent, both with ErrBadRequest.
//
// A request that fails with ErrUnavailable (the connection lost, no messaging
// instance answering, the instance stopping) is retried as Send is, with the same
// message id. A receiver using this SDK does not handle a copy of a request it has
// handled: it answers it again with the answer it gave (kept up to 16 KiB), or waits
// for the handler still running; an answer too large to keep is answered with
// ErrStaleRequest, which tells the requester that the receiver did handle it.
//
// The goroutines sharing a session share its requests in progress: a messaging
// instance gathers at most 64 of one session's requests at once, streamed or not,
// and 128 of one principal's sessions together, anonymous ones included (the
// defaults of roster serve's --max-sender-requests and --max-principal-requests).
// Beyond, Request and RequestStream fail at once with ErrLimitExceeded, delivered
// to no one, and are not retried: bound the requests made on one session at once,
// or retry once one of them has ended.
func (s *Session) Request(ctx context.Context, to Target, path string, payload []byte, timeout time.Duration, opts ...MessageOption) (*Results, error) {
	if _, err := s.headers(); err != nil {
		return nil, err // closed: that first, as every call says
	}
	if err := checkRequestTimeout(timeout); err != nil {
		return nil, err
	}
	req := &wire.MsgRequestRequest{Message: message(to, path, payload, opts), TimeoutMS: timeoutMS(timeout)}
	var resp wire.MsgRequestResponse
	err := s.retry(ctx, 0, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, timeout+10*time.Second)
		defer cancel()
		return s.doOther(ctx, wire.SubjectMsgRequest, req, &resp)
	})
	if err != nil {
		return nil, err
	}
	return &Results{Expected: resp.Expected, Results: resp.Results}, nil
}

// checkRequestTimeout refuses a negative request timeout: the service would take
// it for its default, and the SDK's own bound on the call would already be over.
func checkRequestTimeout(d time.Duration) error {
	if d < 0 {
		return &wire.Error{Code: wire.CodeBadRequest, Message: fmt.Sprintf("request timeout %v is negative (0: the service's default)", d)}
	}
	return nil
}

// timeoutMS rounds a positive timeout up to whole milliseconds: 0 would ask the
// service for its default (5 s).
func timeoutMS(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// RequestStream is Request with results delivered to fn as they arrive, on the
// caller's goroutine. It returns the number of sessions expected once every result
// has arrived (or ctx ends: the results not yet seen are then missing, and the error
// says so; it matches ErrTimeout at ctx's deadline, ErrUnavailable when the
// connection is lost meanwhile, and ErrSessionClosed when the session is closed
// meanwhile). fn must not be nil. The request is retried as
// Request's is, with the same message id and a new stream for each attempt, except
// after the connection was lost, which ends the stream too.
func (s *Session) RequestStream(ctx context.Context, to Target, path string, payload []byte, timeout time.Duration, fn func(wire.MsgResult), opts ...MessageOption) (int, error) {
	// A closed session says so before anything touches the connection, which a
	// session opened with Open closes with it.
	if _, err := s.headers(); err != nil {
		return 0, err
	}
	if err := checkRequestTimeout(timeout); err != nil {
		return 0, err
	}
	if fn == nil {
		return 0, &wire.Error{Code: wire.CodeBadRequest, Message: "RequestStream needs a function for the results"}
	}
	// The service ends the stream within the timeout (its default when 0); bound
	// the wait for the case it cannot (the instance died mid-stream).
	wait := timeout
	if wait <= 0 {
		wait = wire.DefaultRequestTimeoutMS * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(ctx, wait+10*time.Second)
	defer cancel()
	// Results stop coming when the connection is lost: fail then, as every call in
	// flight does, rather than wait out the bound.
	ctx, done, err := s.c.untilLost(ctx)
	if err != nil {
		return 0, err
	}
	defer done() // in flight until the last result (closeWhenIdle)
	req := &wire.MsgRequestRequest{Message: message(to, path, payload, opts), TimeoutMS: timeoutMS(timeout)}
	var resp wire.MsgRequestResponse
	var sub *nats.Subscription
	defer func() {
		if sub != nil {
			_ = sub.Unsubscribe()
		}
	}()
	// Each attempt streams to a subject of its own, so that the results of an
	// attempt whose answer was lost never mix with the retry's.
	err = s.retry(ctx, 0, func(ctx context.Context) error {
		if sub != nil {
			_ = sub.Unsubscribe()
		}
		req.StreamID = nuid.Next()
		var err error
		subject := wire.ResultSubject(s.c.key, s.ID(), req.StreamID)
		if sub, err = s.c.nc.SubscribeSync(subject); err != nil {
			sub = nil
			return subscribeError(subject, err)
		}
		return s.doOther(ctx, wire.SubjectMsgRequest, req, &resp)
	})
	if err != nil {
		return 0, err
	}
	seen := 0
	for seen < resp.Expected {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			_, closed := s.headers()
			switch {
			case closed != nil:
				// Closed meanwhile, by another goroutine or the server: a session
				// Open made then has its connection closed, and the read fails
				// with nats.go's bare "connection closed".
				err = fmt.Errorf("%w: %w", closed, err)
			case context.Cause(ctx) == errConnectionLost:
				err = lostDuring("reading the results", err)
			case errors.Is(err, context.DeadlineExceeded):
				err = fmt.Errorf("%w: %w", &wire.Error{Code: wire.CodeTimeout, Message: "results missing at the deadline"}, err)
			}
			return resp.Expected, fmt.Errorf("client: %d of %d results received: %w", seen, resp.Expected, err)
		}
		var item wire.MsgStreamItem
		if err := json.Unmarshal(m.Data, &item); err != nil {
			return resp.Expected, fmt.Errorf("client: bad result message: %w", err)
		}
		switch item.Kind {
		case wire.StreamResult:
			if item.Result != nil {
				seen++
				fn(*item.Result)
			}
		case wire.StreamEnd:
			if seen < resp.Expected {
				return resp.Expected, fmt.Errorf("client: stream ended after %d of %d results", seen, resp.Expected)
			}
		}
	}
	return resp.Expected, nil
}

// Message is a delivery to this session.
type Message struct {
	// Path is the path the message was sent on.
	Path string
	// Sender is the session id of the sender.
	Sender      string
	ContentType string
	Payload     []byte
	// Headers are the application headers the sender added.
	Headers map[string]string
	// ID is the message id (MessageID; Roster-Message-Id), the same on every copy
	// of the message: empty when the sender gave none (not this SDK). A handler
	// whose effects must hold beyond the SDK's window can keep it.
	ID string
	// IsRequest says whether the sender waits for an answer.
	IsRequest bool
	// AnswerContentType, set by the handler of a request, is the media type of the
	// answer it returns: the content_type of its result (empty: none).
	AnswerContentType string
}

// Handler handles deliveries on a path. For a request, its return value is the
// answer: the payload, or an error (a *wire.Error keeps its code; any other error is
// sent as internal with its message). An answer larger than the server's max_payload
// is sent as too_large, an error with a message that long with the message cut. For
// a send, the return value is ignored. A panic in a handler fails its message alone:
// it is logged (error, with its stack) and a request is answered internal; the
// registration goes on with the next delivery.
type Handler func(ctx context.Context, m *Message) ([]byte, error)

// maxHandlers bounds the handlers running at once per Handle call, matching the
// server's default limit of requests in flight per session.
const maxHandlers = 255

// Handle registers h for deliveries on path ("chat/room1"), or on every path when
// path is "*". Registrations that overlap ("*" and a path, or one path twice) each
// get the delivery, and a request is answered by whichever answers first: a "*"
// registration that only observes (a log of every delivery) answers requests too,
// with what it returns, whenever it returns before the path's own handler. Handlers
// run concurrently, at most 255 at a time per registration; deliveries beyond them
// wait, and start in the order they arrived. A request whose deadline (below) passes
// while it waits is dropped unhandled when its turn comes: its requester has been
// answered timeout. The drop is logged (warn) and on the delivery's span, and a
// retry of the message is handled as a new one.
// The trace context of the sender's fan-out continues in ctx, which ends when the
// registration is removed or the session closes, and for a request also when the
// messaging service stops waiting for its answer (the requester's timeout, counted
// from the delivery's arrival): an answer after that reaches no one. The returned function removes the
// registration and waits for the handlers still running; deliveries still waiting for
// one of the 255 slots are dropped, and no handler starts once it has returned. A
// request dropped so (or when the session closes) is answered gone at once, unless
// another registration of the session may still answer it.
// Called from h itself it waits for h, forever: a handler that ends its own
// registration calls it on another goroutine (go remove()), or ends the session.
// h must not be nil (ErrBadRequest); an invalid path is ErrInvalidName, and a
// closed session ErrSessionClosed. On a session taken with Attach and still bound to
// the connection that opened it, Handle first binds it to this client's connection
// (see Attach): deliveries go to one connection, and there they would not reach h.
//
// A registration handles a message once: a copy with the sender, path and message
// id of one it has taken (a retry whose first attempt's answer was lost) is dropped,
// or, for a request, answered again with the answer it gave (see Request). It
// remembers a message while its handler runs and for two minutes after, at most
// 4,096 messages (and at most 1 MiB of answers); a copy arriving after them is
// handled again. Messages without an id
// (from a client that gives none) are always handled.
func (s *Session) Handle(path string, h Handler) (func() error, error) {
	if _, err := s.headers(); err != nil {
		return nil, err
	}
	if h == nil {
		// Refused now: the first delivery would panic in the SDK's goroutine.
		return nil, &wire.Error{Code: wire.CodeBadRequest, Message: "Handle needs a handler"}
	}
	if s.elsewhere.Load() {
		// Deliveries go to the connection the session is bound to: an attached
		// session bound to its opener's would receive nothing here.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := s.bindHere(ctx)
		cancel()
		if err != nil {
			return nil, err
		}
	}
	var subject string
	if path == "*" {
		subject = wire.SessionDeliverPrefix(s.c.key, s.ID()) + ".>"
	} else {
		if err := wire.ValidatePath(path); err != nil {
			return nil, err
		}
		subject = wire.DeliverSubject(s.c.key, s.ID(), path)
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		removed bool // set before the removal waits: no handler starts after
		// seen is per registration: overlapping registrations each get every
		// delivery, and each must handle it once.
		seen  = newDedup()
		queue = newArrivals()
	)
	hctx, cancel := context.WithCancel(context.Background())
	r := &route{path: path}
	dispatched := make(chan struct{}) // closed when the dispatcher has returned
	// stop ends the registration's work: no handler starts after it, and the
	// deliveries still queued are dropped unhandled (a request nobody else answers
	// is answered gone), the one the dispatcher holds included, before it returns:
	// a connection Open made is closed once its session's stops have returned.
	// Once ctx has ended and r.mu is free, no delivery is put in the queue any more
	// (put), so the drain finds every one left.
	stop := func() {
		cancel()
		<-dispatched
		r.mu.Lock()
		queue.drain(s.unhandled)
		r.mu.Unlock()
	}
	// The dispatcher starts the handlers of the deliveries queued, in the order
	// they arrived, as slots free.
	sem := make(chan struct{}, maxHandlers)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(dispatched)
		for {
			d, ok := queue.take(hctx)
			if !ok {
				return
			}
			select {
			case sem <- struct{}{}:
			case <-hctx.Done():
				s.unhandled(d)
				return
			}
			now := time.Now()
			if !d.deadline.IsZero() && !now.Before(d.deadline) {
				// The requester has been answered timeout while this waited for a
				// slot: a handler's answer would reach no one.
				<-sem
				s.dropExpired(hctx, d, seen)
				continue
			}
			if d.dup {
				// A copy of a request dropped above is not a duplicate: nothing
				// was answered for it to be answered again.
				d.entry, d.dup = seen.retake(d.entry, now)
			}
			mu.Lock()
			if removed || hctx.Err() != nil { // removed while this waited for a free handler
				mu.Unlock()
				s.unhandled(d)
				return
			}
			wg.Add(1)
			mu.Unlock()
			go func() {
				defer func() { <-sem; wg.Done() }()
				if d.dup {
					if !s.answerAgain(hctx, d.path, seen, d.entry, d.m, d.replied) {
						s.unhandled(d)
					}
					return
				}
				s.deliver(hctx, d.path, d.m, h, seen, d.entry, d.deadline, d.replied)
			}()
		}
	}()
	// arrive queues a delivery for this registration. The session's subscriptions
	// hand each delivery to every registration it matches (fanOut).
	arrive := func(m *nats.Msg, p, sender string, replied *answerOnce) {
		d := arrival{m: m, path: p, replied: replied}
		// A request's answer is waited for this long from its arrival, which is now:
		// this callback hands every delivery over at once (queue), also while
		// every handler slot is taken.
		if ms, err := strconv.ParseInt(m.Header.Get(wire.HeaderTimeout), 10, 64); err == nil && ms > 0 && m.Reply != "" {
			d.deadline = time.Now().Add(time.Duration(ms) * time.Millisecond)
		}
		// Taken here, one delivery at a time (route.mu), so that of two copies the
		// first to arrive is the one handled.
		if id := m.Header.Get(wire.HeaderMessageID); id != "" {
			d.entry, d.dup = seen.take(dedupKey{sender: sender, path: p, id: id}, time.Now())
			if d.dup && m.Reply == "" {
				s.c.log.Debug("roster: duplicate delivery dropped", "session", s.id, "path", p, "sender", sender, "message_id", id)
				_, span := s.processSpan(hctx, p, m)
				span.SetAttributes(attribute.Bool("roster.duplicate", true))
				span.AddEvent("duplicate dropped")
				span.End()
				return
			}
		}
		if !queue.put(hctx, d) {
			s.unhandled(d) // the registration is ending
		}
	}
	r.arrive = arrive
	if err := s.addRoute(r); err != nil {
		stop()
		return nil, err
	}
	// The session's subscriptions are one queue group: the server delivers each
	// message to one of those it matches, never to the connection twice. Twice, its
	// check of the reply permission (one answer) at the second delivery used up
	// that answer, and a request to overlapping registrations went unanswered.
	sub, err := s.c.nc.QueueSubscribe(subject, s.id, func(m *nats.Msg) {
		_, _, p, err := wire.ParseDeliverSubject(m.Subject)
		sender := m.Header.Get(wire.HeaderSender)
		if err != nil || sender == "" {
			// Results of a streamed request, or not a delivery: a service's reply to
			// a request whose reply subject another client chose (wire.HeaderSender).
			return
		}
		s.fanOut(m, p, sender)
	})
	if err != nil {
		s.removeRoute(r)
		stop()
		return nil, subscribeError(subject, err)
	}
	// Flushed, the subscription is in place when Handle returns; while the
	// connection is away it is sent when the connection comes back.
	if s.c.nc.IsConnected() {
		if err := s.c.nc.Flush(); err != nil && s.c.nc.IsConnected() {
			s.removeRoute(r)
			stop()
			_ = sub.Unsubscribe()
			return nil, fmt.Errorf("client: subscribe %s: %w", subject, err)
		}
	}
	if handleRegistering != nil {
		handleRegistering()
	}
	s.mu.Lock()
	if err := s.registrableLocked(); err != nil {
		s.mu.Unlock()
		s.removeRoute(r)
		stop()
		_ = sub.Unsubscribe()
		return nil, err
	}
	if s.handlers == nil {
		s.handlers = map[*nats.Subscription]context.CancelFunc{}
	}
	s.handlers[sub] = stop
	s.mu.Unlock()
	return func() error {
		s.mu.Lock()
		delete(s.handlers, sub)
		s.mu.Unlock()
		var err error
		if s.removeRoute(r) && s.c.nc.IsConnected() {
			// The session's subscriptions are one queue group: what the server has
			// handed to this one may be for the registrations that remain (a
			// request on "quote" that came through "*"). Unsubscribed, the
			// subscription dropped the deliveries it held and those on their way,
			// and their requesters got timeout. Drained, it takes no more, and
			// passes those on (fanOut) before it goes.
			err = sub.Drain()
		} else {
			err = sub.Unsubscribe()
		}
		if err == nil && s.c.nc.IsConnected() {
			// Once this returns the server no longer routes the path here, so
			// that requests find no responder rather than a silent client.
			err = s.c.nc.Flush()
		}
		if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) || errors.Is(err, nats.ErrConnectionReconnecting) {
			err = nil // the server forgets the subscription with the connection
		}
		mu.Lock()
		removed = true
		mu.Unlock()
		stop()
		wg.Wait()
		return err
	}, nil
}

// handleRegistering, when set (by tests), is called by Handle once its subscription
// is made, before it registers it with the session.
var handleRegistering func()

// registrableLocked returns nil while a registration may join the session's
// handlers: the error Handle fails with once the session is closed, or no longer
// served here (finish). Client.Close stops a session taken with Attach without
// closing it: a Handle that registered after that stop kept its dispatcher, and its
// subscription's place, with nothing left to stop them.
func (s *Session) registrableLocked() error {
	switch {
	case s.state == StateClosed:
		return s.closedErr()
	case !s.servedLocked():
		return &wire.Error{Code: wire.CodeUnavailable, Message: "session " + s.id + " is no longer served by this client (its Client was closed)"}
	}
	return nil
}

// route is a registration's place in the session's fan-out: the path it handles
// ("*": every path) and how a delivery reaches its queue.
type route struct {
	path string
	// mu keeps one delivery at a time going into the registration's queue, as its
	// own subscription's one goroutine did: deliveries now come from any of the
	// session's subscriptions. A full queue holds up the deliveries of the
	// registrations that overlap it too, as they are handed over in turn.
	mu     sync.Mutex
	arrive func(m *nats.Msg, path, sender string, replied *answerOnce)
}

// addRoute adds r to the session's fan-out, unless the session is closed or no
// longer served here.
func (s *Session) addRoute(r *route) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.registrableLocked(); err != nil {
		return err
	}
	if s.routes == nil {
		s.routes = map[*route]struct{}{}
	}
	s.routes[r] = struct{}{}
	return nil
}

// removeRoute removes r from the session's fan-out, and reports whether a
// registration that remains overlaps it (handles a path r handled): only then can
// r's subscription hold deliveries for another.
func (s *Session) removeRoute(r *route) (overlapped bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.routes, r)
	for o := range s.routes {
		if o.path == "*" || r.path == "*" || o.path == r.path {
			return true
		}
	}
	return false
}

// fanOut hands a delivery on path to every registration of the session that
// handles the path: "Registrations that overlap each get the delivery". A request
// is answered once, by the first of them to answer (replied): the connection may
// answer it once. Deliveries that two overlapping registrations both take may
// reach them in another order than they came, as they come through either
// registration's subscription.
func (s *Session) fanOut(m *nats.Msg, path, sender string) {
	s.mu.Lock()
	var to []*route
	for r := range s.routes {
		if r.path == "*" || r.path == path {
			to = append(to, r)
		}
	}
	s.mu.Unlock()
	var replied *answerOnce
	if m.Reply != "" {
		replied = &answerOnce{}
		replied.holders.Store(int32(len(to)))
		if len(to) == 0 {
			// Its registrations were removed since the server matched it.
			s.answerGone(m)
			return
		}
	}
	for _, r := range to {
		r.mu.Lock()
		r.arrive(m, path, sender, replied)
		r.mu.Unlock()
	}
}

// answerOnce is what the registrations a request was handed to (fanOut) share: the
// first to answer it sets it, and the others do not answer.
type answerOnce struct {
	atomic.Bool
	// holders counts the registrations that may still answer the request: one that
	// drops it unhandled, removed or with its session closed, counts down
	// (unhandled), and the last one answers gone.
	holders atomic.Int32
}

// unhandled is told of a delivery d its registration drops without handling it
// (the registration removed, the session closed). A request nobody else of the
// session may still answer is answered gone at once, as a request that finds no
// handler is: dropped unanswered, its requester waited out its timeout to be told
// timeout, as if a handler were working on it.
func (s *Session) unhandled(d arrival) {
	if d.replied == nil || d.replied.holders.Add(-1) > 0 || !d.replied.CompareAndSwap(false, true) {
		return
	}
	s.answerGone(d.m)
}

// answerGone answers the request m as the NATS server answers a request nobody
// subscribes to (status 503, no body): the messaging service reports it to the
// requester as gone. Being the server's own form, it is what any receiver's drop
// would look like at the service, and needs nothing new on the wire.
func (s *Session) answerGone(m *nats.Msg) {
	reply := &nats.Msg{Subject: m.Reply, Header: nats.Header{}}
	reply.Header.Set("Status", "503")
	_ = s.c.nc.PublishMsg(reply)
}

// arrival is a delivery a registration has taken, waiting for a handler slot.
type arrival struct {
	m    *nats.Msg
	path string
	// replied is set by the first of the session's registrations to answer the
	// request m (nil for a send): the others do not answer it.
	replied *answerOnce
	// deadline is when the messaging service stops waiting for a request's answer,
	// counted from the delivery's arrival (zero for a send).
	deadline time.Time
	// entry is the message's in the registration's dedup (nil without a message
	// id); dup marks a copy of a request taken before, answered again.
	entry *seenMsg
	dup   bool
}

// maxWaitingBytes bounds the deliveries waiting in one registration's queue
// (arrivals), as NATS carried them (payload and headers: a delivery with no payload
// may carry half a megabyte of headers), which maxHandlers bounds in number too.
const maxWaitingBytes = 16 << 20

// arrivals is a registration's queue of deliveries waiting for a handler slot. The
// subscription's callback puts each delivery there as it arrives and goes on to
// the next, so that a request's deadline counts from its arrival: waiting for the
// slot itself, with the delivery in hand, left the ones behind it in the NATS
// client's buffer, stamped only when a slot freed. Past its bounds the callback
// waits again, and the NATS client's own limits for a slow consumer apply to what
// is behind — those deliveries' deadlines count from when they enter the queue.
type arrivals struct {
	ch      chan arrival
	bytes   atomic.Int64  // bytes of the deliveries in ch (nats.Msg.Size)
	drained chan struct{} // a delivery left ch
}

func newArrivals() *arrivals {
	return &arrivals{ch: make(chan arrival, maxHandlers), drained: make(chan struct{}, 1)}
}

// put queues d, waiting while the queue is full, until ctx ends; it reports whether
// d was queued. Only the subscription's callbacks put, one delivery at a time
// (route.mu). Once ctx has ended nothing is queued: the registration's stop takes
// what is in the queue (drain), and must find everything there will be.
func (q *arrivals) put(ctx context.Context, d arrival) bool {
	if ctx.Err() != nil {
		return false
	}
	size := int64(d.m.Size())
	for n := q.bytes.Load(); n > 0 && n+size > maxWaitingBytes; n = q.bytes.Load() {
		select {
		case <-q.drained:
		case <-ctx.Done():
			return false
		}
	}
	q.bytes.Add(size)
	select {
	case q.ch <- d:
		return true
	case <-ctx.Done():
		q.bytes.Add(-size)
		return false
	}
}

// drain empties the queue, handing each delivery to fn.
func (q *arrivals) drain(fn func(arrival)) {
	for {
		select {
		case d := <-q.ch:
			q.bytes.Add(-int64(d.m.Size()))
			fn(d)
		default:
			return
		}
	}
}

// take returns the delivery that has waited longest, once there is one; ok is false
// when ctx ends first.
func (q *arrivals) take(ctx context.Context) (d arrival, ok bool) {
	select {
	case d = <-q.ch:
	case <-ctx.Done():
		return arrival{}, false
	}
	q.bytes.Add(-int64(d.m.Size()))
	select {
	case q.drained <- struct{}{}:
	default:
	}
	return d, true
}

// dropWarnEvery is how often at most a client logs a request dropped by
// dropExpired; the line counts the drops left out since the last one.
var dropWarnEvery = 10 * time.Second

// dropExpired drops d, a request whose deadline passed while it waited for a
// handler slot, unhandled and unanswered. Its message is forgotten by the
// registration's dedup, so that the requester's retry of it is handled; the drop is
// on the delivery's span, which ends at once, and logged: the first at once, then
// at most one line per dropWarnEvery counting the drops since the last line. An
// overloaded receiver drops requests by the thousand a second, and logged one line
// each.
func (s *Session) dropExpired(ctx context.Context, d arrival, seen *dedup) {
	if d.entry != nil && !d.dup {
		seen.forget(d.entry, time.Now())
	}
	sender := d.m.Header.Get(wire.HeaderSender)
	s.c.dropWarn.Warn("session", s.id, "path", d.path, "sender", sender, "deadline", d.deadline)
	_, span := s.processSpan(ctx, d.path, d.m)
	span.SetAttributes(attribute.Bool("roster.expired", true))
	span.AddEvent("dropped: its deadline passed before a handler was free")
	span.End()
}

// deliver hands m to h and answers a request with what h returns, unless another
// registration answered it first (replied). entry, when not nil, is m's in seen,
// which records the answer for copies of m.
func (s *Session) deliver(ctx context.Context, path string, m *nats.Msg, h Handler, seen *dedup, entry *seenMsg, deadline time.Time, replied *answerOnce) {
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	ctx, span := s.processSpan(ctx, path, m)
	defer span.End()
	msg := &Message{
		Path:        path,
		Sender:      m.Header.Get(wire.HeaderSender),
		ContentType: m.Header.Get(wire.HeaderContentType),
		Payload:     m.Data,
		IsRequest:   m.Reply != "",
		Headers:     appHeaders(m.Header),
		ID:          m.Header.Get(wire.HeaderMessageID),
	}
	out, err := s.runHandler(ctx, h, msg)
	var we *wire.Error
	if err != nil {
		if !errors.As(err, &we) || !we.Code.Known() {
			we = &wire.Error{Code: wire.CodeInternal, Message: err.Error()}
		}
		spanError(span, we)
	}
	a := handlerAnswer{data: out, contentType: msg.AnswerContentType, err: we}
	if entry != nil {
		seen.finish(entry, m.Reply != "", a, time.Now())
	}
	if m.Reply == "" || !replied.CompareAndSwap(false, true) {
		return
	}
	if rerr := s.reply(m.Reply, a); rerr != nil {
		span.RecordError(rerr)
	}
}

// runHandler calls h with m. A panic in h fails m alone: it is logged (error) with its
// value and stack, and h's answer is an internal error that names no part of it
// (the value is the receiver's, not the requester's business). Unrecovered, it ended
// the process, every session and handler in it, on a goroutine of the SDK the
// application cannot guard; the services' endpoints recover theirs the same way.
func (s *Session) runHandler(ctx context.Context, h Handler, m *Message) (out []byte, err error) {
	defer func() {
		if v := recover(); v != nil {
			s.c.log.Error("roster: handler panicked", "session", s.id, "path", m.Path, "sender", m.Sender,
				"message_id", m.ID, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			out, err = nil, &wire.Error{Code: wire.CodeInternal, Message: "the receiver's handler failed (it panicked)"}
		}
	}()
	return h(ctx, m)
}

// processSpan starts the consumer span of OTel's messaging conventions for the
// delivery m on path (a handler called for a message pushed to it: operation
// process), under the service's fan-out span. A copy of a message the registration
// has taken gets one too, with roster.duplicate: its sender's trace shows that it
// arrived and what became of it, though no handler ran.
func (s *Session) processSpan(ctx context.Context, path string, m *nats.Msg) (context.Context, trace.Span) {
	ctx, span := s.c.tracer.Start(wire.Extract(ctx, m.Header), "process "+path, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.operation.name", "process"),
			attribute.String("messaging.destination.name", path),
			attribute.String("roster.path", path),
			attribute.String("roster.session_id", s.ID()),
		))
	if id := m.Header.Get(wire.HeaderMessageID); id != "" {
		span.SetAttributes(attribute.String("messaging.message.id", id))
	}
	return ctx, span
}

// answerAgain answers m, a copy of a request this registration has taken (entry),
// with the answer given to the first, once there is one, without handling it: the
// requester retried because it did not learn the outcome. An answer too large to
// have been kept is stale_request. A registration removed meanwhile answers nothing.
// The copy's span (roster.duplicate) lasts from its arrival until it is answered,
// with the event "answered from memory" (not when the answer was not kept) and the
// error answered, if any.
func (s *Session) answerAgain(ctx context.Context, path string, seen *dedup, entry *seenMsg, m *nats.Msg, replied *answerOnce) (answered bool) {
	_, span := s.processSpan(ctx, path, m)
	defer span.End()
	span.SetAttributes(attribute.Bool("roster.duplicate", true))
	select {
	case <-entry.done:
	case <-ctx.Done():
		span.AddEvent("not answered: the registration was removed")
		return false
	}
	a, ok := seen.answer(entry)
	if !ok {
		a = handlerAnswer{err: &wire.Error{Code: wire.CodeStaleRequest, Message: fmt.Sprintf(
			"message %s was handled already; its answer (%d bytes) is not kept for copies", entry.key.id, entry.size)}}
	}
	s.c.log.Debug("roster: duplicate request answered again", "session", s.id, "path", entry.key.path, "sender", entry.key.sender, "message_id", entry.key.id)
	if ok {
		span.AddEvent("answered from memory")
	}
	if a.err != nil {
		spanError(span, a.err)
	}
	if !replied.CompareAndSwap(false, true) {
		return true // another registration answered this copy
	}
	if err := s.reply(m.Reply, a); err != nil {
		span.RecordError(err)
	}
	return true
}

// reply publishes the answer to a request: its payload with its content type, or
// its error in the micro error form. An answer NATS refuses as larger than its
// max_payload is answered too_large (an error keeps its code and the start of its
// message): unsent, it left the requester waiting out its timeout, told the
// receiver had not answered.
func (s *Session) reply(subject string, a handlerAnswer) error {
	err := s.c.nc.PublishMsg(replyMsg(subject, a))
	if !errors.Is(err, nats.ErrMaxPayload) {
		return err
	}
	we := &wire.Error{Code: wire.CodeTooLarge, Message: fmt.Sprintf(
		"the answer is %d bytes, more than the server's max_payload (%d)", len(a.data), s.c.nc.MaxPayload())}
	if a.err != nil {
		we = &wire.Error{Code: a.err.Code, Message: shorten(a.err.Message, maxErrorMessage)}
	}
	if rerr := s.c.nc.PublishMsg(replyMsg(subject, handlerAnswer{err: we})); rerr != nil {
		return rerr
	}
	return err
}

// maxErrorMessage is how much of an error's message an answer keeps when the whole
// would not fit in one message.
const maxErrorMessage = 1024

// shorten cuts s to at most n bytes, on a rune boundary, marking the cut.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func replyMsg(subject string, a handlerAnswer) *nats.Msg {
	reply := &nats.Msg{Subject: subject, Data: a.data, Header: nats.Header{}}
	switch {
	case a.err != nil:
		status, message, body := wire.EncodeError(a.err)
		reply.Header.Set(wire.HeaderErrorCode, status)
		reply.Header.Set(wire.HeaderError, message)
		reply.Data = body
	case a.contentType != "":
		reply.Header.Set(wire.HeaderContentType, a.contentType)
	}
	return reply
}

func appHeaders(h nats.Header) map[string]string {
	out := map[string]string{}
	for k, v := range h {
		if len(v) == 0 || reservedHeader(k) {
			continue
		}
		out[k] = v[0]
	}
	return out
}

func reservedHeader(k string) bool {
	switch {
	case len(k) >= 7 && strings.EqualFold(k[:7], "roster-"),
		len(k) >= 5 && strings.EqualFold(k[:5], "nats-"),
		strings.EqualFold(k, "traceparent"), strings.EqualFold(k, "tracestate"), strings.EqualFold(k, "baggage"),
		strings.EqualFold(k, "content-type"), strings.EqualFold(k, "status"), strings.EqualFold(k, "description"):
		return true
	}
	return false
}
