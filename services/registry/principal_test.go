package registry

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// startSlowAuth is startAuth, except that a password "slowpw" is accepted after
// delay (an auth service under load, or a bcrypt check).
func startSlowAuth(t *testing.T, srv *natstest.Server, delay time.Duration) {
	t.Helper()
	nc := srv.ServiceConn(t)
	_, err := nc.QueueSubscribe(wire.SubjectAuthenticate, "auth", func(m *nats.Msg) {
		var req wire.AuthenticateRequest
		_ = json.Unmarshal(m.Data, &req)
		resp := wire.AuthenticateResponse{Principal: "anonymous", Roles: []string{"user"}, Authenticator: "test"}
		if c := req.Credentials; c != nil && c.Type == wire.CredentialsPassword && c.Password == "slowpw" {
			time.Sleep(delay)
			resp.Principal, resp.Roles = c.Username, []string{"user"}
		}
		resp.Properties = req.Properties // accepted as proposed
		data, _ := json.Marshal(resp)
		_ = m.Respond(data)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// An update acknowledged while a change of principal is being authenticated is
// overwritten by the change of principal: a lost update.
func TestChangePrincipalKeepsAConcurrentUpdate(t *testing.T) {
	srv := startServer(t)
	startSlowAuth(t, srv, 500*time.Millisecond)
	startRegistry(t, srv, Config{})
	e := &env{srv: srv, js: srv.JetStream(t)}
	e.kv, _ = e.js.KeyValue(t.Context(), "ROSTER_SESSIONS")
	nc := srv.ClientConn(t)
	c, _ := open(t, nc, &wire.SessionOpenRequest{Properties: map[string]string{"a": "1"}})

	done := make(chan error, 1)
	go func() {
		var resp wire.SessionChangePrincipalResponse
		done <- c.call(wire.SubjectSessionChangePrincipal, &wire.SessionChangePrincipalRequest{
			Credentials: &wire.Credentials{Type: wire.CredentialsPassword, Username: "alice", Password: "slowpw"}}, &resp)
	}()
	time.Sleep(150 * time.Millisecond) // the change of principal is waiting for auth
	var upd wire.SessionUpdateResponse
	if err := c.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Set: map[string]string{"b": "2"}}, &upd); err != nil {
		t.Fatal(err)
	}
	if upd.Updated != 1 || upd.Session.Properties["b"] != "2" {
		t.Fatalf("update: %+v", upd)
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
