package client

import (
	"context"
	"errors"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// NATS drops a publish the connection is not permitted, and tells the connection so
// only in an asynchronous error: a request to such a subject would wait for its
// whole timeout. The one subject an admitted connection may be refused is the
// gateway open (the auth callout grants it with GATEWAY_SESSION); calls to it
// watch for that error and fail at once with ErrForbidden.

// errGatewayDenied is the cause of a gateway open the connection may not make.
var errGatewayDenied = &wire.Error{Code: wire.CodeForbidden,
	Message: "this connection may not open sessions on a gateway's behalf: its principal's roles lack GATEWAY_SESSION (granted when the connection is admitted)"}

// watchDenied returns ctx, ended with errGatewayDenied if NATS refuses the
// connection a publish to the gateway open subject, and a func to stop watching.
func (c *Client) watchDenied(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	c.mu.Lock()
	if c.denyWatch == nil {
		c.denyWatch = map[*context.CancelCauseFunc]struct{}{}
	}
	c.denyWatch[&cancel] = struct{}{}
	c.mu.Unlock()
	return ctx, func() {
		c.mu.Lock()
		delete(c.denyWatch, &cancel)
		c.mu.Unlock()
		cancel(nil)
	}
}

// asyncError ends the gateway opens in flight when NATS reports that it refused
// the connection a publish to their subject, then calls next, the handler the
// caller's options set; without one, it logs the error to the client's logger
// (nats.go's own default writes it to the process's stderr, past the logger the
// application gave).
func (c *Client) asyncError(next nats.ErrHandler) nats.ErrHandler {
	denied := `publish to "` + wire.SubjectSessionOpenGateway + `"`
	return func(nc *nats.Conn, sub *nats.Subscription, err error) {
		gateway := errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(strings.ToLower(err.Error()), denied)
		if gateway {
			c.mu.Lock()
			for cancel := range c.denyWatch {
				(*cancel)(errGatewayDenied)
			}
			c.mu.Unlock()
		}
		switch {
		case next != nil:
			next(nc, sub, err)
		case gateway:
			// The open it refused fails with ErrForbidden, which says it all.
			c.log.Debug("roster: NATS refused a gateway open", "err", err)
		case sub != nil:
			c.log.Warn("roster: NATS error", "err", err, "subject", sub.Subject)
		default:
			c.log.Warn("roster: NATS error", "err", err)
		}
	}
}

// userErrorHandler reports whether opts, the caller's NATS options, set an
// asynchronous error handler.
func userErrorHandler(opts []nats.Option) bool {
	var o nats.Options
	for _, opt := range opts {
		_ = opt(&o)
	}
	return o.AsyncErrorCB != nil
}
