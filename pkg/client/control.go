package client

import (
	"context"
	"errors"
	"time"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// Client control: acting on other sessions where the policy permits (VIEW_SESSION
// to read them, MODIFY_SESSION to close them, both to change their properties).

// GetSession returns another session by id (VIEW_SESSION).
func (s *Session) GetSession(ctx context.Context, id string) (wire.Session, error) {
	var resp wire.SessionGetResponse
	if err := s.doOther(ctx, wire.SubjectSessionGet, &wire.SessionGetRequest{ID: id}, &resp); err != nil {
		return wire.Session{}, err
	}
	if resp.Session == nil {
		return wire.Session{}, errNoSession
	}
	return *resp.Session, nil
}

// ListSessions returns one page of the sessions matching req.Filter (VIEW_SESSION).
// Pass the returned Next as req.After for the next page.
func (s *Session) ListSessions(ctx context.Context, req wire.SessionListRequest) (*wire.SessionListResponse, error) {
	var resp wire.SessionListResponse
	if err := s.doOther(ctx, wire.SubjectSessionList, &req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// UpdateSessions sets and removes user properties of another session (req.ID) or of
// every session matching req.Filter (VIEW_SESSION and MODIFY_SESSION), and returns
// how many changed.
func (s *Session) UpdateSessions(ctx context.Context, req wire.SessionUpdateRequest) (int, error) {
	var resp wire.SessionUpdateResponse
	if err := s.doOther(ctx, wire.SubjectSessionUpdate, &req, &resp); err != nil {
		return 0, err
	}
	return resp.Updated, nil
}

// CloseSessions closes another session (req.ID) or every session matching
// req.Filter (MODIFY_SESSION), and returns how many it closed.
func (s *Session) CloseSessions(ctx context.Context, req wire.SessionCloseRequest) (int, error) {
	var resp wire.SessionCloseResponse
	if err := s.doOther(ctx, wire.SubjectSessionClose, &req, &resp); err != nil {
		return 0, err
	}
	return resp.Closed, nil
}

// Events returns one page of stored session events: the session's own (req.SessionID
// set to its id), another session's or every session's (VIEW_SESSION). Pass the
// returned NextSeq as req.StartSeq for the next page. With req.WaitMS (at most a
// minute), a read that finds nothing waits up to that long for the first matching
// event, and then returns an empty page, without error. The registry is told ctx's
// deadline and answers shortly before it when that comes first: a wait longer than
// ctx allows returns the empty page early rather than failing. FollowEvents reads
// page after page this way for you.
func (s *Session) Events(ctx context.Context, req wire.SessionEventsRequest) (*wire.SessionEventsResponse, error) {
	var resp wire.SessionEventsResponse
	if err := s.doOther(ctx, wire.SubjectSessionEvents, &req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// FollowEvents calls fn for every session event req selects, in stream order, from
// req's start on, and then for every new one as it is stored, until ctx ends or fn
// returns an error (which FollowEvents returns). A reader that keeps the Seq of the
// last event it handled and starts again from Seq+1 misses nothing, across its own
// restarts and the registry's, for as long as the events stream keeps events.
// Errors that a retry may cure (unavailable, a timeout) are retried, after a pause
// of up to 2 s that a change of the session's state ends (a resume after Roster
// restarted, say); others end it, and so does the close of the session's Client
// (ErrUnavailable for a session taken with Attach).
//
// The first read is in ctx's trace; every later one is a trace of its own that
// links ctx's span, so that the caller's trace stays bounded however long the
// follow runs (a read every 30 s when nothing happens).
func (s *Session) FollowEvents(ctx context.Context, req wire.SessionEventsRequest, fn func(wire.StoredSessionEvent) error) error {
	const wait = 30 * time.Second
	req.WaitMS = wait.Milliseconds()
	traced := ctx
	for backoff := followBackoffFirst; ; {
		// Taken before the read: a resume while it fails ends the pause below.
		changed := s.stateChanged()
		rctx, cancel := context.WithTimeout(traced, wait+10*time.Second)
		traced = inOwnTrace(ctx)
		resp, err := s.Events(rctx, req)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			// A closed connection never comes back: the Client was closed (a
			// session taken with Attach outlives it, and its reads fail
			// unavailable for good).
			if s.c.nc.IsClosed() || !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
				return err
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-changed:
				// The session is back (or closed, which the next read says):
				// read again now rather than when the pause ends.
				backoff = followBackoffFirst
			case <-time.After(backoff):
				backoff = min(2*backoff, followBackoffMax)
			}
			continue
		}
		backoff = followBackoffFirst
		for _, ev := range resp.Events {
			if err := fn(ev); err != nil {
				return err
			}
		}
		if resp.NextSeq != 0 {
			req.StartSeq, req.StartTime = resp.NextSeq, nil
		}
	}
}

// followBackoffFirst and followBackoffMax bound FollowEvents' pause after a failed
// read. Variables for tests.
var followBackoffFirst, followBackoffMax = 50 * time.Millisecond, 2 * time.Second
