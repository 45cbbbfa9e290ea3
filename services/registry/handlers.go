package registry

import (
	"context"
	"net/netip"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// register adds the service's endpoints. Each handler is a thin adapter: the endpoint
// package decodes the request strictly and maps errors to the wire, and the handler
// calls a domain method.
func (s *Service) register() error {
	for _, add := range []func() error{
		func() error { return endpoint.Add(s.svc, ep("open"), s.handleOpen) },
		func() error { return endpoint.Add(s.svc, openGateway, s.handleOpenGateway) },
		func() error { return endpoint.Add(s.svc, ep("get"), s.handleGet) },
		func() error { return endpoint.Add(s.svc, ep("list"), s.handleList) },
		func() error { return endpoint.Add(s.svc, ep("update"), s.handleUpdate) },
		func() error { return endpoint.Add(s.svc, ep("keepalive"), s.handleKeepalive) },
		func() error { return endpoint.Add(s.svc, ep("resume"), s.handleResume) },
		func() error { return endpoint.Add(s.svc, ep("change_principal"), s.handleChangePrincipal) },
		func() error { return endpoint.Add(s.svc, ep("close"), s.handleClose) },
		func() error { return endpoint.Add(s.svc, ep("events"), s.handleEvents) },
	} {
		if err := add(); err != nil {
			return err
		}
	}
	return nil
}

// ep describes the endpoint of an operation, with its schemas
// (schemas/session.<op>.request.json and .response.json).
func ep(op string) endpoint.Endpoint {
	return endpoint.Endpoint{Name: op, Request: "session." + op + ".request", Response: "session." + op + ".response"}
}

// openGateway answers as open does.
var openGateway = endpoint.Endpoint{Name: "open_gateway", Request: "session.open_gateway.request", Response: "session.open.response"}

func (s *Service) handleOpen(ctx context.Context, c *endpoint.Call, req *wire.SessionOpenRequest) (*wire.SessionOpenResponse, error) {
	if req.GatewayType != "" || req.GatewayID != "" || req.ClientIP != "" {
		return nil, wire.Errorf(wire.CodeBadRequest, "gateway_type, gateway_id and client_ip open a session on %s, which needs %s", wire.SubjectSessionOpenGateway, policy.GatewaySession)
	}
	return s.open(ctx, c, req)
}

// handleOpenGateway opens a session on a gateway's behalf. Who may is decided by the
// auth callout, which lets only connections with GATEWAY_SESSION publish here.
func (s *Service) handleOpenGateway(ctx context.Context, c *endpoint.Call, req *wire.SessionOpenRequest) (*wire.SessionOpenResponse, error) {
	if req.GatewayType == "" || req.GatewayID == "" {
		return nil, wire.Errorf(wire.CodeBadRequest, "%s needs gateway_type and gateway_id", wire.SubjectSessionOpenGateway)
	}
	if req.ClientIP != "" {
		addr, err := netip.ParseAddr(req.ClientIP)
		if err != nil || addr.Zone() != "" {
			return nil, wire.Errorf(wire.CodeBadRequest, "client_ip %q is not an IP address", req.ClientIP)
		}
		req.ClientIP = addr.Unmap().String()
	}
	return s.open(ctx, c, req)
}

func (s *Service) handleGet(ctx context.Context, c *endpoint.Call, req *wire.SessionGetRequest) (*wire.SessionGetResponse, error) {
	return s.get(ctx, c, req)
}

func (s *Service) handleList(ctx context.Context, c *endpoint.Call, req *wire.SessionListRequest) (*wire.SessionListResponse, error) {
	return s.list(ctx, c, req)
}

func (s *Service) handleUpdate(ctx context.Context, c *endpoint.Call, req *wire.SessionUpdateRequest) (*wire.SessionUpdateResponse, error) {
	return s.update(ctx, c, req)
}

func (s *Service) handleKeepalive(ctx context.Context, c *endpoint.Call, req *wire.SessionKeepaliveRequest) (*wire.SessionKeepaliveResponse, error) {
	return s.keepalive(ctx, c, req)
}

func (s *Service) handleResume(ctx context.Context, c *endpoint.Call, req *wire.SessionResumeRequest) (*wire.SessionResumeResponse, error) {
	return s.resume(ctx, c, req)
}

func (s *Service) handleChangePrincipal(ctx context.Context, c *endpoint.Call, req *wire.SessionChangePrincipalRequest) (*wire.SessionChangePrincipalResponse, error) {
	return s.changePrincipal(ctx, c, req)
}

func (s *Service) handleClose(ctx context.Context, c *endpoint.Call, req *wire.SessionCloseRequest) (*wire.SessionCloseResponse, error) {
	return s.close(ctx, c, req)
}

func (s *Service) handleEvents(ctx context.Context, c *endpoint.Call, req *wire.SessionEventsRequest) (*wire.SessionEventsResponse, error) {
	return s.events(ctx, c, req)
}
