package registry

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestChangePrincipalAfterTheDeadlineKeepsTheToken: a client whose change of
// principal's deadline passes while the auth service answers has given up: it
// never learns the new token. The session used to be written all the same, its
// token rotated, so the client's old token stopped working and it was locked out
// of its own session. Like an open, a change of principal looks at the deadline
// once more after the authentication and before the write: it is answered
// timeout, and nothing changes.
func TestChangePrincipalAfterTheDeadlineKeepsTheToken(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	startAuth(t, srv)
	var slow atomic.Bool
	startRegistry(t, srv, Config{afterAuthenticate: func(ctx context.Context) {
		if slow.Load() {
			<-ctx.Done() // the auth service's answer is taken after the deadline
		}
	}})
	nc := srv.ClientConn(t)
	c, _ := open(t, nc, nil)

	slow.Store(true)
	creds := &wire.Credentials{Type: wire.CredentialsPassword, Username: "alice", Password: "pw"}
	var resp wire.SessionChangePrincipalResponse
	err := natstest.CallGivingTimeout(t, nc, wire.SubjectSessionChangePrincipal, c.header(),
		&wire.SessionChangePrincipalRequest{Credentials: creds}, 300, &resp)
	wantCode(t, err, wire.CodeTimeout)
	slow.Store(false)

	// The old token still opens the session, whose principal is unchanged.
	var got wire.SessionGetResponse
	if err := c.call(wire.SubjectSessionGet, &wire.SessionGetRequest{}, &got); err != nil {
		t.Fatalf("the session with its old token after a change of principal answered timeout: %v", err)
	}
	if got.Session.Principal != "anonymous" {
		t.Fatalf("principal %q after a change of principal answered timeout, want anonymous", got.Session.Principal)
	}
}
