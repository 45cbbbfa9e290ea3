package registry

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestAuthenticateThatNeverAnswersIsBounded: an auth instance that takes an
// authenticate request and never answers (it died, or lost its connection, in the
// middle of the check) must not hold the open or change of principal for good. The
// registry asked with the service's context, which has no deadline, so the request
// waited until the registry stopped, holding one of its MaxConcurrent workers: a
// few such requests and the instance answered nothing at all. It now gives up after
// Config.AuthTimeout with timeout.
func TestAuthenticateThatNeverAnswersIsBounded(t *testing.T) {
	srv := startServer(t)
	// An auth stand-in that admits anonymous sessions and swallows every password
	// attempt, as an instance that dies mid-check does.
	anc := srv.ServiceConn(t)
	if _, err := anc.QueueSubscribe(wire.SubjectAuthenticate, "auth", func(m *nats.Msg) {
		var req wire.AuthenticateRequest
		if json.Unmarshal(m.Data, &req) != nil || req.Credentials != nil && req.Credentials.Type == wire.CredentialsPassword {
			return
		}
		data, _ := json.Marshal(wire.AuthenticateResponse{Principal: "anonymous", Roles: []string{"user"}, Authenticator: "test"})
		_ = m.Respond(data)
	}); err != nil {
		t.Fatal(err)
	}
	if err := anc.Flush(); err != nil {
		t.Fatal(err)
	}
	startRegistry(t, srv, Config{MaxConcurrent: 1, AuthTimeout: time.Second})
	nc := srv.ClientConn(t)
	c, _ := open(t, nc, nil)
	creds := &wire.Credentials{Type: wire.CredentialsPassword, Username: "u", Password: "pw"}
	for _, tc := range []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"open", func(ctx context.Context) error {
			return wire.Call(ctx, nc, wire.SubjectSessionOpen, nil, &wire.SessionOpenRequest{Credentials: creds}, nil)
		}},
		{"change principal", func(ctx context.Context) error {
			return wire.Call(ctx, nc, wire.SubjectSessionChangePrincipal, c.header(), &wire.SessionChangePrincipalRequest{Credentials: creds}, nil)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := tc.call(ctx)
			if errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("got no answer in 10 s (%v), want timeout from the registry after its AuthTimeout (1 s)", err)
			}
			wantCode(t, err, wire.CodeTimeout)
			// The worker is free again: the session's own requests are answered.
			if err := c.call(wire.SubjectSessionKeepalive, nil, nil); err != nil {
				t.Fatalf("keepalive after the refused %s: %v", tc.name, err)
			}
		})
	}
}
