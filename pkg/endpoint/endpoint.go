// Package endpoint hosts Roster's micro services: it registers typed endpoints and
// turns each request into a call of a plain Go method.
//
// For every request it extracts the caller's trace context and starts a server span,
// decodes the JSON body strictly (unknown fields and trailing data are errors, bodies
// are size-limited), validates it, calls the handler on a bounded pool of goroutines
// (micro runs an endpoint's callback serially, so one slow request would otherwise
// stall the endpoint) with a context that ends at the request's deadline
// (wire.HeaderTimeout, counted from the arrival; deadline.go), and maps the
// handler's error to the wire: a *wire.Error as it
// is, anything else (a panic included) as internal, with the cause logged once and
// never sent. Each request's duration and outcome is recorded as the
// rpc.server.call.duration metric.
package endpoint

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/semconv/v1.43.0/rpcconv"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// Config describes a service.
type Config struct {
	// Name is the micro service name (e.g. "roster-lock").
	Name string
	// Version is the SemVer version reported by $SRV.INFO.
	Version string
	// Description is shown by $SRV.INFO and nats micro info.
	Description string
	// Prefix is the subject prefix of the service's endpoints (e.g. roster.v1.lock).
	Prefix string
	// MaxConcurrent bounds the requests handled at once (default 256).
	MaxConcurrent int
	// MaxQueued bounds the requests that wait for a slot while MaxConcurrent are
	// handled (default 1024); beyond it the subscription's buffer holds them.
	MaxQueued int
	// MaxBody bounds a request body in bytes (default 64 KiB).
	MaxBody int
	// MeterProvider records the duration and outcome of every request (nil: none).
	MeterProvider metric.MeterProvider
}

// Service is a running micro service with its endpoints.
type Service struct {
	nc     *nats.Conn
	cfg    Config
	micro  micro.Service
	tracer trace.Tracer
	calls  rpcconv.ServerCallDuration
	log    *slog.Logger
	sem    chan struct{}
	queued chan struct{} // a slot per request waiting for sem (await)
	work   chan func()   // handed to an idle worker (run)
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	checks  map[string]func(context.Context) error
	stopped bool

	// panics counts the requests whose handling panicked (Health.Panics).
	panics atomic.Int64
}

// errStopping answers the requests that arrive, or were waiting for a slot, once
// Stop has begun.
var errStopping = &wire.Error{Code: wire.CodeUnavailable, Message: "service is stopping"}

// errExpiredWaiting answers a request whose deadline passed while it waited for a
// slot: it is never started.
var errExpiredWaiting = &wire.Error{Code: wire.CodeTimeout, Message: "the request's deadline passed while it waited for a handler slot; it was not started"}

// dispatch runs job on a worker once a slot is free, or answers the request with
// refuse: unavailable once Stop has begun, timeout when its deadline (zero: none)
// passes before a slot frees. A request is counted (wg) from its arrival, so that
// Stop waits for the waiting ones too; job frees the slot and ends the count.
func (s *Service) dispatch(deadline time.Time, job func(), refuse func(error)) {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		refuse(errStopping)
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	select {
	case s.sem <- struct{}{}:
		s.run(job)
		return
	default:
	}
	// Every slot is taken. The request waits on a goroutine of its own, so that the
	// subscription's callback (micro runs it serially) goes on to the next request
	// and notes when that one arrived: a request's deadline counts from its
	// arrival, not from when a slot frees, and one that passes while it waits ends
	// its wait. At most MaxQueued wait so; beyond that the callback waits, and NATS
	// buffers the requests behind it (backpressure, not unbounded goroutines).
	select {
	case s.queued <- struct{}{}:
	case <-s.ctx.Done():
		s.refused(refuse, errStopping)
		return
	}
	go s.await(deadline, job, refuse)
}

// await waits for a slot for a request that found none free, and runs job on its
// own goroutine; or answers refuse, without a slot, when the request's deadline or
// the service's context ends first.
func (s *Service) await(deadline time.Time, job func(), refuse func(error)) {
	var expired <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		expired = t.C
	}
	select {
	case s.sem <- struct{}{}:
		<-s.queued
	case <-expired:
		<-s.queued
		s.refused(refuse, errExpiredWaiting)
		return
	case <-s.ctx.Done():
		<-s.queued
		s.refused(refuse, errStopping)
		return
	}
	// As before the waiting: a request Stop overtook is answered, not started.
	s.mu.Lock()
	stopped := s.stopped
	s.mu.Unlock()
	if stopped {
		<-s.sem
		s.refused(refuse, errStopping)
		return
	}
	job()
}

// refused answers a counted request with err and ends it.
func (s *Service) refused(refuse func(error), err error) {
	refuse(err)
	s.wg.Done()
}

// workerIdle is how long a worker goroutine waits for the next request before it
// exits.
const workerIdle = 10 * time.Second

// run runs job on an idle worker goroutine, or on a new one when none is idle.
// Workers outlive their request: a goroutine per request would grow a fresh stack
// for every request (JSON decoding, tracing and the NATS client need more than a
// new goroutine's stack), which costs several percent of the CPU a request takes.
// The semaphore (admit) bounds the workers busy at once, so at most MaxConcurrent
// exist.
func (s *Service) run(job func()) {
	select {
	case s.work <- job:
	default:
		go s.worker(job)
	}
}

func (s *Service) worker(job func()) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		job()
		idle.Reset(workerIdle)
		select {
		case job = <-s.work:
		case <-idle.C:
			return
		case <-s.ctx.Done():
			return
		}
	}
}

// New registers a service on nc. Call Add for each endpoint, then Stop to drain.
func New(nc *nats.Conn, cfg Config, tp trace.TracerProvider, log *slog.Logger) (*Service, error) {
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 256
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 64 << 10
	}
	if cfg.MaxQueued <= 0 {
		cfg.MaxQueued = 1024
	}
	ms, err := micro.AddService(nc, micro.Config{
		Name:        cfg.Name,
		Version:     cfg.Version,
		Description: cfg.Description,
		Metadata:    map[string]string{"prefix": cfg.Prefix},
	})
	if err != nil {
		return nil, fmt.Errorf("endpoint: add service %s: %w", cfg.Name, err)
	}
	mp := cfg.MeterProvider
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	calls, err := rpcconv.NewServerCallDuration(mp.Meter(meterName), metric.WithExplicitBucketBoundaries(durationBuckets...))
	if err != nil {
		_ = ms.Stop()
		return nil, fmt.Errorf("endpoint: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{
		nc:     nc,
		cfg:    cfg,
		micro:  ms,
		tracer: tp.Tracer("github.com/seed-3c836eab/roster/" + cfg.Name),
		calls:  calls,
		log:    log.With("service", cfg.Name),
		sem:    make(chan struct{}, cfg.MaxConcurrent),
		queued: make(chan struct{}, cfg.MaxQueued),
		work:   make(chan func()),
		ctx:    ctx,
		cancel: cancel,
		checks: map[string]func(context.Context) error{},
	}
	if err := Add(s, Endpoint{Name: "health", Request: "health.request", Response: "health.response"}, s.health); err != nil {
		_ = ms.Stop()
		cancel()
		return nil, err
	}
	return s, nil
}

// meterName is the instrumentation scope of the endpoint metrics.
const meterName = "github.com/seed-3c836eab/roster/pkg/endpoint"

// durationBuckets are the bucket boundaries of rpc.server.call.duration, in seconds:
// from a keepalive answered in tens of microseconds to a write waiting on a
// replicated fsync or a slow authenticator. (The SDK's default boundaries are for
// milliseconds and would put every Roster request in the first bucket.)
var durationBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// outcomes are an endpoint's metric attribute sets, one per outcome ("ok",
// "reply_later" and every wire error code), built once rather than per request.
type outcomes map[string]attribute.Set

func newOutcomes(method string) outcomes {
	o := outcomes{}
	add := func(code string) {
		kv := []attribute.KeyValue{
			attribute.String("rpc.system.name", "nats"),
			attribute.String("rpc.method", method),
			attribute.String("rpc.response.status_code", code),
		}
		if code != "ok" && code != "reply_later" {
			kv = append(kv, attribute.String("error.type", code))
		}
		o[code] = attribute.NewSet(kv...)
	}
	add("ok")
	add("reply_later")
	for _, c := range wire.Codes() {
		add(string(c.Code))
	}
	return o
}

// Endpoint names an endpoint and the schemas of its bodies.
type Endpoint struct {
	// Name is the operation; the subject is <prefix>.<name> unless Subject is set.
	Name    string
	Subject string
	// Request and Response name the JSON Schemas (files in schemas/, without .json).
	Request  string
	Response string
}

// Call is what a handler knows about a request besides its body.
type Call struct {
	Subject string
	Header  nats.Header
	// SessionID and Token are the Roster-Session and Roster-Token headers.
	SessionID string
	Token     string
	// Reply is the request's reply subject. A handler that returns ErrReplyLater
	// answers on it later with Reply or ReplyError.
	Reply string

	info       *wire.RequestInfo
	infoParsed bool
}

// Info returns the server-written request info; nil when the request did not cross
// an account import (e.g. from another service). It is parsed on first use: most
// requests never need it.
func (c *Call) Info() *wire.RequestInfo {
	if !c.infoParsed {
		c.info, c.infoParsed = wire.ParseRequestInfo(c.Header.Get(wire.HeaderRequestInfo)), true
	}
	return c.info
}

// importReplyPrefix starts the reply subject the NATS server gives a request that
// crosses a service import (nats-server's replyPrefix), in place of the requester's.
const importReplyPrefix = "_R_."

// Internal reports whether the request came from a connection of the service's own
// account rather than through an account import: it has a reply subject, and not
// one the server wrote for an import. It does not go by the absence of
// Nats-Request-Info, which a client can bring about: the server drops a client's
// copy of that header only from lines that follow a CRLF and writes its own in
// place of the block's last two bytes, while nats.go also ends a line at a bare LF
// and skips a line with no name, so a client's header block ending ":\r\n" leaves
// the service with no request info at all.
func (c *Call) Internal() bool {
	return c.Reply != "" && !strings.HasPrefix(c.Reply, importReplyPrefix)
}

// ErrReplyLater, returned by a handler, sends no reply: the handler has kept
// Call.Reply and answers later with Reply or ReplyError, from any connection of the
// same account (the lock service answers a waiting acquire when the lock is
// granted, possibly from another instance). The handler's slot in the bounded pool
// is freed at once, so long waits do not pin it. A request crossing an account
// import must be answered within the import's response threshold (2 minutes by
// default), or the reply is dropped.
var ErrReplyLater = errors.New("endpoint: reply later")

// Reply answers a request held with ErrReplyLater with v as JSON. A reply that
// does not encode, or is larger than the connection's max_payload, is answered
// internal instead, so that the client is not left to wait out its timeout; the
// error returned says why, for the log.
func Reply(nc *nats.Conn, subject string, v any) error {
	if subject == "" {
		return nil
	}
	data, err := json.Marshal(v)
	if err != nil {
		err = fmt.Errorf("endpoint: encode reply: %w", err)
		return errors.Join(err, ReplyError(nc, subject, err))
	}
	err = nc.Publish(subject, data)
	if errors.Is(err, nats.ErrMaxPayload) {
		err = fmt.Errorf("endpoint: the reply is %d bytes, more than the NATS max_payload (%d): %w", len(data), nc.MaxPayload(), err)
		return errors.Join(err, ReplyError(nc, subject, err))
	}
	return err
}

// ReplyError answers a request held with ErrReplyLater with an error reply, encoded
// as the endpoint encodes a handler's error: an internal one (or one without a wire
// code) with the generic message only.
func ReplyError(nc *nats.Conn, subject string, err error) error {
	if subject == "" {
		return nil
	}
	err = onTheWire(err)
	status, msg, body := wire.EncodeError(err)
	m := &nats.Msg{Subject: subject, Header: nats.Header{}, Data: body}
	m.Header.Set(micro.ErrorCodeHeader, status)
	m.Header.Set(micro.ErrorHeader, msg)
	perr := nc.PublishMsg(m)
	if errors.Is(perr, nats.ErrMaxPayload) {
		// A message echoing a large input (a header as long as a message) goes
		// in the body as the header has it: cut.
		_, _, m.Data = wire.EncodeError(&wire.Error{Code: wire.CodeOf(err), Message: msg})
		perr = nc.PublishMsg(m)
	}
	return perr
}

// Validator is implemented by request types that check their own fields.
type Validator interface {
	Validate() error
}

// Handler handles one decoded request.
type Handler[Req, Resp any] func(ctx context.Context, c *Call, req *Req) (*Resp, error)

// Add registers an endpoint whose request decodes into Req and whose reply is Resp.
func Add[Req, Resp any](s *Service, ep Endpoint, h Handler[Req, Resp]) error {
	subject := ep.Subject
	if subject == "" {
		subject = s.cfg.Prefix + "." + ep.Name
	}
	meta := map[string]string{}
	if ep.Request != "" {
		meta["request_schema"] = ep.Request
	}
	if ep.Response != "" {
		meta["response_schema"] = ep.Response
	}
	out := newOutcomes(subject)
	handler := micro.HandlerFunc(func(r micro.Request) {
		// The request's arrival: its deadline counts from here.
		start := time.Now()
		hdr := nats.Header(r.Headers())
		deadline, herr := requestDeadline(hdr, start)
		s.dispatch(deadline, func() {
			defer func() { <-s.sem; s.wg.Done() }()
			code := serve(s, subject, r, hdr, deadline, herr, h)
			s.calls.RecordSet(context.Background(), time.Since(start).Seconds(), out[code])
		}, func(err error) {
			// Refused before a handler ran (its deadline passed while it waited
			// for a slot, or the service stops): still a server span in the
			// caller's trace, started at the arrival, which says why.
			_, span := s.startSpan(wire.Extract(s.ctx, hdr), subject, trace.WithTimestamp(start))
			SpanError(span, err)
			span.SetAttributes(attribute.String("rpc.response.status_code", errorCode(err)))
			span.End()
			// On the connection, not through micro.Request: this may run on
			// another goroutine than micro's callback (handle says why).
			if rerr := ReplyError(s.nc, r.Reply(), err); rerr != nil {
				s.log.Warn("reply failed", "subject", subject, "err", rerr)
			}
			s.calls.RecordSet(context.Background(), time.Since(start).Seconds(), out[errorCode(err)])
		})
	})
	if err := s.micro.AddEndpoint(ep.Name, handler, micro.WithEndpointSubject(subject), micro.WithEndpointMetadata(meta)); err != nil {
		return fmt.Errorf("endpoint: add %s: %w", subject, err)
	}
	return nil
}

// startSpan starts the server span of a request on subject, with the attributes of
// OTel's RPC conventions.
func (s *Service) startSpan(ctx context.Context, subject string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	opts = append(opts, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attribute.String("rpc.system.name", "nats"),
			attribute.String("rpc.method", subject),
		))
	return s.tracer.Start(ctx, subject, opts...)
}

// serve handles one request in its server span and returns its outcome: "ok",
// "reply_later", or the error code it was answered with. The span has the
// attributes of OTel's RPC conventions the request's metric has (newOutcomes), with
// the same values: rpc.method is the subject, which names the service too.
func serve[Req, Resp any](s *Service, subject string, r micro.Request, hdr nats.Header, deadline time.Time, herr error, h Handler[Req, Resp]) string {
	ctx, span := s.startSpan(wire.Extract(s.ctx, hdr), subject)
	defer span.End()
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadlineCause(context.WithValue(ctx, requestKey{}, &requestDeadlines{svc: s.ctx, deadline: deadline}), deadline, errDeadline)
		defer cancel()
	}
	code := handle(ctx, s, subject, span, hdr, herr, r, h)
	span.SetAttributes(attribute.String("rpc.response.status_code", code))
	return code
}

// handle decodes, handles and answers one request; its failure is recorded on span.
func handle[Req, Resp any](ctx context.Context, s *Service, subject string, span trace.Span, hdr nats.Header, herr error, r micro.Request, h Handler[Req, Resp]) string {
	call := &Call{
		Subject:   r.Subject(),
		Header:    hdr,
		SessionID: hdr.Get(wire.HeaderSession),
		Token:     hdr.Get(wire.HeaderToken),
		Reply:     r.Reply(),
	}
	// Only a session id: the header is the client's, and may be as long as a
	// message; a span kept it until the exporter took it.
	if wire.ValidSessionID(call.SessionID) {
		span.SetAttributes(attribute.String("roster.session_id", call.SessionID))
	}
	resp, err := decodeAndHandle(ctx, s, call, herr, r.Data(), h)
	if errors.Is(err, ErrReplyLater) {
		span.SetAttributes(attribute.Bool("roster.reply_later", true))
		return "reply_later"
	}
	if err != nil {
		if cut := afterDeadline(ctx, err); cut != err {
			// Most often the deadline's own doing (a read it cut short), so not
			// logged as a failure; but a write seen through past the deadline can
			// fail for real, and its cause is kept for the operator.
			s.log.DebugContext(ctx, "request failed after its deadline", "subject", subject, "err", err)
			err = cut
		}
		logFailure(ctx, s.log, subject, err)
		SpanError(span, err)
		// Reply on the connection, not through micro.Request: micro reads the
		// request's error state when the callback returns, which races with a
		// reply sent from this goroutine.
		if err := ReplyError(s.nc, r.Reply(), err); err != nil {
			s.log.WarnContext(ctx, "reply failed", "subject", subject, "err", err)
		}
		return errorCode(err)
	}
	if err := Reply(s.nc, r.Reply(), resp); err != nil {
		s.log.ErrorContext(ctx, "reply failed", "subject", subject, "err", err)
		SpanError(span, err)
		return errorCode(err)
	}
	return "ok"
}

// panicked is the error a request whose handling panicked ends with: answered
// internal like any error without a wire code, and logged with its stack.
type panicked struct {
	value any
	stack []byte
}

func (p *panicked) Error() string { return fmt.Sprintf("panic: %v", p.value) }

func decodeAndHandle[Req, Resp any](ctx context.Context, s *Service, c *Call, herr error, data []byte, h Handler[Req, Resp]) (resp *Resp, err error) {
	// A panic in a handler (or a Validate, or an UnmarshalJSON) fails its request
	// only: it runs on a worker goroutine, where an unrecovered panic ends the
	// process, and every request in flight with it.
	defer func() {
		if v := recover(); v != nil {
			s.panics.Add(1)
			resp, err = nil, &panicked{value: v, stack: debug.Stack()}
		}
	}()
	if err := singleSessionHeaders(c.Header); err != nil {
		return nil, err
	}
	if herr != nil {
		return nil, herr
	}
	// A request whose deadline passed before it started (a worker took it at that
	// moment, or its caller gave it no time left) is not started.
	if DeadlinePassed(ctx) {
		return nil, wire.Errorf(wire.CodeTimeout, "the request's deadline passed before it was started")
	}
	if len(data) > s.cfg.MaxBody {
		return nil, wire.Errorf(wire.CodeTooLarge, "request body is %d bytes; the limit is %d", len(data), s.cfg.MaxBody)
	}
	req := new(Req)
	if err := Decode(data, req); err != nil {
		return nil, err
	}
	if v, ok := any(req).(Validator); ok {
		if err := v.Validate(); err != nil {
			var we *wire.Error
			if errors.As(err, &we) {
				return nil, err
			}
			return nil, &wire.Error{Code: wire.CodeBadRequest, Message: err.Error()}
		}
	}
	return h(ctx, c, req)
}

// singleSessionHeaders refuses a request that gives Roster-Session or Roster-Token
// more than once, in one spelling or several: the endpoint reads the first value of
// the canonical spelling, and another reader of the message may take another, so
// which session a request acts for would depend on who reads it (as with a JSON
// member named twice).
func singleSessionHeaders(h nats.Header) error {
	var session, token int
	for k, v := range h {
		switch {
		case strings.EqualFold(k, wire.HeaderSession):
			session += len(v)
		case strings.EqualFold(k, wire.HeaderToken):
			token += len(v)
		}
	}
	switch {
	case session > 1:
		return wire.Errorf(wire.CodeBadRequest, "the %s header appears %d times; give it once", wire.HeaderSession, session)
	case token > 1:
		return wire.Errorf(wire.CodeBadRequest, "the %s header appears %d times; give it once", wire.HeaderToken, token)
	}
	return nil
}

// Decode decodes a JSON request body strictly into v: unknown fields (a field's name
// in another letter case included: encoding/json would take "Path" for "path"),
// members named twice, wrong types, null where Go has no nil (a string, number, bool
// or struct, which encoding/json would leave at its zero value), "" in a field
// tagged roster:"nonempty", bytes that are not UTF-8, escapes of half a UTF-16
// surrogate pair (encoding/json reads both as U+FFFD) and trailing data are
// bad_request errors naming the problem. An empty body decodes as {}.
func Decode(data []byte, v any) error {
	if len(bytes.TrimSpace(data)) == 0 {
		data = []byte("{}")
	}
	// JSON is UTF-8; encoding/json reads any other byte as U+FFFD, so that two
	// different names ("a\xff", "a\xfe") would decode to one.
	if !utf8.Valid(data) {
		return &wire.Error{Code: wire.CodeBadRequest, Message: fmt.Sprintf("invalid JSON body: not UTF-8 at byte %d", invalidUTF8(data))}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &wire.Error{Code: wire.CodeBadRequest, Message: "invalid JSON body: " + jsonMessage(err, reflect.TypeOf(v))}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &wire.Error{Code: wire.CodeBadRequest, Message: "invalid JSON body: data after the JSON value"}
	}
	if err := checkNames(data, reflect.TypeOf(v)); err != nil {
		return &wire.Error{Code: wire.CodeBadRequest, Message: "invalid JSON body: " + err.Error()}
	}
	return nil
}

// invalidUTF8 returns the offset of the first byte of data that is not UTF-8.
func invalidUTF8(data []byte) int {
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return len(data)
}

// jsonMessage says what is wrong with a body that did not decode into a value of
// type t, in the body's terms: encoding/json names Go types (wire.LockMode, []uint8)
// and puts the Go names of embedded structs in a member's path.
func jsonMessage(err error, t reflect.Type) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		path, at := jsonPath(t, te.Field)
		switch {
		case te.Field == "":
			return fmt.Sprintf("the body must be %s, not %s", jsonType(te.Type), te.Value)
		case at != nil && at.Kind() == reflect.Map && at != te.Type:
			// encoding/json names the map, not the member whose value is wrong.
			return fmt.Sprintf("the values of field %q must be %s, not %s", path, jsonType(te.Type), te.Value)
		}
		return fmt.Sprintf("field %q must be %s, not %s", path, jsonType(te.Type), te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s at byte %d", se.Error(), se.Offset)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// jsonPath returns encoding/json's path of a member of a value of type t without
// the names of the embedded structs it passes through ("Message.payload" is
// "payload"), and the member's type (nil when unknown).
func jsonPath(t reflect.Type, path string) (string, reflect.Type) {
	segments := strings.Split(path, ".")
	out := segments[:0]
	for _, seg := range segments {
		for t != nil && t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch {
		case t == nil:
		case t.Kind() == reflect.Struct:
			if f, ok := t.FieldByName(seg); ok && f.Anonymous {
				if _, named := fieldsOf(t)[seg]; !named {
					t = f.Type
					continue
				}
			}
			t = fieldsOf(t)[seg].typ
		case t.Kind() == reflect.Map || t.Kind() == reflect.Slice || t.Kind() == reflect.Array:
			t = t.Elem()
		default:
			t = nil
		}
		out = append(out, seg)
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return strings.Join(out, "."), t
}

// jsonType describes the JSON values a Go type decodes from.
func jsonType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		bits := t.Bits()
		return fmt.Sprintf("an integer from %d to %d", int64(-1)<<(bits-1), int64(1)<<(bits-1)-1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return fmt.Sprintf("an integer from 0 to %d", uint64(1)<<t.Bits()-1)
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a base64 string"
		}
		return "an array"
	case reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "another value"
}

func errorCode(err error) string { return string(wire.CodeOf(err)) }

// errInternal is what a client is told of an internal error.
var errInternal = &wire.Error{Code: wire.CodeInternal, Message: "internal error"}

// onTheWire returns what a client is told of err: err itself (EncodeError sends
// its *wire.Error alone), or the generic internal error for an internal one —
// internal's contract is that the cause is logged and never sent, whatever message
// the error was given.
func onTheWire(err error) error {
	if wire.CodeOf(err) == wire.CodeInternal {
		return errInternal
	}
	return err
}

// logFailure logs, once, what a client is not told of a failed request: an
// internal error (or a panic, with its stack), or the cause an error carries
// beside its wire error (a storage failure joined to unavailable). A caller's
// mistake without a cause is not logged: clients can make any number of them.
func logFailure(ctx context.Context, log *slog.Logger, subject string, err error) {
	if wire.CodeOf(err) == wire.CodeInternal {
		var p *panicked
		if errors.As(err, &p) {
			log.ErrorContext(ctx, "request failed", "subject", subject, "err", err, "stack", string(p.stack))
		} else {
			log.ErrorContext(ctx, "request failed", "subject", subject, "err", err)
		}
		return
	}
	if hasCause(err) {
		log.WarnContext(ctx, "request failed", "subject", subject, "code", string(wire.CodeOf(err)), "err", err)
	}
}

// hasCause reports whether err carries an error other than a *wire.Error: one
// joined to it, or wrapped beside it. A *wire.Error merely wrapped with context
// (fmt.Errorf("closing: %w", err)) has none.
func hasCause(err error) bool {
	switch e := err.(type) {
	case nil, *wire.Error:
		return false
	case interface{ Unwrap() []error }:
		for _, inner := range e.Unwrap() {
			if hasCause(inner) {
				return true
			}
		}
		return false
	case interface{ Unwrap() error }:
		inner := e.Unwrap()
		return inner == nil || hasCause(inner)
	default:
		return true
	}
}

// Call sends req to another service on subject, as wire.Call does, in a client
// span of this service: the called service's server span is its child, as OTel's
// RPC conventions have an outgoing call, and trace back ends draw the edge between
// two services from such a pair. The span has the attributes the SDK's client spans
// have (rpc.system.name nats, rpc.method the subject, rpc.response.status_code ok or
// the wire code) and, for a call that failed, an error status with the code as
// roster.error.code and error.type — the code only: a message may echo the input.
func (s *Service) Call(ctx context.Context, subject string, hdr nats.Header, req, resp any) error {
	ctx, span := s.tracer.Start(ctx, subject, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("rpc.system.name", "nats"),
		attribute.String("rpc.method", subject),
	))
	defer span.End()
	err := wire.Call(ctx, s.nc, subject, hdr, req, resp)
	if err != nil {
		// Classed as the SDK's client spans class theirs: an error without a wire
		// code (this service's own context ending, an answer that does not decode)
		// is no code of the called service's, and is _OTHER.
		class := "_OTHER"
		var we *wire.Error
		if errors.As(err, &we) && we.Code != "" {
			class = string(we.Code)
			span.SetAttributes(attribute.String("rpc.response.status_code", class), attribute.String("roster.error.code", class))
		}
		span.SetAttributes(attribute.String("error.type", class))
		span.SetStatus(codes.Error, class)
		return err
	}
	span.SetAttributes(attribute.String("rpc.response.status_code", "ok"))
	return nil
}

// SpanError records on span that its operation ended with err, as the server span
// of every request has it: the wire code (internal for an error without one) as
// roster.error.code and as OTel's error.type, and an error status for a 5xx code
// only — a caller's mistake is not the service's error, as OTel's conventions for
// server spans have it. Spans a service starts for work it does for a request (a
// fan-out, the answer to a held request) record their outcome with it too.
func SpanError(span trace.Span, err error) {
	code := wire.CodeOf(err)
	span.SetAttributes(attribute.String("roster.error.code", string(code)), attribute.String("error.type", string(code)))
	if code.Status() >= 500 {
		span.SetStatus(codes.Error, string(code))
	}
}

// AddCheck registers a readiness check reported by the health endpoint.
func (s *Service) AddCheck(name string, check func(context.Context) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[name] = check
}

// HealthRequest is the (empty) body of a health request.
type HealthRequest struct{}

// Health is the reply of a service's health endpoint.
type Health struct {
	Service string            `json:"service"`
	Version string            `json:"version"`
	Ready   bool              `json:"ready"`
	Checks  map[string]string `json:"checks,omitempty"`
	// Panics counts the requests whose handling panicked since the instance
	// started. Each was answered internal and the instance went on, but a panic
	// can leave what it was changing half done (a mutex held, a queue marked
	// busy): a process with a service that panicked is no longer live
	// (roster.Process.Health), so that its supervisor restarts it.
	Panics int64 `json:"panics,omitempty"`
}

// health answers the health endpoint, which any client may ask: a check failing
// with a *wire.Error says its message, one failing otherwise only "failing", as
// the endpoint answers such an error internal. The process's own probes
// (Service.Health) keep the cause.
func (s *Service) health(ctx context.Context, _ *Call, _ *HealthRequest) (*Health, error) {
	h := s.runChecks(ctx, func(err error) string {
		var we *wire.Error
		if errors.As(err, &we) && we.Code.Known() && we.Code != wire.CodeInternal {
			return we.Message
		}
		return "failing"
	})
	return h, nil
}

// Health runs the readiness checks; a failing one says its error.
func (s *Service) Health(ctx context.Context) *Health {
	return s.runChecks(ctx, error.Error)
}

// runChecks runs the readiness checks, saying a failure with reason.
func (s *Service) runChecks(ctx context.Context, reason func(error) string) *Health {
	s.mu.Lock()
	checks := make(map[string]func(context.Context) error, len(s.checks))
	for k, v := range s.checks {
		checks[k] = v
	}
	s.mu.Unlock()
	h := &Health{Service: s.cfg.Name, Version: s.cfg.Version, Ready: true, Panics: s.panics.Load()}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for name, check := range checks {
		if h.Checks == nil {
			h.Checks = map[string]string{}
		}
		if err := check(ctx); err != nil {
			h.Ready = false
			h.Checks[name] = reason(err)
		} else {
			h.Checks[name] = "ok"
		}
	}
	return h
}

// Logger returns the service's logger.
func (s *Service) Logger() *slog.Logger { return s.log }

// Tracer returns the service's tracer.
func (s *Service) Tracer() trace.Tracer { return s.tracer }

// Context is cancelled when the service stops; work started for a request that must
// outlive the handler (a lock wait) ends with it.
func (s *Service) Context() context.Context { return s.ctx }

// Stop stops taking requests (the endpoint subscriptions drain), waits for the
// requests in flight to finish until ctx ends, then cancels the service context so
// long waits end with an error reply.
func (s *Service) Stop(ctx context.Context) error {
	err := s.micro.Stop()
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.cancel()
	case <-ctx.Done():
		s.cancel()
		<-done
	}
	return err
}

// Serve blocks until ctx ends, then stops the service, waiting up to drain for the
// requests in flight, or until the deadline ctx's cause carries (StopBy) when that
// comes first.
func (s *Service) Serve(ctx context.Context, drain time.Duration) error {
	<-ctx.Done()
	stopCtx, cancel := StopContext(ctx, drain)
	defer cancel()
	return s.Stop(stopCtx)
}

// StopBy is the cause a process cancels a service's run context with
// (context.WithCancelCause) when the service's stop must be done by Deadline: a
// process stopping several services gives them all one deadline, so that a service
// whose stop begins after others' (the auth service, once the registry whose
// requests call it has stopped) does not count a drain timeout of its own from
// then, and the process's stop is bounded by one timeout, not one per service.
type StopBy struct{ Deadline time.Time }

func (e *StopBy) Error() string {
	return "the service stops, by " + e.Deadline.Format(time.RFC3339Nano)
}

// StopDeadline returns the deadline of ctx's cause, when it is a StopBy.
func StopDeadline(ctx context.Context) (time.Time, bool) {
	var by *StopBy
	if !errors.As(context.Cause(ctx), &by) {
		return time.Time{}, false
	}
	return by.Deadline, true
}

// StopContext returns the context a service's stop runs on once ctx, the context
// it ran on, has ended: it ends drain from now, or at the deadline ctx's cause
// carries (StopBy) when that comes first.
func StopContext(ctx context.Context, drain time.Duration) (context.Context, context.CancelFunc) {
	deadline := time.Now().Add(drain)
	if by, ok := StopDeadline(ctx); ok && by.Before(deadline) {
		deadline = by
	}
	return context.WithDeadline(context.Background(), deadline)
}
