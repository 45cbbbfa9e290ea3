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
			Subject:  Prefix + ".policy.get",
			Request:  "auth.policy.get.request",
			Response: "auth.policy.response",
		}, s.handlePolicyGet),
		endpoint.Add(s.svc, endpoint.Endpoint{
			Name:     "policy-set",
			Subject:  Prefix + ".policy.set",
			Request:  "auth.policy.set.request",
			Response: "auth.policy.response",
		}, s.handlePolicySet),
	)
}

func (s *Service) handleAuthenticate(ctx context.Context, _ *endpoint.Call, req *wire.AuthenticateRequest) (*wire.AuthenticateResponse, error) {
	a, err := s.authenticate(ctx, req.Credentials, req.Properties, req.Client.ClientIP())
	if err != nil {
		return nil, err
	}
	return &a.AuthenticateResponse, nil
}

// PolicyGetRequest is the (empty) body of roster.v1.auth.policy.get.
type PolicyGetRequest struct{}

// PolicySetRequest is the body of roster.v1.auth.policy.set.
type PolicySetRequest struct {
	Policy *policy.Policy `json:"policy"`
	// Revision, if not zero, makes the change conditional: it fails with conflict
	// when the stored policy is no longer at this revision.
	Revision uint64 `json:"revision,omitempty"`
}

// Validate implements endpoint.Validator.
func (r *PolicySetRequest) Validate() error {
	if r.Policy == nil {
		return wire.Errorf(wire.CodeBadRequest, "policy is required")
	}
	if err := r.Policy.Validate(); err != nil {
		return wire.Errorf(wire.CodeBadRequest, "%v", err)
	}
	return nil
}

// PolicyResponse is the reply of both policy endpoints.
type PolicyResponse struct {
	Policy   *policy.Policy `json:"policy"`
	Revision uint64         `json:"revision"`
}

func (s *Service) handlePolicyGet(ctx context.Context, c *endpoint.Call, _ *PolicyGetRequest) (*PolicyResponse, error) {
	if err := s.authorize(ctx, c, policy.ModifySecurity); err != nil {
		return nil, err
	}
	return s.getPolicy(ctx)
}

func (s *Service) handlePolicySet(ctx context.Context, c *endpoint.Call, req *PolicySetRequest) (*PolicyResponse, error) {
	if err := s.authorize(ctx, c, policy.ModifySecurity); err != nil {
		return nil, err
	}
	return s.setPolicy(ctx, req.Policy, req.Revision)
}
