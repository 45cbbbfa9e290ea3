package endpoint

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// A request's deadline. A client gives, in wire.HeaderTimeout, how long it waits
// for the answer from when it sent the request (wire.Call sets it from its
// context's deadline); the handler's context ends that long after the request's
// arrival, with errDeadline as its cause, so that work the client has given up on
// stops. Counted from the arrival, the service's deadline falls after the
// client's by the time the request took to arrive: it never gives up first.

// errDeadline is the cause of a handler's context that ended at the request's
// deadline.
var errDeadline = errors.New("endpoint: the request's deadline passed")

// requestKey keys, in a handler's context with a deadline, its *requestDeadlines:
// the service's context (what WithoutDeadline keeps) and the deadline (Remaining).
type requestKey struct{}

type requestDeadlines struct {
	svc      context.Context
	deadline time.Time
}

// deadlines returns what ctx holds under requestKey: nil for a request without a
// deadline, and in a context WithoutDeadline made.
func deadlines(ctx context.Context) *requestDeadlines {
	d, _ := ctx.Value(requestKey{}).(*requestDeadlines)
	return d
}

// requestDeadline returns the deadline the request's headers give, counted from
// arrival; zero when they give none. A Roster-Timeout header given more than once,
// in one spelling or several, or not a whole number of milliseconds, is
// bad_request (answered once the request is served, with its span).
func requestDeadline(h nats.Header, arrival time.Time) (time.Time, error) {
	var values []string
	for k, v := range h {
		if strings.EqualFold(k, wire.HeaderTimeout) {
			values = append(values, v...)
		}
	}
	switch len(values) {
	case 0:
		return time.Time{}, nil
	case 1:
	default:
		return time.Time{}, wire.Errorf(wire.CodeBadRequest, "the %s header appears %d times; give it once", wire.HeaderTimeout, len(values))
	}
	d, err := wire.ParseTimeout(values[0])
	if err != nil {
		return time.Time{}, err
	}
	return arrival.Add(d), nil
}

// DeadlinePassed reports whether ctx, a handler's context or one made from it,
// ended because the request's deadline passed (rather than because the service
// stops, or a bound of the handler's own).
func DeadlinePassed(ctx context.Context) bool {
	return ctx.Err() != nil && errors.Is(context.Cause(ctx), errDeadline)
}

// Interrupted returns what a handler answers when it stops work because ctx ended:
// nil while ctx lasts; timeout when the request's deadline passed (the client has
// given up; nothing to log); otherwise unavailable saying stopping, joined to
// ctx's error for the log.
func Interrupted(ctx context.Context, stopping string) error {
	switch {
	case ctx.Err() == nil:
		return nil
	case DeadlinePassed(ctx):
		return &wire.Error{Code: wire.CodeTimeout, Message: "the request's deadline passed"}
	}
	return errors.Join(&wire.Error{Code: wire.CodeUnavailable, Message: stopping}, ctx.Err())
}

// WithoutDeadline returns a context with ctx's values (its span among them) that
// does not end at the request's deadline, only when the service stops, and a
// function that releases it. A handler runs on it the steps that must not be
// abandoned half-way once an earlier one took effect: a write already sent, which
// may apply whatever the caller does, and the bookkeeping that follows it. It
// drops every bound set on ctx since the request began, so a step that needs one
// sets its own. A context without a request's deadline is returned as it is; so
// is one WithoutDeadline returned, and any made from it.
func WithoutDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	d := deadlines(ctx)
	if d == nil {
		return ctx, func() {}
	}
	out, cancel := context.WithCancel(context.WithValue(context.WithoutCancel(ctx), requestKey{}, (*requestDeadlines)(nil)))
	stop := context.AfterFunc(d.svc, cancel)
	return out, func() { stop(); cancel() }
}

// afterDeadline returns the error a handler ended with as the client is told of it:
// unavailable after the request's deadline passed is the deadline's doing (a read
// or wait the deadline cut short), and is timeout, without the cause to log.
func afterDeadline(ctx context.Context, err error) error {
	var we *wire.Error
	if !DeadlinePassed(ctx) || wire.CodeOf(err) != wire.CodeUnavailable || !errors.As(err, &we) {
		return err
	}
	return &wire.Error{Code: wire.CodeTimeout, Message: "the request's deadline passed: " + we.Message}
}

// replyMargin is how much of a request's time an answer that a handler sends when a
// wait of its own ends (the results gathered so far, an empty page) leaves for the
// answer to reach the caller.
const replyMargin = 200 * time.Millisecond

// HoldWithin bounds wait, how long a handler means to hold a request before it
// answers with what it has, by the request's deadline: the answer is sent a little
// before the caller gives up (replyMargin, or a quarter of the time left when that
// is less), not after, when nobody would read it. wait is returned as it is for a
// request without a deadline.
func HoldWithin(ctx context.Context, wait time.Duration) time.Duration {
	left, ok := Remaining(ctx)
	if !ok {
		return wait
	}
	return max(min(wait, left-min(replyMargin, left/4)), 0)
}

// Remaining returns the time left until the request's deadline, and false for a
// request without one (nor a context made by WithoutDeadline). Bounds a handler set
// on its context itself do not count.
func Remaining(ctx context.Context) (time.Duration, bool) {
	d := deadlines(ctx)
	if d == nil {
		return 0, false
	}
	return time.Until(d.deadline), true
}
