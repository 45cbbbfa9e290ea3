package auth

import (
	"context"
	"errors"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// register adds the service's endpoints. Each handler is a thin adapter: the endpoint
// package decodes and validates the request, and the handler calls a domain method.
func (s *Service) register() error {
	return errors.Join(
		endpoint.Add(s.svc, endpoint.Endpoint{
			Name:     "authenticate",
			Subject:  wire.SubjectAuthenticate,
			Request:  "auth.authenticate.request",
			Response: "auth.authenticate.response",
		}, s.handleAuthenticate),
		endpoint.Add(s.svc, endpoint.Endpoint{
			Name:     "policy-get",
			Subject:  wire.SubjectPolicyGet,
			Request:  "auth.policy.get.request",
			Response: "auth.policy.response",
		}, s.handlePolicyGet),
		endpoint.Add(s.svc, endpoint.Endpoint{
			Name:     "policy-set",
			Subject:  wire.SubjectPolicySet,
			Request:  "auth.policy.set.request",
			Response: "auth.policy.response",
		}, s.handlePolicySet),
	)
}

func (s *Service) handleAuthenticate(ctx context.Context, _ *endpoint.Call, req *wire.AuthenticateRequest) (*wire.AuthenticateResponse, error) {
	a, err := s.authenticate(ctx, req.Credentials, req.Properties, req.Client.ClientIP())
	s.attempts.record(ctx, "session", err)
	if err != nil {
		return nil, err
	}
	return &a.AuthenticateResponse, nil
}

func (s *Service) handlePolicyGet(ctx context.Context, c *endpoint.Call, _ *policy.GetRequest) (*policy.Response, error) {
	if err := s.authorize(ctx, c, policy.ModifySecurity); err != nil {
		return nil, err
	}
	return s.getPolicy(ctx)
}

func (s *Service) handlePolicySet(ctx context.Context, c *endpoint.Call, req *policy.SetRequest) (*policy.Response, error) {
	if err := s.authorize(ctx, c, policy.ModifySecurity); err != nil {
		return nil, err
	}
	return s.setPolicy(ctx, req.Policy, req.Revision)
}
