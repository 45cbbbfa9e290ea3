package messaging

import (
	"context"

	"github.com/nats-io/nkeys"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// register adds the service's endpoints. Each handler is a thin adapter: the endpoint
// package decodes and validates the request, the handler authenticates the calling
// session and calls a domain method.
func (s *Service) register() error {
	if err := endpoint.Add(s.svc, endpoint.Endpoint{Name: "send", Request: "msg.send.request", Response: "msg.send.response"}, s.handleSend); err != nil {
		return err
	}
	return endpoint.Add(s.svc, endpoint.Endpoint{Name: "request", Request: "msg.request.request", Response: "msg.request.response"}, s.handleRequest)
}

func (s *Service) handleSend(ctx context.Context, c *endpoint.Call, req *wire.MsgSendRequest) (*wire.MsgSendResponse, error) {
	from, err := s.caller(c)
	if err != nil {
		return nil, err
	}
	return s.send(ctx, from, &req.Message)
}

func (s *Service) handleRequest(ctx context.Context, c *endpoint.Call, req *wire.MsgRequestRequest) (*wire.MsgRequestResponse, error) {
	from, err := s.caller(c)
	if err != nil {
		return nil, err
	}
	// Streamed results go to the connection that asks, which need not be the one the
	// session is bound to (a session attached from another process): the prefix of
	// the asking connection's verified key is one only it can read.
	from.deliveryKey = ""
	if ri := c.Info(); ri != nil && nkeys.IsValidPublicUserKey(ri.User) {
		from.deliveryKey = ri.User
	}
	return s.request(ctx, from, req, c.Reply)
}
