package auth

import (
	"errors"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestPolicyEndpointsTrustNoClientWithoutRequestInfo: the policy endpoints took a
// request without Nats-Request-Info for one from inside the services account, and a
// client can have that header missing or unreadable when a service reads it. The
// server removes a client's own copy only from lines that follow a CRLF and puts
// its line in place of the block's last two bytes, while nats.go also ends a line
// at a bare LF and skips a line with no name: a header block ending ":\r\n" turns
// the server's line into a nameless one that is dropped, and a copy after a bare LF
// stays in front of the server's. Either way an anonymous client with no session
// replaced the policy. A request that crossed the import is now known by its reply
// subject, which the server writes too.
func TestPolicyEndpointsTrustNoClientWithoutRequestInfo(t *testing.T) {
	srv, kp := calloutServer(t)
	h := start(t, srv, calloutConfig(t, kp, testPolicy()))
	evil := testPolicy()
	evil.Anonymous.Roles = []string{"admin"}
	body := mustJSON(t, policy.SetRequest{Policy: evil})
	for _, tc := range []struct{ name, header string }{
		{"server's line made nameless", "NATS/1.0\r\nX: y\r\n:\r\n"},
		{"unreadable copy after a bare LF", "NATS/1.0\r\nX: y\nNats-Request-Info: x\r\n\r\n"},
		{"no header at all", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := natstest.DialRaw(t, srv.ClientURL(), nil)
			for subject, body := range map[string][]byte{wire.SubjectPolicySet: body, wire.SubjectPolicyGet: []byte("{}")} {
				reply, err := raw.Request(subject, tc.header, body, 5*time.Second)
				if err != nil {
					t.Fatalf("%s: %v", subject, err)
				}
				if err := wire.ReplyError(reply); !errors.Is(err, wire.ErrUnauthenticated) {
					t.Errorf("%s without a session: got %v (%s), want unauthenticated", subject, err, reply.Data)
				}
			}
			p, _, err := h.svc.store.Get(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Anonymous.Roles) != 1 || p.Anonymous.Roles[0] != "anonymous" {
				t.Fatalf("stored policy's anonymous roles: got %v, want [anonymous]", p.Anonymous.Roles)
			}
		})
	}
}
