package client

import (
	"context"

	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// Policy returns the stored policy and its revision. The session's roles need
// MODIFY_SECURITY; ErrNotFound means no policy is stored.
func (s *Session) Policy(ctx context.Context) (*policy.Policy, uint64, error) {
	var resp policy.Response
	if err := s.do(ctx, wire.SubjectPolicyGet, &policy.GetRequest{}, &resp); err != nil {
		return nil, 0, err
	}
	return resp.Policy, resp.Revision, nil
}

// SetPolicy replaces the stored policy and returns its new revision; every Roster
// service applies it within a second. With a revision other than 0 the policy is
// replaced only if it is still at that revision (ErrConflict otherwise), so that a
// read-edit-write cannot undo another's change. The session's roles need
// MODIFY_SECURITY; an invalid policy is ErrBadRequest.
func (s *Session) SetPolicy(ctx context.Context, p *policy.Policy, revision uint64) (uint64, error) {
	var resp policy.Response
	if err := s.do(ctx, wire.SubjectPolicySet, &policy.SetRequest{Policy: p, Revision: revision}, &resp); err != nil {
		return 0, err
	}
	return resp.Revision, nil
}
