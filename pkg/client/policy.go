package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"

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
//
// A policy that withdraws a grant this client's connection holds (the development
// policy's shared inbox, say) closes that connection a second after it is stored,
// and the connection is admitted again under the new policy. Should the answer
// still be lost with the connection, SetPolicy reads the stored policy once the
// connection is back (waiting up to 5 s, while ctx allows) and, when it is p (and,
// with a revision, stored after it), returns its revision — whoever stored it;
// otherwise the ErrUnavailable of the lost answer, which leaves the outcome unknown.
func (s *Session) SetPolicy(ctx context.Context, p *policy.Policy, revision uint64) (uint64, error) {
	var resp policy.Response
	err := s.do(ctx, wire.SubjectPolicySet, &policy.SetRequest{Policy: p, Revision: revision}, &resp)
	if err == nil {
		return resp.Revision, nil
	}
	if inDoubt(err) {
		// A change stored under revision has a later one: at revision itself, the
		// policy was already p and this change was refused (conflict) or not made.
		if rev, ok := s.storedAs(ctx, p); ok && (revision == 0 || rev > revision) {
			return rev, nil
		}
	}
	return 0, err
}

// storedAs reports whether the stored policy is p, and its revision, reading it
// once the connection is back (within closeAwayWait).
func (s *Session) storedAs(ctx context.Context, p *policy.Policy) (uint64, bool) {
	want, err := json.Marshal(p)
	if err != nil {
		return 0, false
	}
	wait, cancel := awayWait(ctx)
	defer cancel()
	for {
		stored, rev, err := s.Policy(wait)
		if errors.Is(err, ErrNotSent) && s.c.waitBack(wait) {
			continue
		}
		if err != nil {
			return 0, false
		}
		got, err := json.Marshal(stored)
		return rev, err == nil && bytes.Equal(got, want)
	}
}
