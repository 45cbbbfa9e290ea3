package client_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestGatewayOpenNeedsGatewaySession: a connection may open sessions on a gateway's
// behalf only if its own principal has GATEWAY_SESSION; refused, the open fails with
// ErrForbidden (NATS drops the publish, and the SDK learns it from the server's
// asynchronous error rather than waiting out the request), and opens no session.
// The sessions of a gateway connection are its users': their credentials decide
// their principal and roles.
func TestGatewayOpenNeedsGatewaySession(t *testing.T) {
	t.Parallel()
	p := startSecured(t)
	gw := client.Options{GatewayType: "web", GatewayID: "edge-1", Credentials: client.Password("alice", "wonderland")}

	for name, c := range map[string]*client.Client{
		"anonymous": connect(t, p.ClientURL()),
		"trader":    connect(t, p.ClientURL(), client.WithCredentials(client.Password("alice", "wonderland"))),
	} {
		if _, err := c.Open(ctxT(t), gw); !errors.Is(err, client.ErrForbidden) {
			t.Fatalf("%s connection: gateway open: %v, want ErrForbidden", name, err)
		}
		// The connection still works, and opens its own sessions.
		s, err := c.Open(ctxT(t), client.Options{})
		if err != nil {
			t.Fatalf("%s connection: plain open after the refusal: %v", name, err)
		}
		closeSession(t, s)
	}

	root := open(t, p.ClientURL(), client.Options{Credentials: client.Password("root", "toor")})
	if got, err := root.ListSessions(ctxT(t), wire.SessionListRequest{Filter: `$GatewayId is "edge-1"`}); err != nil || got.Total != 0 {
		t.Fatalf("sessions of the refused gateway: %+v, %v; want none", got, err)
	}

	edge := connect(t, p.ClientURL(), client.WithCredentials(client.JWT(signJWT(t, "edge", "gateway"))))
	s, err := edge.Open(ctxT(t), gw)
	if err != nil {
		t.Fatalf("gateway connection: %v", err)
	}
	defer closeSession(t, s)
	props := s.Properties()
	if props["$GatewayType"] != "web" || props["$GatewayId"] != "edge-1" || props["$Principal"] != "alice" {
		t.Fatalf("gateway session: %v, want alice's session through web/edge-1", props)
	}
}

// TestGatewayUsersAreThrottledByTheirOwnAddress: a gateway gives each user's address
// (Options.ClientIP), which becomes the session's $ClientIP and by which the auth
// service counts failed attempts. Without it every user of a gateway had the
// gateway's address: five wrong passwords from any one of them throttled them all.
func TestGatewayUsersAreThrottledByTheirOwnAddress(t *testing.T) {
	t.Parallel()
	p := startSecured(t)
	edge := connect(t, p.ClientURL(), client.WithCredentials(client.JWT(signJWT(t, "edge", "gateway"))))
	via := func(ip, user, password string) client.Options {
		return client.Options{GatewayType: "web", GatewayID: "edge-1", ClientIP: ip, Credentials: client.Password(user, password)}
	}
	// Failures from one user's address, each another guess (a repeat counts once),
	// until that address is throttled.
	for i := 0; ; i++ {
		_, err := edge.Open(ctxT(t), via("192.0.2.1", fmt.Sprintf("guess%d", i), "wrong"))
		if errors.Is(err, client.ErrThrottled) {
			break
		}
		if !errors.Is(err, client.ErrUnauthenticated) || i > 20 {
			t.Fatalf("guess %d: %v, want unauthenticated until throttled", i, err)
		}
	}
	if _, err := edge.Open(ctxT(t), via("192.0.2.1", "alice", "wonderland")); !errors.Is(err, client.ErrThrottled) {
		t.Fatalf("alice from the throttled address: %v, want ErrThrottled", err)
	}
	s, err := edge.Open(ctxT(t), via("2001:db8::7", "alice", "wonderland"))
	if err != nil {
		t.Fatalf("alice from another address through the same gateway: %v", err)
	}
	defer closeSession(t, s)
	if got := s.Properties()["$ClientIP"]; got != "2001:db8::7" {
		t.Fatalf("$ClientIP %q, want the address the gateway gave", got)
	}
	if _, err := edge.Open(ctxT(t), via("not-an-address", "alice", "wonderland")); !errors.Is(err, client.ErrBadRequest) {
		t.Fatalf("client_ip not an address: %v, want ErrBadRequest", err)
	}
}

// TestGatewayUsersChangePrincipalByTheirOwnAddress: a gateway user's session
// re-authenticates (change_principal) from the address the gateway gave at open, the
// session's $ClientIP, as the open did. It was counted by the gateway connection's
// address: five wrong passwords in one user's change of principal throttled every
// other user's change of principal through the same gateway for a minute.
func TestGatewayUsersChangePrincipalByTheirOwnAddress(t *testing.T) {
	t.Parallel()
	p := startSecured(t)
	edge := connect(t, p.ClientURL(), client.WithCredentials(client.JWT(signJWT(t, "edge", "gateway"))))
	via := func(ip, user, password string) client.Options {
		return client.Options{GatewayType: "web", GatewayID: "edge-1", ClientIP: ip, Credentials: client.Password(user, password)}
	}
	mallory, err := edge.Open(ctxT(t), via("192.0.2.1", "alice", "wonderland"))
	if err != nil {
		t.Fatal(err)
	}
	defer closeSession(t, mallory)
	bob, err := edge.Open(ctxT(t), via("198.51.100.2", "alice", "wonderland"))
	if err != nil {
		t.Fatal(err)
	}
	defer closeSession(t, bob)
	for i := 0; ; i++ {
		err := mallory.ChangePrincipal(ctxT(t), &wire.Credentials{Username: fmt.Sprintf("guess%d", i), Password: "wrong"})
		if errors.Is(err, client.ErrThrottled) {
			break
		}
		if !errors.Is(err, client.ErrUnauthenticated) || i > 20 {
			t.Fatalf("guess %d: %v, want unauthenticated until throttled", i, err)
		}
	}
	if err := bob.ChangePrincipal(ctxT(t), &wire.Credentials{Username: "root", Password: "toor"}); err != nil {
		t.Fatalf("another user of the gateway changes principal: %v, want it done", err)
	}
	// The guesses were counted against the guesser's own address.
	if _, err := edge.Open(ctxT(t), via("192.0.2.1", "alice", "wonderland")); !errors.Is(err, client.ErrThrottled) {
		t.Fatalf("open from the guesser's address: %v, want ErrThrottled", err)
	}
}
