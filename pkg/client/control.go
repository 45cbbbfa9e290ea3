package client

import (
	"context"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// Client control: acting on other sessions where the policy permits (VIEW_SESSION
// to read them, MODIFY_SESSION to change or close them).

// GetSession returns another session by id (VIEW_SESSION).
func (s *Session) GetSession(ctx context.Context, id string) (wire.Session, error) {
	var resp wire.SessionGetResponse
	if err := s.doOther(ctx, wire.SubjectSessionGet, &wire.SessionGetRequest{ID: id}, &resp); err != nil {
		return wire.Session{}, err
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
// every session matching req.Filter (MODIFY_SESSION), and returns how many changed.
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
