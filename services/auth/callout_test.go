package auth

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

const observerUser, observerPass = "observer", "observer-secret"

// calloutServer starts a server with the auth callout on, and the issuer key.
func calloutServer(t *testing.T) (*natstest.Server, nkeys.KeyPair) {
	t.Helper()
	kp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	srv := natstest.Start(t, natstest.WithAuthCallout(pub, embedded.UserPassword{User: observerUser, Password: observerPass}))
	return srv, kp
}

func calloutConfig(t *testing.T, kp nkeys.KeyPair, p *policy.Policy) Config {
	t.Helper()
	users, err := NewUsersFile(writeUsers(t, map[string][2]string{"alice": {"alice-pw", "user"}}))
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		Authenticators: []Authenticator{users, newJWTAuth(t, nil), Anonymous()},
		InitialPolicy:  p,
		Callout:        &CalloutConfig{Issuer: kp, Account: embedded.ClientsAccount},
	}
}

// client is a connection that proved a connection key.
type client struct {
	nc  *nats.Conn
	key string

	mu         sync.Mutex
	violations []string
}

func (c *client) violated(subject string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, v := range c.violations {
		if strings.Contains(v, `"`+subject+`"`) {
			return true
		}
	}
	return false
}

// connect connects to srv with a fresh connection key and the given options.
func connect(t *testing.T, srv *natstest.Server, opts ...nats.Option) (*client, error) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	c := &client{key: pub}
	all := append([]nats.Option{
		nats.Nkey(pub, kp.Sign),
		nats.CustomInboxPrefix(wire.ConnectionInbox(pub)),
		nats.MaxReconnects(0),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				c.mu.Lock()
				c.violations = append(c.violations, err.Error())
				c.mu.Unlock()
			}
		}),
	}, opts...)
	c.nc, err = nats.Connect(srv.ClientURL(), all...)
	if err != nil {
		return nil, err
	}
	t.Cleanup(c.nc.Close)
	return c, nil
}

func mustConnect(t *testing.T, srv *natstest.Server, opts ...nats.Option) *client {
	t.Helper()
	c, err := connect(t, srv, opts...)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	return c
}

func observer(t *testing.T, srv *natstest.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(observerUser, observerPass))
	if err != nil {
		t.Fatalf("observer: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func TestCalloutAdmitsAndRefuses(t *testing.T) {
	srv, kp := calloutServer(t)
	h := start(t, srv, calloutConfig(t, kp, testPolicy()))
	tok := sign(t, jwt.SigningMethodEdDSA, claims("carol", []string{"user"}, time.Now().Add(time.Hour)))
	expired := sign(t, jwt.SigningMethodHS256, claims("carol", []string{"user"}, time.Now().Add(-time.Hour)))

	tests := []struct {
		name string
		opts []nats.Option
		ok   bool
	}{
		{"anonymous", nil, true},
		{"password", []nats.Option{nats.UserInfo("alice", "alice-pw")}, true},
		{"wrong password", []nats.Option{nats.UserInfo("alice", "nope")}, false},
		{"unknown user", []nats.Option{nats.UserInfo("mallory", "nope")}, false},
		{"jwt bearer", []nats.Option{nats.Token(tok)}, true},
		{"expired jwt", []nats.Option{nats.Token(expired)}, false},
		{"garbage token", []nats.Option{nats.Token("not.a.jwt")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := connect(t, srv, tt.opts...)
			if tt.ok && err != nil {
				t.Fatalf("got %v, want admitted", err)
			}
			if !tt.ok {
				if err == nil {
					c.nc.Close()
					t.Fatal("got admitted, want refused")
				}
				if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
					t.Fatalf("got %v, want an authorization violation", err)
				}
			}
		})
	}
	t.Run("no connection key still connects but gets no inbox", func(t *testing.T) {
		nc, err := nats.Connect(srv.ClientURL())
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		defer nc.Close()
		if _, err := nc.Request("roster.v1.auth.health", nil, 300*time.Millisecond); err == nil {
			t.Fatal("a connection without a key received a reply on _INBOX")
		}
	})
	t.Run("forged key proof is refused", func(t *testing.T) {
		victim, _ := nkeys.CreateUser()
		vpub, _ := victim.PublicKey()
		other, _ := nkeys.CreateUser()
		_, err := nats.Connect(srv.ClientURL(), nats.Nkey(vpub, other.Sign), nats.MaxReconnects(0))
		if err == nil {
			t.Fatal("got admitted with a nonce signed by another key, want refused")
		}
	})
	for _, secret := range []string{"alice-pw", tok, expired, "not.a.jwt"} {
		if strings.Contains(h.log.String(), secret) {
			t.Fatalf("the log contains a secret: %q", secret)
		}
	}
}

func TestCalloutRequestInfoCarriesConnectionKey(t *testing.T) {
	srv, kp := calloutServer(t)
	start(t, srv, calloutConfig(t, kp, testPolicy()))
	svc := srv.ServiceConn(t)
	got := make(chan string, 1)
	sub, err := svc.Subscribe("roster.v1.lock.probe", func(m *nats.Msg) {
		got <- m.Header.Get(wire.HeaderRequestInfo)
		_ = m.Respond([]byte("ok"))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = svc.Flush()
	c := mustConnect(t, srv, nats.UserInfo("alice", "alice-pw"))
	if _, err := c.nc.Request("roster.v1.lock.probe", nil, 5*time.Second); err != nil {
		t.Fatalf("request: %v", err)
	}
	ri := wire.ParseRequestInfo(<-got)
	if ri == nil || ri.User != c.key || ri.Account != embedded.ClientsAccount {
		t.Fatalf("got request info %+v, want user %s in %s", ri, c.key, embedded.ClientsAccount)
	}
}

// TestPermissionMatrix checks, for a connection of each role, every subject class
// for publish and subscribe: allowed cells deliver, denied cells deliver nothing.
func TestPermissionMatrix(t *testing.T) {
	srv, kp := calloutServer(t)
	start(t, srv, calloutConfig(t, kp, testPolicy()))
	obs := observer(t, srv)
	svc := srv.ServiceConn(t)
	other := mustConnect(t, srv)

	roles := map[string][]nats.Option{
		"anonymous": nil,
		"user":      {nats.UserInfo("alice", "alice-pw")},
		"service":   {nats.Token(sign(t, jwt.SigningMethodHS256, claims("billing", []string{"service"}, time.Now().Add(time.Hour))))},
		"admin":     {nats.Token(sign(t, jwt.SigningMethodRS256, claims("root", "admin", time.Now().Add(time.Hour))))},
	}
	type class struct {
		name     string
		sub      string // what the client subscribes to
		subject  func(own, other string) string
		pub, rcv bool // allowed to publish, allowed to receive (subscribe)
	}
	classes := []class{
		{"own deliveries", "", func(o, _ string) string { return wire.ConnectionDeliverPrefix(o) + ".s1.news" }, false, true},
		{"another session's deliveries", "", func(_, x string) string { return wire.ConnectionDeliverPrefix(x) + ".s2.news" }, false, false},
		{"_INBOX.>", "_INBOX.>", func(_, _ string) string { return "_INBOX.abc.def" }, false, false},
		{">", ">", func(_, _ string) string { return "anything.at.all" }, false, false},
		{"$KV.>", "$KV.>", func(_, _ string) string { return "$KV.roster_sessions.s1" }, false, false},
		{"$JS.API.>", "$JS.API.>", func(_, _ string) string { return "$JS.API.STREAM.NAMES" }, false, false},
		{"$SYS.>", "$SYS.>", func(_, _ string) string { return "$SYS.ACCOUNT.CLIENTS.CONNECT" }, false, false},
		{"request subjects", "roster.v1.>", func(_, _ string) string { return "roster.v1.lock.matrix" }, true, false},
	}
	for role, opts := range roles {
		t.Run(role, func(t *testing.T) {
			c := mustConnect(t, srv, opts...)
			var (
				mu       sync.Mutex
				received = map[string]int{}
			)
			handler := func(m *nats.Msg) {
				mu.Lock()
				received[m.Subject]++
				mu.Unlock()
			}
			// Subscribe to each class (deliveries: the class's own wildcard).
			for _, cl := range classes {
				sub := cl.sub
				if sub == "" {
					subject := cl.subject(c.key, other.key)
					sub = subject[:strings.LastIndex(subject, ".")] + ".>"
				}
				if _, err := c.nc.Subscribe(sub, handler); err != nil {
					t.Fatal(err)
				}
			}
			sentinel := wire.ConnectionDeliverPrefix(c.key) + ".sentinel.done"
			if _, err := c.nc.Subscribe(sentinel, handler); err != nil {
				t.Fatal(err)
			}
			if err := c.nc.Flush(); err != nil {
				t.Fatal(err)
			}
			// Observe everything in CLIENTS and the request subjects in SERVICES.
			var seenMu sync.Mutex
			seen := map[string]int{}
			count := func(m *nats.Msg) { seenMu.Lock(); seen[m.Subject]++; seenMu.Unlock() }
			for _, s := range []string{">", "$KV.>", "$JS.>", "$SYS.>"} {
				osub, err := obs.Subscribe(s, count)
				if err != nil {
					t.Fatal(err)
				}
				defer osub.Unsubscribe()
			}
			ssub, err := svc.Subscribe("roster.v1.lock.>", count)
			if err != nil {
				t.Fatal(err)
			}
			defer ssub.Unsubscribe()
			_ = obs.Flush()
			_ = svc.Flush()

			// Subscribe cells: the observer (or, for deliveries, a service through the
			// import) publishes one message per class, then the sentinel.
			for _, cl := range classes {
				subject := cl.subject(c.key, other.key)
				pubConn := obs
				if strings.HasPrefix(subject, wire.DeliverPrefix) {
					pubConn = svc
				}
				if err := pubConn.Publish(subject, []byte("x")); err != nil {
					t.Fatal(err)
				}
				_ = pubConn.Flush()
			}
			_ = svc.Publish(sentinel, nil)
			natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
				mu.Lock()
				defer mu.Unlock()
				if received[sentinel] == 0 {
					return errors.New("sentinel not received")
				}
				return nil
			})
			mu.Lock()
			for _, cl := range classes {
				subject := cl.subject(c.key, other.key)
				got := received[subject]
				if cl.rcv && got != 1 {
					t.Errorf("subscribe %s (%s): got %d messages, want 1", cl.name, subject, got)
				}
				if !cl.rcv && got != 0 {
					t.Errorf("subscribe %s (%s): got %d messages, want 0", cl.name, subject, got)
				}
			}
			mu.Unlock()

			// Publish cells: the client publishes to each class, then to an allowed
			// request subject as a sentinel; the observers count what arrived.
			seenMu.Lock()
			clear(seen)
			seenMu.Unlock()
			for _, cl := range classes {
				_ = c.nc.Publish("pub."+cl.subject(c.key, other.key), nil) // never allowed
				_ = c.nc.Publish(cl.subject(c.key, other.key), []byte("x"))
			}
			_ = c.nc.Publish("roster.v1.lock.sentinel", nil)
			_ = c.nc.Flush()
			natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
				seenMu.Lock()
				defer seenMu.Unlock()
				if seen["roster.v1.lock.sentinel"] == 0 {
					return errors.New("publish sentinel not seen")
				}
				return nil
			})
			seenMu.Lock()
			defer seenMu.Unlock()
			for _, cl := range classes {
				subject := cl.subject(c.key, other.key)
				got := seen[subject] + seen["pub."+subject]
				if cl.pub && seen[subject] == 0 {
					t.Errorf("publish %s (%s): nothing arrived, want delivery", cl.name, subject)
				}
				if !cl.pub && got != 0 {
					t.Errorf("publish %s (%s): %d messages arrived, want 0", cl.name, subject, got)
				}
			}
			if !c.violated("_INBOX.>") || !c.violated("$JS.API.>") {
				t.Errorf("got violations %v, want subscribe violations reported", c.violations)
			}
		})
	}
}

// TestEavesdropping: client A subscribes to everything it can think of while
// session B's connection receives 10,000 deliveries and answers each, and makes
// requests of its own. A sees none of it.
func TestEavesdropping(t *testing.T) {
	srv, kp := calloutServer(t)
	start(t, srv, calloutConfig(t, kp, testPolicy()))
	svc := srv.ServiceConn(t)
	a := mustConnect(t, srv, nats.UserInfo("alice", "alice-pw"))
	b := mustConnect(t, srv)

	var aGot atomic.Int64
	for _, s := range []string{">", "*", "*.>", "_INBOX.>", "_R.>", "_R.*.>", "_R_.>",
		wire.ConnectionInbox(b.key) + ".>", "roster.>", "roster.v1.>", "roster.v1.deliver.>",
		"roster.v1.deliver.*.>", wire.ConnectionDeliverPrefix(b.key) + ".>",
		wire.ConnectionDeliverPrefix(b.key) + ".sb.>", "$SYS.>", "$JS.>", "$KV.>",
		wire.ConnectionInbox(a.key) + ".>", wire.ConnectionDeliverPrefix(a.key) + ".>"} {
		if _, err := a.nc.Subscribe(s, func(*nats.Msg) { aGot.Add(1) }); err != nil {
			t.Fatal(err)
		}
		if _, err := a.nc.QueueSubscribe(s, "q", func(*nats.Msg) { aGot.Add(1) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.nc.Flush(); err != nil {
		t.Fatal(err)
	}

	const n = 10_000
	var bGot atomic.Int64
	if _, err := b.nc.Subscribe(wire.ConnectionDeliverPrefix(b.key)+".>", func(m *nats.Msg) {
		bGot.Add(1)
		if m.Reply != "" {
			_ = m.Respond([]byte("ack"))
		}
	}); err != nil {
		t.Fatal(err)
	}
	_ = b.nc.Flush()
	responder, err := svc.Subscribe("roster.v1.msg.echo", func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		t.Fatal(err)
	}
	defer responder.Unsubscribe()

	var replies atomic.Int64
	inbox := svc.NewRespInbox()
	rs, err := svc.Subscribe(inbox, func(*nats.Msg) { replies.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Unsubscribe()
	_ = svc.Flush()
	for i := range n {
		if err := svc.PublishRequest(fmt.Sprintf("%s.sb.news.%d", wire.ConnectionDeliverPrefix(b.key), i%7), inbox, []byte("secret")); err != nil {
			t.Fatal(err)
		}
	}
	for range 100 {
		if _, err := b.nc.Request("roster.v1.msg.echo", []byte("private"), 5*time.Second); err != nil {
			t.Fatalf("B's request: %v", err)
		}
	}
	natstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if bGot.Load() != n || replies.Load() != n {
			return fmt.Errorf("B got %d deliveries and the service %d replies, want %d", bGot.Load(), replies.Load(), n)
		}
		return nil
	})
	// A's own deliveries still work, so A's subscriptions were live all along.
	_ = svc.Publish(wire.ConnectionDeliverPrefix(a.key)+".sa.done", nil)
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if aGot.Load() == 0 {
			return errors.New("A did not get its own delivery")
		}
		return nil
	})
	if got := aGot.Load(); got != 2 { // the delivery, on A's own subscription and queue subscription
		t.Fatalf("A received %d messages, want only its own delivery (2: plain and queue subscription)", got)
	}
}

// TestCalloutFailsClosed: with no auth service nobody connects; when it starts,
// admission resumes within 5s; when it stops, connections are refused again.
func TestCalloutFailsClosed(t *testing.T) {
	srv, kp := calloutServer(t)
	if c, err := connect(t, srv); err == nil {
		c.nc.Close()
		t.Fatal("connected with no auth service, want refused")
	}
	h := start(t, srv, calloutConfig(t, kp, testPolicy()))
	natstest.CheckFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		c, err := connect(t, srv)
		if err == nil {
			c.nc.Close()
		}
		return err
	})
	h.stop()
	if c, err := connect(t, srv); err == nil {
		c.nc.Close()
		t.Fatal("connected after the auth service stopped, want refused")
	}
	start(t, srv, calloutConfig(t, kp, testPolicy()))
	natstest.CheckFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		c, err := connect(t, srv)
		if err == nil {
			c.nc.Close()
		}
		return err
	})
}

// TestCalloutFollowsPolicy: a policy change that forbids anonymous sessions refuses
// new anonymous connections within a second.
func TestCalloutFollowsPolicy(t *testing.T) {
	srv, kp := calloutServer(t)
	h := start(t, srv, calloutConfig(t, kp, testPolicy()))
	mustConnect(t, srv)
	p := testPolicy()
	p.Anonymous.Allowed = false
	var resp policy.Response
	if err := wire.Call(t.Context(), srv.ServiceConn(t), wire.SubjectPolicySet, nil, policy.SetRequest{Policy: p}, &resp); err != nil {
		t.Fatalf("policy.set: %v", err)
	}
	natstest.CheckFor(t, time.Second, 20*time.Millisecond, func() error {
		if h.svc.Policy().Load().Anonymous.Allowed {
			return errors.New("the service still allows anonymous sessions")
		}
		return nil
	})
	if c, err := connect(t, srv); err == nil {
		c.nc.Close()
		t.Fatal("anonymous connection admitted after the policy forbade it")
	}
	mustConnect(t, srv, nats.UserInfo("alice", "alice-pw"))
}

// TestFailedConnectOverSeveralURLsCountsOnce: nats.go presents the credentials to
// every server URL it is given, each attempt a callout; one connect with a wrong
// password counts one failure, not one per URL.
func TestFailedConnectOverSeveralURLsCountsOnce(t *testing.T) {
	srv, kp := calloutServer(t)
	h := start(t, srv, calloutConfig(t, kp, testPolicy()))
	urls := srv.ClientURL() + "," + srv.ClientURL() + "," + srv.ClientURL()
	nc, err := nats.Connect(urls, nats.UserInfo("alice", "nope"), nats.MaxReconnects(0))
	if err == nil {
		nc.Close()
		t.Fatal("got admitted, want refused")
	}
	if got := h.svc.throttle.failures(principalKey("alice")); got != 1 {
		t.Fatalf("one refused connect over three URLs: got %d failures counted, want 1", got)
	}
}

// TestCalloutGrantsGatewayOpenByRole: only a connection whose principal's roles
// have GATEWAY_SESSION may publish to the gateway open subject; the others' publish
// is refused by NATS and never reaches the registry.
func TestCalloutGrantsGatewayOpenByRole(t *testing.T) {
	srv, kp := calloutServer(t)
	p := testPolicy()
	p.Roles["gateway"] = []policy.Grant{{Permission: policy.GatewaySession}}
	start(t, srv, calloutConfig(t, kp, p))
	svc := srv.ServiceConn(t)
	arrived := make(chan string, 10)
	sub, err := svc.Subscribe(wire.SessionPrefix+".>", func(m *nats.Msg) { arrived <- m.Subject })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = svc.Flush()

	gw := mustConnect(t, srv, nats.Token(sign(t, jwt.SigningMethodHS256, claims("edge-1", []string{"gateway"}, time.Now().Add(time.Hour)))))
	user := mustConnect(t, srv, nats.UserInfo("alice", "alice-pw"))
	anon := mustConnect(t, srv)
	for _, c := range []*client{user, anon, gw} {
		if err := c.nc.Publish(wire.SubjectSessionOpenGateway, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		if err := c.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		// Then an allowed subject: messages of one connection arrive in order, so
		// once it is here the gateway open has arrived or never will.
		if err := c.nc.Publish(wire.SubjectSessionOpen, []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	// Once the three plain opens are here, every gateway open published before
	// them on the same connection is too.
	var got []string
	for plain := 0; plain < 3; {
		select {
		case s := <-arrived:
			got = append(got, s)
			if s == wire.SubjectSessionOpen {
				plain++
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("got %v, want three plain opens", got)
		}
	}
	if n := len(got) - 3; n != 1 {
		t.Fatalf("arrived %v: %d gateway opens, want the gateway connection's only", got, n)
	}
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		for _, c := range []*client{user, anon} {
			if !c.violated(wire.SubjectSessionOpenGateway) {
				return fmt.Errorf("connection %s was not told its gateway open was refused", c.key)
			}
		}
		return nil
	})
	if gw.violated(wire.SubjectSessionOpenGateway) {
		t.Fatal("the gateway connection was refused its gateway open")
	}
}
