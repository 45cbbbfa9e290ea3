package auth

import (
	"context"
	"errors"
	"fmt"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// getPolicy reads the stored policy.
func (s *Service) getPolicy(ctx context.Context) (*policy.Response, error) {
	p, rev, err := s.store.Get(ctx)
	if errors.Is(err, policy.ErrNoPolicy) {
		return nil, wire.Errorf(wire.CodeNotFound, "no policy is stored")
	}
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	return &policy.Response{Policy: p, Revision: rev}, nil
}

// setPolicy stores p, conditionally on revision when it is not zero. Every service
// following the bucket sees the change within a second.
func (s *Service) setPolicy(ctx context.Context, p *policy.Policy, revision uint64) (*policy.Response, error) {
	rev, err := s.store.Put(ctx, p, revision)
	switch {
	case errors.Is(err, policy.ErrConflict):
		return nil, wire.Errorf(wire.CodeConflict, "the stored policy is not at revision %d (it changed since, or never was): read it again and retry", revision)
	case err != nil:
		return nil, fmt.Errorf("auth: %w", err)
	}
	s.log.InfoContext(ctx, "policy changed", "revision", rev)
	return &policy.Response{Policy: p, Revision: rev}, nil
}

// authorize checks that the caller of a request may use perm. A request that did
// not cross the account import came from inside the services account, whose
// credentials only Roster's services and operators hold; it is allowed. That is
// told by the reply subject the import writes (endpoint.Call.Internal), not by a
// missing Nats-Request-Info, which a client can hide from the service. A client
// must name a session (Roster-Session, Roster-Token) whose roles grant perm.
func (s *Service) authorize(ctx context.Context, c *endpoint.Call, perm policy.Permission) error {
	if c.Internal() {
		return nil
	}
	if c.SessionID == "" || c.Token == "" {
		return wire.Errorf(wire.CodeUnauthenticated, "this request needs a session: send the %s and %s headers", wire.HeaderSession, wire.HeaderToken)
	}
	if s.cfg.Sessions == nil {
		return wire.Errorf(wire.CodeForbidden, "%s: sessions cannot be checked by this auth service", perm)
	}
	roles, err := s.cfg.Sessions.SessionRoles(ctx, c.SessionID, c.Token)
	if err != nil {
		return err
	}
	if !s.policy.Allowed(roles, perm, "") {
		return wire.Errorf(wire.CodeForbidden, "%s is required", perm)
	}
	return nil
}
