package registry

import (
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// An update acknowledged while a change of principal is being authenticated is
// overwritten by the change of principal: a lost update.
func TestChangePrincipalKeepsAConcurrentUpdate(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	startAuth(t, srv)
	startRegistry(t, srv, Config{})
	e := &env{srv: srv, js: srv.JetStream(t)}
	e.kv, _ = e.js.KeyValue(t.Context(), "ROSTER_SESSIONS")
	nc := srv.ClientConn(t)
	c, _ := open(t, nc, &wire.SessionOpenRequest{Properties: map[string]string{"a": "1"}})

	// A copy of every authenticate request (a plain subscription beside the stand-in's
	// queue group): the update must come while the change of principal waits for it.
	watcher := srv.ServiceConn(t)
	asked, err := watcher.SubscribeSync(wire.SubjectAuthenticate)
	if err != nil {
		t.Fatal(err)
	}
	// In place on the server before the request goes out: without it the copy
	// could be missed (seen once in CI: "never asked the auth service").
	if err := watcher.Flush(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		var resp wire.SessionChangePrincipalResponse
		done <- c.call(wire.SubjectSessionChangePrincipal, &wire.SessionChangePrincipalRequest{
			Credentials: &wire.Credentials{Type: wire.CredentialsPassword, Username: "alice", Password: "slowpw"}}, &resp)
	}()
	if _, err := asked.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("the change of principal never asked the auth service: %v", err)
	}
	var upd wire.SessionUpdateResponse
	if err := c.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Set: map[string]string{"b": "2"}}, &upd); err != nil {
		t.Fatal(err)
	}
	if upd.Updated != 1 || upd.Session.Properties["b"] != "2" {
		t.Fatalf("update: %+v", upd)
	}
	select {
	case err := <-done:
		// The stand-in answers slowpw after 500 ms: the update took longer, and the
		// two did not overlap.
		t.Fatalf("the change of principal (%v) ended before the update was answered: nothing concurrent was tested", err)
	default:
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r := e.record(t, c.id)
	if r.Principal != "alice" {
		t.Fatalf("principal %q", r.Principal)
	}
	if r.User["b"] != "2" {
		t.Fatalf("acknowledged update b=2 lost: properties after the change of principal are %v", r.User)
	}
}
