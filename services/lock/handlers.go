package lock

import (
	"context"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// register adds the service's endpoints. Each handler is a thin adapter: the endpoint
// package decodes the request strictly and validates it (wire's Validate methods),
// and the handler calls a domain method.
func (s *Service) register() error {
	for _, add := range []func() error{
		func() error { return endpoint.Add(s.svc, ep("acquire"), s.handleAcquire) },
		func() error { return endpoint.Add(s.svc, ep("release"), s.handleRelease) },
		func() error { return endpoint.Add(s.svc, ep("cancel"), s.handleCancel) },
		func() error { return endpoint.Add(s.svc, ep("list"), s.handleList) },
	} {
		if err := add(); err != nil {
			return err
		}
	}
	return nil
}

// ep describes the endpoint of an operation, with its schemas
// (schemas/lock.<op>.request.json and .response.json).
func ep(op string) endpoint.Endpoint {
	return endpoint.Endpoint{Name: op, Request: "lock." + op + ".request", Response: "lock." + op + ".response"}
}

func (s *Service) handleAcquire(ctx context.Context, c *endpoint.Call, req *wire.LockAcquireRequest) (*wire.LockAcquireResponse, error) {
	caller, err := s.authenticate(c)
	if err != nil {
		return nil, err
	}
	l, err := s.acquire(ctx, caller, c.Reply, req)
	if err != nil {
		return nil, err
	}
	return &wire.LockAcquireResponse{Lock: l}, nil
}

func (s *Service) handleRelease(ctx context.Context, c *endpoint.Call, req *wire.LockReleaseRequest) (*wire.LockReleaseResponse, error) {
	caller, err := s.authenticate(c)
	if err != nil {
		return nil, err
	}
	l, err := s.release(ctx, caller, req)
	if err != nil {
		return nil, err
	}
	return &wire.LockReleaseResponse{Lock: l}, nil
}

func (s *Service) handleCancel(ctx context.Context, c *endpoint.Call, req *wire.LockCancelRequest) (*wire.LockCancelResponse, error) {
	caller, err := s.authenticate(c)
	if err != nil {
		return nil, err
	}
	return s.cancelWait(ctx, caller, req)
}

func (s *Service) handleList(_ context.Context, c *endpoint.Call, req *wire.LockListRequest) (*wire.LockListResponse, error) {
	caller, err := s.authenticate(c)
	if err != nil {
		return nil, err
	}
	return s.list(caller, req)
}
