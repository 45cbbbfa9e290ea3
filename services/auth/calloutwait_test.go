package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/wire"
	"github.com/seed-3c836eab/roster/schemas"
)

// gate is an authenticator that holds every password attempt until it is opened,
// then allows it: an attempt that takes as long as the test wants and, like bcrypt,
// does not stop when its context ends.
type gate struct {
	open  chan struct{}
	calls atomic.Int64
}

func (g *gate) Name() string { return "gate" }

func (g *gate) Authenticate(_ context.Context, a *Attempt) (Decision, error) {
	if a.Credentials.Type != wire.CredentialsPassword {
		return Decision{Verdict: Abstain}, nil
	}
	g.calls.Add(1)
	<-g.open
	return Decision{Verdict: Allow, Principal: a.Credentials.Username}, nil
}

// TestCalloutStopsWaitingWhenTheServerDoes: an attempt waiting for the throttle
// (the same address has as many attempts in flight as it has failures left) holds
// one of the callout's slots. The server stops waiting for the answer after its
// auth timeout and refuses the client; the service kept waiting, and checking
// afterwards, with no bound but its own shutdown — a burst from one address filled
// every slot and held every other client's admission behind answers nobody would
// read. The service now stops waiting when the server does, freeing the slot.
func TestCalloutStopsWaitingWhenTheServerDoes(t *testing.T) {
	h, g, release, first := gatedCallout(t, func(c *Config) {
		c.Throttle = ThrottleConfig{MaxFailures: 1, Window: time.Hour}
	})
	// The second attempt, from the same address, waits for the first; the server
	// gives up on it and refuses the client.
	if err := h.connectAs("second"); err == nil {
		t.Fatal("the second connection was admitted while the first was still being checked")
	}
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := len(h.svc.calloutQ); n != 1 {
			return fmt.Errorf("%d callout slots held after the server gave up on the second attempt, want 1 (the first)", n)
		}
		return nil
	})
	release()
	<-first
	if n := g.calls.Load(); n != 1 {
		t.Fatalf("%d attempts checked, want 1: the second was checked after the server had refused it", n)
	}
}

// gatedCallout starts a service answering the callout whose password attempts the
// gate holds (its Config changed by tweak), and a first connection, whose attempt
// the gate is holding when it returns. release opens the gate; first receives the
// first connection's result.
func gatedCallout(t *testing.T, tweak func(*Config)) (h *harness, g *gate, release func(), first <-chan error) {
	t.Helper()
	srv, kp := calloutServer(t)
	g = &gate{open: make(chan struct{})}
	var once sync.Once
	release = func() { once.Do(func() { close(g.open) }) }
	cfg := Config{
		Authenticators: []Authenticator{g, Anonymous()},
		InitialPolicy:  testPolicy(),
		Callout:        &CalloutConfig{Issuer: kp, Account: embedded.ClientsAccount},
	}
	tweak(&cfg)
	h = start(t, srv, cfg)
	// Registered after start, so it runs before the service stops (cleanups run
	// last first): stopping waits for the attempt the gate holds.
	t.Cleanup(release)
	done := make(chan error, 1)
	go func() { done <- h.connectAs("first") }()
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if g.calls.Load() != 1 {
			return errors.New("the first attempt is not being checked yet")
		}
		return nil
	})
	return h, g, release, done
}

// connectAs connects to the harness's server with user's password credentials,
// and closes the connection if it was admitted.
func (h *harness) connectAs(user string) error {
	nc, err := nats.Connect(h.srv.ClientURL(), nats.UserInfo(user, "pw"), nats.MaxReconnects(0), nats.Timeout(30*time.Second))
	if err == nil {
		nc.Close()
	}
	return err
}

// TestCalloutLogsWhyItFailed: when a connection cannot be judged (the users file
// does not load) the server is told only "internal error"; the cause is logged once
// by the service. It was logged nowhere: an operator saw every password connection
// refused and no reason.
func TestCalloutLogsWhyItFailed(t *testing.T) {
	srv, kp := calloutServer(t)
	name := filepath.Join(t.TempDir(), "users.yaml")
	if err := AddUser(name, "alice", "alice-pw", []string{"user"}, nil, bcrypt.MinCost, false); err != nil {
		t.Fatal(err)
	}
	users, err := NewUsersFile(name)
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, srv, Config{
		Authenticators: []Authenticator{users, Anonymous()},
		InitialPolicy:  testPolicy(),
		Callout:        &CalloutConfig{Issuer: kp, Account: embedded.ClientsAccount},
	})
	if err := os.WriteFile(name, []byte("users: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo("alice", "alice-pw"), nats.MaxReconnects(0))
		if err == nil {
			nc.Close()
			return errors.New("admitted: the broken users file has not been read yet")
		}
		return nil
	})
	natstest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		// Naming the file: an operator with several auth instances needs to know
		// which file to fix.
		if log := h.log.String(); !strings.Contains(log, "users file "+name) {
			return fmt.Errorf("the cause, naming the file, is not in the log:\n%s", log)
		}
		return nil
	})
	if strings.Contains(h.log.String(), "alice-pw") {
		t.Fatal("the log contains the password")
	}
}

// TestSchemasListTheErrorsCallersGet: each error code a caller of the auth
// endpoints gets is named in the schema that documents the endpoint. policy.get's
// schema named none, policy.set's left out invalid_token and session_closed, and the
// authenticate reply's left out timeout and internal.
func TestSchemasListTheErrorsCallersGet(t *testing.T) {
	cfg := sessionConfig(t)
	cfg.Sessions = closedSessions{}
	h := start(t, nil, cfg)
	client := h.srv.ClientConn(t)
	got := map[string]map[wire.Code]bool{}
	note := func(schema string, err error) {
		var we *wire.Error
		if !errors.As(err, &we) {
			t.Fatalf("%s: got %v, want a wire error", schema, err)
		}
		if got[schema] == nil {
			got[schema] = map[wire.Code]bool{}
		}
		got[schema][we.Code] = true
	}
	for _, c := range []struct{ schema, subject string }{
		{"auth.policy.get.request", Prefix + ".policy.get"},
		{"auth.policy.set.request", Prefix + ".policy.set"},
	} {
		body := any(policy.GetRequest{})
		if strings.HasSuffix(c.subject, ".set") {
			body = policy.SetRequest{Policy: testPolicy()}
		}
		for _, hdr := range []nats.Header{
			nil,
			{wire.HeaderSession: {"s-closed"}, wire.HeaderToken: {"t"}},
			{wire.HeaderSession: {"s-wrong"}, wire.HeaderToken: {"t"}},
			{wire.HeaderSession: {"s-gone"}, wire.HeaderToken: {"t"}},
			{wire.HeaderSession: {"s-user"}, wire.HeaderToken: {"t"}},
		} {
			note(c.schema, wire.Call(t.Context(), client, c.subject, hdr, body, nil))
		}
	}
	// The codes the authenticate reply documents beyond those its tests show.
	got["auth.authenticate.response"] = map[wire.Code]bool{wire.CodeTimeout: true, wire.CodeInternal: true,
		wire.CodeUnauthenticated: true, wire.CodeThrottled: true, wire.CodeBadRequest: true}
	for schema, codes := range got {
		data, err := fs.ReadFile(schemas.FS, schema+".json")
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Description string `json:"description"`
		}
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatal(err)
		}
		for code := range codes {
			if !strings.Contains(doc.Description, string(code)) {
				t.Errorf("%s: callers get %s, which its description does not name: %q", schema, code, doc.Description)
			}
		}
	}
}

// closedSessions answers for s-closed (closed), s-wrong (another token), s-gone
// (no such session) and s-user (no MODIFY_SECURITY).
type closedSessions struct{}

func (closedSessions) SessionRoles(_ context.Context, id, _ string) ([]string, error) {
	switch id {
	case "s-closed":
		return nil, wire.Errorf(wire.CodeSessionClosed, "session %s is closed", id)
	case "s-wrong":
		return nil, wire.Errorf(wire.CodeInvalidToken, "the token does not match session %s", id)
	case "s-user":
		return []string{"user"}, nil
	}
	return nil, wire.Errorf(wire.CodeSessionNotFound, "no session %q", id)
}

// TestAuthenticateWaitIsBounded: an attempt on the internal authenticate endpoint
// waiting for the same address's attempt in flight gives up after Throttle.MaxWait
// with timeout. Nothing tells the endpoint that its caller gave up, so it waited
// until the other attempt ended, however long, holding a worker.
func TestAuthenticateWaitIsBounded(t *testing.T) {
	g := &gate{open: make(chan struct{})}
	var once sync.Once
	release := func() { once.Do(func() { close(g.open) }) }
	h := start(t, nil, Config{
		Authenticators: []Authenticator{g, Anonymous()},
		InitialPolicy:  testPolicy(),
		Throttle:       ThrottleConfig{MaxFailures: 1, Window: time.Hour, MaxWait: 100 * time.Millisecond},
	})
	// Registered after start, so it runs before the service stops (cleanups run
	// last first): stopping waits for the attempt the gate holds.
	t.Cleanup(release)
	nc := h.srv.ServiceConn(t)
	attempt := func(user string) error {
		var resp wire.AuthenticateResponse
		return wire.Call(t.Context(), nc, wire.SubjectAuthenticate, nil, wire.AuthenticateRequest{
			Credentials: &wire.Credentials{Type: wire.CredentialsPassword, Username: user, Password: "pw"},
			Client:      &wire.RequestInfo{Host: "192.0.2.7", ID: 1},
		}, &resp)
	}
	first := make(chan error, 1)
	go func() { first <- attempt("first") }()
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if g.calls.Load() != 1 {
			return errors.New("the first attempt is not being checked yet")
		}
		return nil
	})
	// The first attempt is still held by the gate: the second must be answered
	// without it ending.
	second := make(chan error, 1)
	go func() { second <- attempt("second") }()
	select {
	case err := <-second:
		if !errors.Is(err, wire.ErrTimeout) {
			t.Fatalf("second attempt: got %v, want timeout", err)
		}
	case err := <-first:
		t.Fatalf("the first attempt ended (%v) before the second was answered", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the second attempt was not answered while the first was being checked")
	}
	release()
	if err := <-first; err != nil {
		t.Fatalf("first attempt: %v", err)
	}
	if n := g.calls.Load(); n != 1 {
		t.Fatalf("%d attempts checked, want 1", n)
	}
}

// TestCalloutNamesEncryptedRequests: a server configured with auth_callout's xkey
// encrypts every callout request (and says so in the Nats-Server-Xkey header), which
// this service cannot read, so every connection is refused. The error logged said
// only that the request did not decode ("decode request: …"); it now names the
// xkey, the one thing to change. (The services account may not publish on the
// callout subject, so the request is handed to the service as its subscription
// would.)
func TestCalloutNamesEncryptedRequests(t *testing.T) {
	s := offline(t)
	xk, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	xpub, _ := xk.PublicKey()
	m := nats.NewMsg(CalloutSubject)
	m.Header.Set("Nats-Server-Xkey", xpub)
	m.Data = []byte("sealed bytes the service cannot open")
	if _, err := s.answerCalloutMsg(t.Context(), m, s.cfg.Now()); err == nil || !strings.Contains(err.Error(), "xkey") {
		t.Fatalf("got %v, want an error naming the xkey", err)
	}
}

// TestCalloutDropsARequestItsServerStoppedWaitingFor: a callout request that waits
// for a slot past the server's auth timeout is dropped unchecked when its turn
// comes. The subscription's callback used to wait for the slot itself, so the
// requests behind it waited in the NATS client's buffer, unmeasured, and each was
// checked — bcrypt and all — after the server had refused its client: under a burst
// of connections the service spent its slots on answers nobody read, fell behind
// and stayed behind.
func TestCalloutDropsARequestItsServerStoppedWaitingFor(t *testing.T) {
	h, g, release, first := gatedCallout(t, func(c *Config) { c.calloutSlots = 1 })
	// The one slot is held: the second request waits for it, and the server gives
	// up on it and refuses the client.
	if err := h.connectAs("second"); err == nil {
		t.Fatal("the second connection was admitted while the only slot was held")
	}
	release()
	<-first
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(h.log.String(), "auth callout requests dropped unanswered") {
			return fmt.Errorf("the second request was not dropped; %d attempts checked", g.calls.Load())
		}
		return nil
	})
	if n := g.calls.Load(); n != 1 {
		t.Fatalf("%d attempts checked, want 1: the second was checked after the server had refused it", n)
	}
}
