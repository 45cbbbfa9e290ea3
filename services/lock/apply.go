package lock

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// Changes to a lock are applied by one committer per lock name and instance:
// operations that arrive while a write is in flight are applied together in the
// next write (group commit), so a burst of requests on one lock costs a few
// compare-and-set writes instead of a storm of conflicting ones. A committer is a
// goroutine that exists only while its lock has pending operations.

// maxBatch bounds the operations applied in one write.
const maxBatch = 256

// Compare-and-set attempts of one batch go on until the batch's StoreTimeout. The
// instance whose last write won writes next from its cache in one round trip, while
// the one that lost needs a read and a write: under sustained contention from
// several instances the loser can lose many times in a row. After conflictsBeforeBackoff
// conflicts a batch waits a random moment, up to conflictBackoff per conflict so
// far, before reading again, which breaks such runs.
const (
	conflictsBeforeBackoff = 4
	conflictBackoff        = 200 * time.Microsecond
	maxBackoff             = 5 * time.Millisecond
)

// task is one operation on a lock record.
type task struct {
	// apply changes r (a private copy) and records its result in variables of the
	// closure; it may run more than once (after a conflict), the last run counts.
	apply func(r *record, now int64, o *outcome)
	// fresh: the result is reported to a caller, so an answer that changes nothing
	// must come from a record just read rather than from the cache, which may lag.
	fresh bool
	done  chan commit
	// span is the span context of the request the task comes from (invalid for
	// the service's own tasks): answers to waiters its write sends link it.
	span trace.SpanContext
	// ctx is the context of the request the task comes from (nil for the
	// service's own tasks): once it ends — the request's deadline passed, its
	// handler answered — the task is dropped, not applied (dropEnded).
	ctx context.Context
	// react is set on a release the service makes of its own accord (dropSession).
	react *reaction
}

// reaction is a release the service makes of its own accord, of what a session that
// closed or lost its connection holds or waits for on one lock. Every instance sees
// the session's change and races to write the release, and the losers find nothing
// left: only the instance whose write released something records its span (the
// losers' runs count nothing). The span is a child of the request whose change of the
// session's record caused the release (cause: a client's close, an operator's close
// by filter, a resume on another connection), or the root of a trace of its own when
// the server made that change (an expiry, a lost connection); it becomes the task's
// span, which the answers to the waiters the write granted or removed link.
type reaction struct {
	session string
	closed  bool
	cause   string // W3C traceparent, or ""
	start   time.Time
	// released and withdrawn count the session's holds and waiting requests the
	// task's last run removed, granted the waiters it let through.
	released, withdrawn, granted int
}

// reactionSpan starts the span of rx, a release on the lock name.
func (s *Service) reactionSpan(name string, rx *reaction) trace.Span {
	spanName := "lock release on session close"
	if !rx.closed {
		spanName = "lock release on connection loss"
	}
	_, span := s.tracer.Start(withTraceParent(s.ctx, rx.cause), spanName, trace.WithTimestamp(rx.start), trace.WithAttributes(
		attribute.String("roster.session_id", rx.session),
		attribute.String("roster.lock.name", name),
		attribute.Int("roster.lock.released", rx.released),
		attribute.Int("roster.lock.withdrawn", rx.withdrawn),
		attribute.Int("roster.lock.granted", rx.granted),
	))
	return span
}

// startReactions starts the spans of the batch's releases that released something
// and makes each its task's span; the caller ends them once the write's answers
// are sent.
func (s *Service) startReactions(name string, batch []*task) []trace.Span {
	var spans []trace.Span
	for _, t := range batch {
		if rx := t.react; rx != nil && rx.released+rx.withdrawn > 0 {
			span := s.reactionSpan(name, rx)
			t.span = span.SpanContext()
			spans = append(spans, span)
		}
	}
	return spans
}

// withTraceParent returns ctx with the remote span context of traceparent, or ctx
// itself when traceparent is empty or malformed.
func withTraceParent(ctx context.Context, traceparent string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{wire.HeaderTraceParent: traceparent})
}

// commit is the record a task's batch committed (or found unchanged), with its
// revision; rec is nil when the lock no longer exists.
type commit struct {
	rec *record
	rev uint64
	err error
}

func newTask(fresh bool, apply func(r *record, now int64, o *outcome)) *task {
	return &task{apply: apply, fresh: fresh, done: make(chan commit, 1)}
}

// do applies apply to the lock name and waits for the result.
func (s *Service) do(ctx context.Context, name string, apply func(r *record, now int64, o *outcome)) (commit, error) {
	t := newTask(true, apply)
	t.span, t.ctx = trace.SpanContextFromContext(ctx), ctx
	lead, ok := s.submit(name, t, true)
	if !ok {
		return commit{}, wire.Errorf(wire.CodeUnavailable, "the lock service is stopping")
	}
	if lead {
		s.commitLead(name)
	}
	select {
	case c := <-t.done:
		return c, c.err
	case <-ctx.Done():
		// The task stays queued and may still be applied: the outcome is unknown,
		// which a retry with the same request id settles.
		return commit{}, wire.Errorf(wire.CodeUnavailable, "the lock service did not finish in time; the outcome is unknown: retry with the same request_id")
	}
}

// submit queues t on name's committer. When none runs, it starts one on a new
// goroutine or, if inline, returns lead: the caller then commits the first batch
// itself (commitLead). ok is false once the service is stopping.
func (s *Service) submit(name string, t *task, inline bool) (lead, ok bool) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if s.ctx.Err() != nil {
		return false, false
	}
	q, running := s.queues[name]
	s.queues[name] = append(q, t)
	if running {
		return false, true
	}
	s.wg.Add(1)
	if inline {
		return true, true
	}
	go s.commitLoop(name)
	return false, true
}

// commitLead commits, on the calling goroutine, the batch a task that found no
// committer heads — on the uncontended path that saves starting a goroutine and two
// hand-offs per operation — and leaves what was queued meanwhile to a committer
// goroutine, so that the caller's answer does not wait for other tasks.
func (s *Service) commitLead(name string) {
	s.commitNext(name)
	s.qmu.Lock()
	if len(s.queues[name]) == 0 {
		delete(s.queues, name)
		s.qmu.Unlock()
		s.wg.Done()
		return
	}
	s.qmu.Unlock()
	go s.commitLoop(name)
}

// commitLoop commits name's batches until its queue is empty.
func (s *Service) commitLoop(name string) {
	defer s.wg.Done()
	for s.commitNext(name) {
	}
}

// commitNext commits the next batch of name's queue. It returns false, and drops the
// queue, when the queue is empty.
func (s *Service) commitNext(name string) bool {
	s.qmu.Lock()
	batch := s.queues[name]
	if len(batch) == 0 {
		delete(s.queues, name)
		s.qmu.Unlock()
		return false
	}
	if len(batch) > maxBatch {
		s.queues[name] = batch[maxBatch:]
		batch = batch[:maxBatch]
	} else {
		s.queues[name] = batch[:0:0]
	}
	s.qmu.Unlock()
	s.commitContained(name, batch)
	return true
}

// commitContained commits batch. A panic in it — a bug in applying an operation —
// fails the batch, internal (its tasks not answered yet: before the write, which
// then did not happen, as the operations apply to a private copy), is logged with its
// stack, and the lock's queue goes on. Left to unwind,
// on the committer goroutine it ended the process, and on a request's handler
// goroutine (commitLead), where the endpoint recovers it, it left the queue marked
// as having a committer that no longer ran: every later operation on the lock
// waited until its caller gave up, and Stop waited for that committer forever.
func (s *Service) commitContained(name string, batch []*task) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		s.log.Error("lock: committing a batch panicked", "lock", name, "panic", v, "stack", string(debug.Stack()))
		err := wire.Errorf(wire.CodeInternal, "lock %q: the write failed", name)
		for _, t := range batch {
			select {
			case t.done <- commit{err: err}:
			default: // answered before the panic
			}
		}
	}()
	s.commitBatch(name, batch)
}

func (s *Service) commitBatch(name string, batch []*task) {
	ctx, cancel := context.WithTimeout(s.writes, s.cfg.StoreTimeout)
	defer cancel()
	key := KeyFor(name)
	fresh := false
	cur, ok := s.st.cached(key)
	for attempt := 0; ; attempt++ {
		if batch = dropEnded(batch); len(batch) == 0 {
			return
		}
		needFresh := slices.ContainsFunc(batch, func(t *task) bool { return t.fresh })
		if ctx.Err() != nil {
			if s.writes.Err() != nil {
				s.fail(name, batch, wire.Errorf(wire.CodeUnavailable, "the lock service is stopping"))
				return
			}
			s.fail(name, batch, wire.Errorf(wire.CodeUnavailable, "lock %q is too contended: no write succeeded within %v; retry", name, s.cfg.StoreTimeout))
			return
		}
		if !ok {
			// Not in the cache: assume absent; a conflict reads it.
			cur, ok = entry{}, true
		}
		r := &record{Name: name}
		if cur.rec != nil {
			r = cur.rec.clone()
		}
		r.maxHolders, r.allowed, r.prior = s.cfg.MaxHolders, s.mayAcquire(name), cur.rec
		now := s.nowMS()
		o := &outcome{}
		for _, t := range batch {
			t.apply(r, now, o)
		}
		if !o.changed {
			if needFresh && !fresh {
				e, err := s.st.read(ctx, key)
				if err != nil {
					s.fail(name, batch, err)
					return
				}
				fresh = true
				if e.rev != cur.rev {
					cur = e
					continue
				}
			}
			s.finish(name, batch, commit{rec: cur.rec, rev: cur.rev}, o)
			return
		}
		if s.cfg.beforeWrite != nil {
			s.cfg.beforeWrite(s.ctx, ctx, name)
		}
		rev, err := s.st.write(ctx, key, r, cur.rev, cur.rec)
		if errors.Is(err, errRecordTooLarge) {
			// Some of the batch grew the record past what one write may carry:
			// refuse those, and write the others' changes.
			var refused []*task
			batch, refused = s.splitOversized(name, cur, batch, now)
			s.fail(name, refused, wire.Errorf(wire.CodeLimitExceeded, "lock %q: its record would be over %d bytes with this request; wait for the queue to shorten", name, s.st.maxBytes))
			if len(batch) == 0 {
				return
			}
			continue
		}
		if errors.Is(err, errNewerFormat) && !fresh {
			// The cache's record may be one a newer version wrote over since.
			if cur, err = s.st.read(ctx, key); err != nil {
				s.fail(name, batch, err)
				return
			}
			fresh = true
			continue
		}
		if errors.Is(err, errNewerFormat) {
			// The newer version's instances release what a closed session held,
			// and trace it: this one released nothing, and records no release
			// span (at every recheck, in the closer's trace).
			for _, t := range batch {
				t.react = nil
			}
			s.fail(name, batch, wire.Errorf(wire.CodeUnavailable, "lock %q: its record was written by a newer version of Roster, which this instance leaves it to (a rolling upgrade); retry", name))
			return
		}
		if errors.Is(err, errConflict) {
			s.conflicts.Add(1)
			if attempt >= conflictsBeforeBackoff {
				backoff(ctx, min(time.Duration(attempt)*conflictBackoff, maxBackoff))
				if ctx.Err() != nil {
					continue // out of time: answered as too contended above
				}
			}
			if cur, err = s.st.read(ctx, key); err != nil {
				s.fail(name, batch, err)
				return
			}
			fresh = true
			continue
		}
		if err != nil {
			s.fail(name, batch, err)
			return
		}
		r.materialize(rev)
		r.prior = nil   // kept, it would chain every cached record to its predecessors
		r.allowed = nil // the next write sets its own, as of then
		e := entry{rec: r, rev: rev}
		if r.empty() {
			e.rec = nil
		}
		s.st.remember(key, e)
		s.finish(name, batch, commit{rec: e.rec, rev: rev}, o)
		return
	}
}

// dropEnded answers, and leaves out of batch, the tasks whose request's context has
// ended — its deadline passed (its handler has answered it: unavailable, outcome
// unknown), or the service stops — before they are applied, or applied again after
// a conflict. Their callers have given up, and may re-issue the request and go on:
// applied later, a request would act for a caller that has moved on, which
// record.actedSince can miss when others' answered ids have pushed the session's
// out of the record (maxDone). A request without a deadline has only actedSince.
// The write of an earlier attempt is not at stake: a conflict means it did not land.
func dropEnded(batch []*task) []*task {
	return slices.DeleteFunc(batch, func(t *task) bool {
		if t.ctx == nil || t.ctx.Err() == nil {
			return false
		}
		t.done <- commit{err: wire.Errorf(wire.CodeUnavailable, "the request ended before it could be applied; it was not applied")}
		return true
	})
}

// splitOversized applies batch's tasks to cur's record one at a time, and returns
// those whose change keeps the record within the store's bound or does not grow it
// (a release must go through on a record already over it), and those whose change
// grows it past the bound. Tasks may run more than once; the kept ones run again
// when their batch is written.
func (s *Service) splitOversized(name string, cur entry, batch []*task, now int64) (keep, refuse []*task) {
	r := &record{Name: name}
	if cur.rec != nil {
		r = cur.rec.clone()
	}
	r.maxHolders, r.allowed, r.prior = s.cfg.MaxHolders, s.mayAcquire(name), cur.rec
	n := size(r)
	for _, t := range batch {
		next := r.clone()
		t.apply(next, now, &outcome{})
		if m := size(next); m <= s.st.maxBytes || m <= n {
			r, n, keep = next, m, append(keep, t)
		} else {
			refuse = append(refuse, t)
		}
	}
	return keep, refuse
}

// backoff waits a random time up to limit, or until ctx ends.
func backoff(ctx context.Context, limit time.Duration) {
	t := time.NewTimer(rand.N(limit) + 1)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// fail answers a batch that could not be committed. A storage error is logged
// here, once, and reaches callers as unavailable: the write may or may not have
// happened, and a retried acquire or release finds out which.
func (s *Service) fail(name string, batch []*task, err error) {
	var we *wire.Error
	if !errors.As(err, &we) {
		if s.writes.Err() == nil {
			s.log.Error("lock storage failed", "err", err)
		}
		err = wire.Errorf(wire.CodeUnavailable, "lock storage is not available; retry")
	}
	for _, t := range batch {
		t.done <- commit{err: err}
		if t.react != nil {
			// Not written: the session's check every recheckEvery tries again.
			span := s.reactionSpan(name, t.react)
			endpoint.SpanError(span, err)
			span.End()
		}
	}
}

// finish hands the committed record to the batch's tasks and answers the waiters
// the write granted or removed: their requests were held (endpoint.ErrReplyLater)
// and any instance may answer them.
func (s *Service) finish(name string, batch []*task, c commit, o *outcome) {
	// Counted here, from the run that went through, rather than by the handlers:
	// a handler whose caller gave up has returned, and a batch runs again after a
	// conflict.
	s.overtaken.Add(uint64(o.overtaken))
	for _, t := range batch {
		t.done <- c
	}
	reactions := s.startReactions(name, batch)
	defer func() { // once the answers below are sent
		for _, span := range reactions {
			span.End()
		}
	}()
	var links []trace.Link
	linked := false
	link := func() []trace.Link { // only for answers this write sends
		if !linked {
			links, linked = batchLinks(batch), true
		}
		return links
	}
	for _, g := range o.granted {
		w := g.waiter
		if w.Reply == "" || g.direct {
			continue // detached (its re-issue gets the lock), or answered by its handler
		}
		var l *wire.Lock
		if g.released != nil {
			// Granted, then released by its session in the same write.
			l = g.released.lock(name)
			if l.Token == 0 {
				l.Token = c.rev
			}
		} else if l, _ = lockOf(c.rec, w.Session); l == nil {
			// Not reached: a hold taken away later in the write answers its
			// grantees otherwise (outcome.ungrant).
			s.log.Error("a granted waiter's hold is gone", "lock", name, "request_id", w.ID)
			continue
		}
		s.grants.Add(1)
		span := s.replySpan(w, link())
		span.SetAttributes(attribute.Bool("roster.granted", true), attribute.Int64("roster.lock.token", int64(l.Token)))
		if err := endpoint.Reply(s.nc, w.Reply, &wire.LockAcquireResponse{Lock: l}); err != nil {
			span.RecordError(err)
			s.log.Warn("answering a granted waiter failed", "lock", name, "request_id", w.ID, "err", err)
		}
		span.End()
	}
	for _, rm := range o.removed {
		if rm.w.Reply == "" || rm.direct {
			continue
		}
		span := s.replySpan(rm.w, link())
		span.SetAttributes(attribute.Bool("roster.granted", false))
		endpoint.SpanError(span, rm.err)
		if err := endpoint.ReplyError(s.nc, rm.w.Reply, rm.err); err != nil {
			span.RecordError(err)
			s.log.Warn("answering a removed waiter failed", "request_id", rm.w.ID, "err", err)
		}
		span.End()
	}
}

// maxReplyLinks bounds the requests an answer to a waiter links: a batch applies up
// to maxBatch of them.
const maxReplyLinks = 8

// batchLinks links the requests whose batch answered waiters (a release, say).
func batchLinks(batch []*task) []trace.Link {
	var links []trace.Link
	for _, t := range batch {
		if t.span.IsValid() && len(links) < maxReplyLinks {
			links = append(links, trace.Link{SpanContext: t.span})
		}
	}
	return links
}

// replySpan starts the span of the answer to a held acquire. It belongs to the
// waiter's trace, under the acquire's server span (long ended: the request was held),
// and links the requests whose write answered it.
func (s *Service) replySpan(w waiter, links []trace.Link) trace.Span {
	_, span := s.tracer.Start(withTraceParent(s.ctx, w.Trace), "lock.acquire reply", trace.WithLinks(links...), trace.WithAttributes(
		attribute.String("roster.session_id", w.Session),
		attribute.String("roster.request_id", w.ID),
	))
	return span
}

// lockOf returns session's lock in rec.
func lockOf(rec *record, session string) (*wire.Lock, bool) {
	if rec == nil {
		return nil, false
	}
	i, ok := rec.holder(session)
	if !ok {
		return nil, false
	}
	return rec.Holders[i].lock(rec.Name), true
}
