package auth

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/nats-io/nuid"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// opensGateway reports whether a gateway open published on c reaches the services
// account: it publishes one, then a plain open, and waits for the plain one (the
// two travel in order). An error: c could not publish (reconnecting, say), or the
// plain open did not arrive.
func opensGateway(c *client, arrived <-chan *nats.Msg) (bool, error) {
	mark := []byte(nuid.Next())
	if err := c.nc.Publish(wire.SubjectSessionOpenGateway, mark); err != nil {
		return false, err
	}
	if err := c.nc.Publish(wire.SubjectSessionOpen, mark); err != nil {
		return false, err
	}
	if err := c.nc.Flush(); err != nil {
		return false, err
	}
	gateway := false
	timeout := time.After(2 * time.Second)
	for {
		select {
		case m := <-arrived:
			if string(m.Data) != string(mark) {
				continue // of an earlier round
			}
			if m.Subject == wire.SubjectSessionOpenGateway {
				gateway = true
				continue
			}
			return gateway, nil
		case <-timeout:
			return false, errors.New("the plain open did not arrive")
		}
	}
}

// TestRevokedGatewayGrantEndsOnAdmittedConnections: a policy change that takes
// GATEWAY_SESSION from a role applies to the connections already admitted with it,
// not only to those admitted after: NATS, which enforces the grant, let an admitted
// gateway connection open gateway sessions for as long as it stayed connected.
func TestRevokedGatewayGrantEndsOnAdmittedConnections(t *testing.T) {
	srv, kp := calloutServer(t)
	p := testPolicy()
	p.Roles["gateway"] = []policy.Grant{{Permission: policy.GatewaySession}}
	start(t, srv, calloutConfig(t, kp, p))
	svc := srv.ServiceConn(t)
	arrived := make(chan *nats.Msg, 64)
	sub, err := svc.ChanSubscribe(wire.SessionPrefix+".>", arrived)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := svc.Flush(); err != nil {
		t.Fatal(err)
	}

	token := sign(t, jwt.SigningMethodHS256, claims("edge-1", []string{"gateway"}, time.Now().Add(time.Hour)))
	gw := mustConnect(t, srv, nats.Token(token), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if ok, err := opensGateway(gw, arrived); err != nil || !ok {
		t.Fatalf("before the change: gateway open arrived %v (%v), want it to", ok, err)
	}

	revoked := testPolicy()
	revoked.Roles["gateway"] = []policy.Grant{{Permission: policy.SendToSession}}
	if err := wire.Call(t.Context(), svc, wire.SubjectPolicySet, nil, policy.SetRequest{Policy: revoked}, &policy.Response{}); err != nil {
		t.Fatalf("policy.set: %v", err)
	}
	natstest.CheckFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		ok, err := opensGateway(gw, arrived)
		switch {
		case err != nil:
			return err
		case ok:
			return errors.New("the connection admitted before the change still opens gateway sessions")
		}
		return nil
	})
	// The connection itself is not refused: it is admitted again, without the grant.
	if !gw.nc.IsConnected() {
		t.Fatal("the gateway connection did not come back")
	}
}

// TestDisallowedAnonymousEndsAdmittedAnonymousConnections: anonymous.allowed turned
// false ends the anonymous connections already admitted, and with them the
// connection relaxations (here the shared _INBOX.>) a policy had given them.
func TestDisallowedAnonymousEndsAdmittedAnonymousConnections(t *testing.T) {
	srv, kp := calloutServer(t)
	p := testPolicy()
	p.Connections.SharedInbox = true
	start(t, srv, calloutConfig(t, kp, p))
	anon := mustConnect(t, srv)
	user := mustConnect(t, srv, nats.UserInfo("alice", "alice-pw"), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))

	disallowAnonymous(t, srv, anon, "the anonymous connection admitted before anonymous was disallowed")
	// A user's connection lost _INBOX.> too: it is admitted again without it.
	natstest.CheckFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		if !user.nc.IsConnected() {
			return fmt.Errorf("alice's connection is %v", user.nc.Status())
		}
		s, err := user.nc.SubscribeSync("_INBOX.x")
		if err != nil {
			return err
		}
		defer s.Unsubscribe()
		if err := user.nc.Flush(); err != nil {
			return err
		}
		if !user.violated("_INBOX.x") {
			return errors.New("alice's connection may still subscribe to _INBOX.>")
		}
		return nil
	})
}

// TestAServerNotAnsweringKicksDoesNotSpareTheOthers: a server that does not answer
// the request to close a connection (paused, or cut off and not yet known gone)
// costs one wait in a pass, and the connections on the servers that answer are
// closed all the same. The first kick that failed ended the whole revocation: the
// connections not yet reached, in map order, kept the withdrawn grant, and no second
// pass ran; and asked one kick after the other, each waiting kickWait, 100 on the
// silent server would have taken more than 3 minutes.
func TestAServerNotAnsweringKicksDoesNotSpareTheOthers(t *testing.T) {
	const sysPass = "sys-pw"
	kp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	srv := natstest.Start(t, natstest.WithAuthCallout(pub, embedded.UserPassword{User: observerUser, Password: observerPass}),
		func(c *embedded.Config) { c.SystemPassword = sysPass })
	// A server that takes kicks and never answers them.
	sys, err := nats.Connect(srv.ClientURL(), nats.UserInfo(embedded.SystemUser, sysPass))
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	const stuck = "NSTUCK"
	asked := make(chan struct{}, 1024)
	if _, err := sys.Subscribe("$SYS.REQ.SERVER."+stuck+".KICK", func(*nats.Msg) { asked <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	if err := sys.Flush(); err != nil {
		t.Fatal(err)
	}

	p := testPolicy()
	h := start(t, srv, calloutConfig(t, kp, p))
	anon := mustConnect(t, srv)
	// Many connections remembered on the stuck server: in map order, one of them
	// came before the real one in nearly every pass.
	for cid := range uint64(100) {
		h.svc.admitted.remember(stuck, cid+1, connGrants{anonymous: true})
	}

	disallowAnonymous(t, srv, anon, "the anonymous connection on the server that answers")
	// The path under test was taken: the stuck server was asked (it may come after
	// the real connection in the pass).
	natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if len(asked) == 0 {
			return errors.New("the server that does not answer was never asked")
		}
		return nil
	})
}

// disallowAnonymous sets a policy that admits no anonymous connection and waits for
// anon, one admitted before, to be closed (what names it in the failure).
func disallowAnonymous(t *testing.T, srv *natstest.Server, anon *client, what string) {
	t.Helper()
	closed := testPolicy()
	closed.Anonymous.Allowed = false
	if err := wire.Call(t.Context(), srv.ServiceConn(t), wire.SubjectPolicySet, nil, policy.SetRequest{Policy: closed}, &policy.Response{}); err != nil {
		t.Fatalf("policy.set: %v", err)
	}
	natstest.CheckFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		if !anon.nc.IsClosed() {
			return fmt.Errorf("%s is still %v", what, anon.nc.Status())
		}
		return nil
	})
}

// TestPolicyPutAgainAndAgainStillEndsWithdrawnGrants: a policy stored again more
// often than the first pass's delay (a reconciler re-applying it every few hundred
// milliseconds) does not put the pass off: each change started the passes over,
// the first one due a second after it, and the anonymous connection an earlier
// change had disallowed stayed connected for as long as the puts went on.
func TestPolicyPutAgainAndAgainStillEndsWithdrawnGrants(t *testing.T) {
	srv, kp := calloutServer(t)
	start(t, srv, calloutConfig(t, kp, testPolicy()))
	anon := mustConnect(t, srv)
	closed := testPolicy()
	closed.Anonymous.Allowed = false
	svc := srv.ServiceConn(t)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			// Each put is a change to the instance (a new value, however equal).
			_ = wire.Call(t.Context(), svc, wire.SubjectPolicySet, nil, policy.SetRequest{Policy: closed}, &policy.Response{})
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	defer func() { close(stop); <-done }()
	natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if !anon.nc.IsClosed() {
			return fmt.Errorf("the anonymous connection is still %v while the policy disallowing it is put every 300 ms", anon.nc.Status())
		}
		return nil
	})
}
