package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/crypto/bcrypt"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/schematest"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

func sessionConfig(t *testing.T, order ...Authenticator) Config {
	t.Helper()
	users, err := NewUsersFile(writeUsers(t, map[string][2]string{"alice": {"alice-pw", "user"}, "root": {"root-pw", "admin"}}))
	if err != nil {
		t.Fatal(err)
	}
	if len(order) == 0 {
		order = []Authenticator{users, newJWTAuth(t, nil), Anonymous()}
	}
	return Config{Authenticators: order, InitialPolicy: testPolicy(), Throttle: ThrottleConfig{MaxFailures: 3, Window: time.Hour}}
}

func TestAuthenticate(t *testing.T) {
	h := start(t, nil, sessionConfig(t))
	now := time.Now()
	k := getKeys(t)
	otherJWT := func() string {
		tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims("carol", []string{"user"}, now.Add(time.Hour))).SignedString([]byte(strings.Repeat("x", 32)))
		return tok
	}()
	noneJWT := func() string {
		tok, _ := jwt.NewWithClaims(jwt.SigningMethodNone, claims("carol", []string{"admin"}, now.Add(time.Hour))).SignedString(jwt.UnsafeAllowNoneSignatureType)
		return tok
	}()
	// An RS256 public key used as an HS256 secret: the classic algorithm confusion.
	confused := func() string {
		pem := fmt.Sprintf("%x", k.rsa.PublicKey.N.Bytes())
		tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS384, claims("carol", []string{"admin"}, now.Add(time.Hour))).SignedString([]byte(pem))
		return tok
	}()

	tests := []struct {
		name      string
		creds     *wire.Credentials
		proposed  map[string]string
		principal string
		roles     []string
		props     map[string]string
		code      wire.Code
		message   string
	}{
		{name: "anonymous", creds: nil, roles: []string{"anonymous"}, props: map[string]string{}},
		{name: "password", creds: &wire.Credentials{Username: "alice", Password: "alice-pw"}, principal: "alice", roles: []string{"user"},
			props: map[string]string{"Source": "file"}},
		{name: "wrong password", creds: &wire.Credentials{Username: "root", Password: "nope"}, code: wire.CodeUnauthenticated, message: "invalid username or password"},
		{name: "unknown user", creds: &wire.Credentials{Type: "password", Username: "nobody", Password: "nope"}, code: wire.CodeUnauthenticated, message: "invalid username or password"},
		{name: "HS256", creds: &wire.Credentials{Token: sign(t, jwt.SigningMethodHS256, jwt.MapClaims{"sub": "carol", "roles": []string{"user", "trader"}, "exp": now.Add(time.Hour).Unix(), "dept": "ops"})},
			principal: "carol", roles: []string{"user", "trader"}, props: map[string]string{"Department": "ops"}},
		{name: "EdDSA", creds: &wire.Credentials{Type: "jwt", Token: sign(t, jwt.SigningMethodEdDSA, claims("dave", "admin, user", now.Add(time.Hour)))},
			principal: "dave", roles: []string{"admin", "user"}, props: map[string]string{}},
		{name: "RS256", creds: &wire.Credentials{Token: sign(t, jwt.SigningMethodRS256, claims("erin", nil, now.Add(time.Hour)))},
			principal: "erin", roles: []string{}, props: map[string]string{}},
		{name: "expired", creds: &wire.Credentials{Token: sign(t, jwt.SigningMethodEdDSA, claims("dave", nil, now.Add(-time.Minute)))}, code: wire.CodeUnauthenticated, message: "token expired"},
		{name: "not yet valid", creds: &wire.Credentials{Token: sign(t, jwt.SigningMethodHS256, jwt.MapClaims{"sub": "x", "exp": now.Add(time.Hour).Unix(), "nbf": now.Add(time.Hour).Unix()})},
			code: wire.CodeUnauthenticated, message: "token not valid yet"},
		{name: "no exp", creds: &wire.Credentials{Token: sign(t, jwt.SigningMethodHS256, jwt.MapClaims{"sub": "x"})}, code: wire.CodeUnauthenticated},
		{name: "no sub", creds: &wire.Credentials{Token: sign(t, jwt.SigningMethodHS256, jwt.MapClaims{"exp": now.Add(time.Hour).Unix()})}, code: wire.CodeUnauthenticated},
		{name: "bad roles claim", creds: &wire.Credentials{Token: sign(t, jwt.SigningMethodHS256, claims("x", 42, now.Add(time.Hour)))}, code: wire.CodeUnauthenticated},
		{name: "wrong key", creds: &wire.Credentials{Token: otherJWT}, code: wire.CodeUnauthenticated, message: "token signature invalid"},
		{name: "alg none", creds: &wire.Credentials{Token: noneJWT}, code: wire.CodeUnauthenticated},
		{name: "alg confusion", creds: &wire.Credentials{Token: confused}, code: wire.CodeUnauthenticated},
		{name: "malformed", creds: &wire.Credentials{Token: "eyJhbGciOi.x.y"}, code: wire.CodeUnauthenticated, message: "token malformed"},
		{name: "oversized", creds: &wire.Credentials{Token: strings.Repeat("a", MaxTokenLength+1)}, code: wire.CodeUnauthenticated},
		{name: "oversized password", creds: &wire.Credentials{Username: "alice", Password: strings.Repeat("a", MaxPasswordLength+1)}, code: wire.CodeUnauthenticated},
		{name: "unknown type", creds: &wire.Credentials{Type: "kerberos"}, code: wire.CodeBadRequest},
		{name: "mixed credentials", creds: &wire.Credentials{Type: "jwt", Username: "alice", Token: "x"}, code: wire.CodeBadRequest},
		{name: "properties vetted", creds: nil,
			proposed: map[string]string{"Department": "sales", "Tier": "gold", "ClientApp": "web", "Secret": "x", "$Roles": `"admin"`, "$Principal": "root"},
			roles:    []string{"anonymous"}, props: map[string]string{"Department": "sales", "Tier": "basic", "ClientApp": "web"}},
		{name: "property value not allowed", creds: nil, proposed: map[string]string{"Department": "hr"},
			roles: []string{"anonymous"}, props: map[string]string{}},
		{name: "authenticator properties win", creds: &wire.Credentials{Username: "alice", Password: "alice-pw"}, proposed: map[string]string{"Source": "me"},
			principal: "alice", roles: []string{"user"}, props: map[string]string{"Source": "file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := h.svc.authenticate(context.Background(), tt.creds, tt.proposed, "10.0.0."+fmt.Sprint(len(tt.name)))
			if tt.code != "" {
				var we *wire.Error
				if !errors.As(err, &we) || we.Code != tt.code {
					t.Fatalf("got %v, want %s", err, tt.code)
				}
				if tt.message != "" && we.Message != tt.message {
					t.Fatalf("got message %q, want %q", we.Message, tt.message)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want success", err)
			}
			if got.Principal != tt.principal || !slices.Equal(got.Roles, tt.roles) || !maps.Equal(got.Properties, tt.props) {
				t.Fatalf("got %q %v %v, want %q %v %v", got.Principal, got.Roles, got.Properties, tt.principal, tt.roles, tt.props)
			}
		})
	}
}

func TestChainOrderAndAbstain(t *testing.T) {
	users, err := NewUsersFile(writeUsers(t, map[string][2]string{"alice": {"pw", "user"}}))
	if err != nil {
		t.Fatal(err)
	}
	// Without the users authenticator in the chain a password always fails: every
	// authenticator abstains.
	h := start(t, nil, sessionConfig(t, Anonymous(), newJWTAuth(t, nil)))
	if _, err := h.svc.authenticate(t.Context(), &wire.Credentials{Username: "alice", Password: "pw"}, nil, ""); !errors.Is(err, wire.ErrUnauthenticated) {
		t.Fatalf("got %v, want unauthenticated", err)
	}
	p := testPolicy()
	p.Anonymous.Allowed = false
	d, by, err := chain{users, Anonymous()}.decide(t.Context(), &Attempt{Credentials: &wire.Credentials{Type: "anonymous"}, Policy: p})
	if err != nil || d.Verdict != Deny || by != "anonymous" {
		t.Fatalf("got %v by %s (%v), want deny by anonymous", d.Verdict, by, err)
	}
	if _, err := ParseChain("users, jwt,anonymous", map[string]Authenticator{"users": users, "jwt": newJWTAuth(t, nil), "anonymous": Anonymous()}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "users,users", "ldap"} {
		if _, err := ParseChain(bad, map[string]Authenticator{"users": users}); err == nil {
			t.Errorf("ParseChain(%q): got nil, want an error", bad)
		}
	}
}

func TestThrottle(t *testing.T) {
	h := start(t, nil, sessionConfig(t))
	ctx := t.Context()
	wrong := &wire.Credentials{Username: "alice", Password: "wrong"}
	for i := range 3 {
		if _, err := h.svc.authenticate(ctx, wrong, nil, fmt.Sprintf("192.0.2.%d", i)); !errors.Is(err, wire.ErrUnauthenticated) {
			t.Fatalf("attempt %d: got %v, want unauthenticated", i, err)
		}
	}
	// alice is now throttled from any address, even with the right password.
	_, err := h.svc.authenticate(ctx, &wire.Credentials{Username: "alice", Password: "alice-pw"}, nil, "198.51.100.1")
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeThrottled || we.Status() != 429 {
		t.Fatalf("got %v, want throttled (429)", err)
	}
	// Another user from a fresh address is not.
	if _, err := h.svc.authenticate(ctx, &wire.Credentials{Username: "root", Password: "root-pw"}, nil, "198.51.100.1"); err != nil {
		t.Fatalf("got %v, want success", err)
	}
	// One address failing for many (unknown) users is throttled too, and the
	// message for an unknown user is the same as for a wrong password.
	for i := range 3 {
		_, err := h.svc.authenticate(ctx, &wire.Credentials{Username: fmt.Sprint("ghost", i), Password: "x"}, nil, "203.0.113.9")
		if !errors.As(err, &we) || we.Message != "invalid username or password" {
			t.Fatalf("got %v, want the generic denial", err)
		}
	}
	if _, err := h.svc.authenticate(ctx, nil, nil, "203.0.113.9"); !errors.Is(err, wire.ErrThrottled) {
		t.Fatalf("got %v, want throttled for the address", err)
	}
}

func TestThrottleWindow(t *testing.T) {
	now := time.Unix(1000, 0)
	th := newThrottle(ThrottleConfig{MaxFailures: 2, Window: time.Minute, MaxKeys: 4}, func() time.Time { return now })
	admitted := func(keys ...string) bool {
		ok, err := th.begin(t.Context(), keys...)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	fail := func(keys ...string) {
		if !admitted(keys...) {
			t.Fatalf("attempt for %v refused", keys)
		}
		th.end(true, "", keys...)
	}
	blocked := func(keys ...string) bool {
		if !admitted(keys...) {
			return true
		}
		th.end(false, "", keys...)
		return false
	}
	fail("a", "b")
	fail("a")
	if !blocked("a") || blocked("b") || blocked("") {
		t.Fatal("got wrong blocking after failures")
	}
	now = now.Add(time.Minute)
	if blocked("a") {
		t.Fatal("still blocked after the window")
	}
	for i := range 10 {
		fail(fmt.Sprint(i))
	}
	if n := len(th.principals) + len(th.addresses); n > 4 {
		t.Fatalf("got %d keys, want at most 4", n)
	}
}

// TestThrottleAttemptsInFlight: a key admits no more attempts at once than it has
// failures left; the others wait, and go on when one in flight succeeds, or are
// refused once the ones in flight have used up the key.
func TestThrottleAttemptsInFlight(t *testing.T) {
	th := newThrottle(ThrottleConfig{MaxFailures: 2, Window: time.Hour}, nil)
	ctx := t.Context()
	for range 2 {
		if ok, err := th.begin(ctx, "a"); !ok || err != nil {
			t.Fatalf("got %v, %v; want admitted", ok, err)
		}
	}
	result := make(chan bool, 1)
	go func() {
		ok, _ := th.begin(ctx, "a")
		result <- ok
	}()
	select {
	case ok := <-result:
		t.Fatalf("a third attempt was decided (%v) while two that may fail were in flight", ok)
	case <-time.After(50 * time.Millisecond):
	}
	th.end(false, "", "a") // one succeeds: room for the waiting one
	if ok := <-result; !ok {
		t.Fatal("the waiting attempt was refused after one in flight succeeded")
	}
	go func() {
		ok, _ := th.begin(ctx, "a")
		result <- ok
	}()
	th.end(true, "", "a")
	th.end(true, "", "a") // two failures: the key is used up
	if ok := <-result; ok {
		t.Fatal("an attempt was admitted after the key used up its failures")
	}
	wctx, cancel := context.WithCancel(ctx)
	cancel()
	if ok, err := th.begin(wctx, "b"); !ok || err != nil {
		t.Fatalf("a fresh key: got %v, %v; want admitted at once", ok, err)
	}
}

func TestAuthenticateEndpoint(t *testing.T) {
	h := start(t, nil, sessionConfig(t))
	nc := h.srv.ServiceConn(t)
	tok := sign(t, jwt.SigningMethodEdDSA, claims("dave", []string{"admin"}, time.Now().Add(time.Hour)))
	req := wire.AuthenticateRequest{
		Credentials: &wire.Credentials{Type: "jwt", Token: tok},
		Properties:  map[string]string{"Department": "ops"},
		Client:      &wire.RequestInfo{Host: "127.0.0.1:5000", ID: 7},
	}
	msg, err := nc.Request(wire.SubjectAuthenticate, mustJSON(t, req), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	schematest.Validate(t, "auth.authenticate.response", msg.Data)
	var resp wire.AuthenticateResponse
	if err := wire.Call(t.Context(), nc, wire.SubjectAuthenticate, nil, req, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Principal != "dave" || resp.Authenticator != "jwt" || resp.Properties["Department"] != "ops" {
		t.Fatalf("got %+v", resp)
	}
	if err := schematest.Check("auth.authenticate.request", mustJSON(t, req)); err != nil {
		t.Fatal(err)
	}
	err = wire.Call(t.Context(), nc, wire.SubjectAuthenticate, nil, wire.AuthenticateRequest{Credentials: &wire.Credentials{Username: "alice", Password: "nope"}}, &resp)
	if !errors.Is(err, wire.ErrUnauthenticated) {
		t.Fatalf("got %v, want unauthenticated", err)
	}
	// Malformed bodies are bad requests, not crashes.
	for _, body := range []string{`{"credentials":{"type":1}}`, `{"nope":1}`, `[`, strings.Repeat(`{"a":`, 10000)} {
		msg, err := nc.Request(wire.SubjectAuthenticate, []byte(body), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if code := msg.Header.Get(wire.HeaderErrorCode); code != "400" && code != "413" {
			t.Fatalf("body %.20q: got status %q, want 400 or 413", body, code)
		}
	}
	if strings.Contains(h.log.String(), tok) || strings.Contains(h.log.String(), "nope") {
		t.Fatal("the log contains a token or password")
	}
}

// TestNoSecretsInLogs runs every kind of attempt with debug logging and checks that
// no password or token appears in what was logged.
func TestNoSecretsInLogs(t *testing.T) {
	h := start(t, nil, sessionConfig(t))
	secrets := []string{"alice-pw", "wrong-pw-xyzzy",
		sign(t, jwt.SigningMethodHS256, claims("carol", nil, time.Now().Add(time.Hour))),
		sign(t, jwt.SigningMethodHS256, claims("carol", nil, time.Now().Add(-time.Hour))),
		"eyJhbGciOiJIUzI1NiJ9.garbage.sig"}
	attempts := []*wire.Credentials{
		{Username: "alice", Password: secrets[0]}, {Username: "alice", Password: secrets[1]},
		{Token: secrets[2]}, {Token: secrets[3]}, {Token: secrets[4]},
	}
	for _, a := range attempts {
		_, _ = h.svc.authenticate(t.Context(), a, nil, "127.0.0.1")
	}
	out := h.log.String()
	if !strings.Contains(out, "authentication denied") {
		t.Fatalf("nothing was logged (%q): the test would prove nothing", out)
	}
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("the log contains the secret %q", s)
		}
	}
}

type fakeSessions map[string][]string // "id/token" -> roles

func (f fakeSessions) SessionRoles(_ context.Context, id, token string) ([]string, error) {
	roles, ok := f[id+"/"+token]
	if !ok {
		return nil, wire.Errorf(wire.CodeInvalidToken, "token does not match")
	}
	return roles, nil
}

func TestPolicyEndpoints(t *testing.T) {
	cfg := sessionConfig(t)
	cfg.Sessions = fakeSessions{"s-admin/t1": {"admin"}, "s-user/t2": {"user"}}
	h := start(t, nil, cfg)
	svc := h.srv.ServiceConn(t)
	client := h.srv.ClientConn(t)
	ctx := t.Context()

	// A second follower, as any other service would run it.
	js := h.srv.JetStream(t)
	store, err := policy.OpenStore(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	follower := policy.NewHolder(&policy.Policy{})
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = store.Watch(wctx, follower, natstest.Logger(t), nil) }()
	t.Cleanup(func() { cancel(); wg.Wait() })

	hdr := func(id, tok string) nats.Header {
		return nats.Header{wire.HeaderSession: {id}, wire.HeaderToken: {tok}}
	}
	var got policy.Response
	if err := wire.Call(ctx, client, wire.SubjectPolicyGet, nil, policy.GetRequest{}, &got); !errors.Is(err, wire.ErrUnauthenticated) {
		t.Fatalf("get without a session: got %v, want unauthenticated", err)
	}
	if err := wire.Call(ctx, client, wire.SubjectPolicyGet, hdr("s-user", "t2"), policy.GetRequest{}, &got); !errors.Is(err, wire.ErrForbidden) {
		t.Fatalf("get as user: got %v, want forbidden", err)
	}
	if err := wire.Call(ctx, client, wire.SubjectPolicyGet, hdr("s-admin", "wrong"), policy.GetRequest{}, &got); !errors.Is(err, wire.ErrInvalidToken) {
		t.Fatalf("get with a wrong token: got %v, want invalid_token", err)
	}
	if err := wire.Call(ctx, client, wire.SubjectPolicyGet, hdr("s-admin", "t1"), policy.GetRequest{}, &got); err != nil {
		t.Fatalf("get as admin: %v", err)
	}
	rev := got.Revision
	next := testPolicy()
	next.Roles["user"] = append(next.Roles["user"], policy.Grant{Permission: policy.ViewLocks})
	if err := wire.Call(ctx, client, wire.SubjectPolicySet, hdr("s-user", "t2"), policy.SetRequest{Policy: next}, &got); !errors.Is(err, wire.ErrForbidden) {
		t.Fatalf("set as user: got %v, want forbidden", err)
	}
	if err := wire.Call(ctx, client, wire.SubjectPolicySet, hdr("s-admin", "t1"), policy.SetRequest{Policy: next, Revision: rev}, &got); err != nil {
		t.Fatalf("set as admin: %v", err)
	}
	natstest.CheckFor(t, time.Second, 10*time.Millisecond, func() error {
		if !follower.Allowed([]string{"user"}, policy.ViewLocks, "") || !h.svc.Policy().Allowed([]string{"user"}, policy.ViewLocks, "") {
			return errors.New("the change has not reached the followers")
		}
		return nil
	})
	// A stale revision conflicts; an invalid policy is a bad request.
	if err := wire.Call(ctx, svc, wire.SubjectPolicySet, nil, policy.SetRequest{Policy: next, Revision: rev}, &got); !errors.Is(err, wire.ErrConflict) {
		t.Fatalf("stale set: got %v, want conflict", err)
	}
	msg, err := svc.Request(wire.SubjectPolicySet, []byte(`{"policy":{"roles":{"x":[{"permission":"FLY"}]},"anonymous":{"allowed":false}}}`), 5*time.Second)
	if err != nil || msg.Header.Get(wire.HeaderErrorCode) != "400" {
		t.Fatalf("invalid policy: got %v %v, want 400", msg.Header, err)
	}
	msg, err = svc.Request(wire.SubjectPolicyGet, nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	schematest.Validate(t, "auth.policy.response", msg.Data)
	if err := schematest.Check("auth.policy.set.request", mustJSON(t, policy.SetRequest{Policy: next, Revision: 3})); err != nil {
		t.Fatal(err)
	}
}

func TestDefaultPolicyIsStoredOnce(t *testing.T) {
	srv := natstest.Start(t)
	cfg := Config{DefaultPolicy: policy.Development()}
	h := start(t, srv, cfg)
	if !h.svc.Policy().Load().Anonymous.Allowed {
		t.Fatal("development policy not in effect")
	}
	h.stop()
	// A stored policy wins over the default on the next start.
	strict := testPolicy()
	strict.Anonymous.Allowed = false
	store, err := policy.OpenStore(t.Context(), srv.JetStream(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Put(t.Context(), strict, 0); err != nil {
		t.Fatal(err)
	}
	h = start(t, srv, cfg)
	if h.svc.Policy().Load().Anonymous.Allowed {
		t.Fatal("the default replaced the stored policy")
	}
	// With nothing stored and no default, nothing is allowed.
	h2 := start(t, nil, Config{})
	if _, err := h2.svc.authenticate(t.Context(), nil, nil, ""); !errors.Is(err, wire.ErrUnauthenticated) {
		t.Fatalf("got %v, want unauthenticated with an empty policy", err)
	}
}

// TestInitialPolicyWarnsWhenItUndoesAChange: --policy is stored at every start of an
// auth instance, replacing the stored policy. A policy set live since (roster policy
// set) was undone by the next rolling restart with the same info line as any start;
// now a warning says so, and a start that stores the same policy again stays quiet.
func TestInitialPolicyWarnsWhenItUndoesAChange(t *testing.T) {
	srv := natstest.Start(t)
	const warning = "replaces a different stored policy"
	h := start(t, srv, Config{InitialPolicy: testPolicy()})
	h.stop()
	if strings.Contains(h.log.String(), warning) {
		t.Fatalf("the first start warned:\n%s", h.log.String())
	}
	h = start(t, srv, Config{InitialPolicy: testPolicy()})
	h.stop()
	if strings.Contains(h.log.String(), warning) {
		t.Fatalf("a start storing the stored policy again warned:\n%s", h.log.String())
	}
	live := testPolicy()
	live.Roles["user"] = append(live.Roles["user"], policy.Grant{Permission: policy.SendToFilter})
	store, err := policy.OpenStore(t.Context(), srv.JetStream(t))
	if err != nil {
		t.Fatal(err)
	}
	liveRev, err := store.Put(t.Context(), live, 0)
	if err != nil {
		t.Fatal(err)
	}
	h = start(t, srv, Config{InitialPolicy: testPolicy()})
	out := h.log.String()
	if !strings.Contains(out, warning) || !strings.Contains(out, fmt.Sprintf(`"replaced_revision":%d`, liveRev)) {
		t.Fatalf("got log:\n%s\nwant a warning that revision %d was replaced", out, liveRev)
	}
}

// TestPolicyCallerFromSessionsBucket uses the real live view of the sessions bucket:
// an admin session may read the policy, and within a second of its close every
// request naming it gets session_closed.
func TestPolicyCallerFromSessionsBucket(t *testing.T) {
	cfg := sessionConfig(t)
	h := start(t, nil, cfg)
	ctx := t.Context()
	kv, err := sessions.EnsureBucket(ctx, h.srv.JetStream(t))
	if err != nil {
		t.Fatal(err)
	}
	rec := &sessions.Record{ID: "s1", Roles: []string{"admin"}, State: wire.StateActive, TokenHash: sessions.HashToken("tok-1")}
	put := func() {
		data, err := sessions.Encode(rec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, rec.ID, data); err != nil {
			t.Fatal(err)
		}
	}
	put()
	client := h.srv.ClientConn(t)
	call := func(tok string) error {
		var got policy.Response
		return wire.Call(ctx, client, wire.SubjectPolicyGet, nats.Header{wire.HeaderSession: {"s1"}, wire.HeaderToken: {tok}}, policy.GetRequest{}, &got)
	}
	natstest.CheckFor(t, time.Second, 10*time.Millisecond, func() error { return call("tok-1") })
	if err := call("tok-2"); !errors.Is(err, wire.ErrInvalidToken) {
		t.Fatalf("wrong token: got %v, want invalid_token", err)
	}
	rec.State, rec.CloseReason = wire.StateClosed, "by_client"
	put()
	natstest.CheckFor(t, time.Second, 10*time.Millisecond, func() error {
		if err := call("tok-1"); !errors.Is(err, wire.ErrSessionClosed) {
			return fmt.Errorf("got %v, want session_closed", err)
		}
		return nil
	})
	if strings.Contains(h.log.String(), "tok-1") {
		t.Fatal("the log contains a session token")
	}
}

// TestPasswordBeyondBcryptLimit: bcrypt reads only a password's first 72 bytes, so a
// user whose password is 72 bytes long was admitted with any text appended to it.
// The password must match as a whole.
func TestPasswordBeyondBcryptLimit(t *testing.T) {
	name := filepath.Join(t.TempDir(), "users.yaml")
	pw := strings.Repeat("p", 72)
	if err := AddUser(name, "long", pw, []string{"user"}, nil, bcrypt.MinCost, false); err != nil {
		t.Fatal(err)
	}
	users, err := NewUsersFile(name)
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, nil, Config{Authenticators: []Authenticator{users}, InitialPolicy: testPolicy()})
	if _, err := h.svc.authenticate(t.Context(), &wire.Credentials{Username: "long", Password: pw}, nil, "192.0.2.1"); err != nil {
		t.Fatalf("the right password: got %v, want success", err)
	}
	for _, extra := range []string{"x", "-anything at all"} {
		_, err := h.svc.authenticate(t.Context(), &wire.Credentials{Username: "long", Password: pw + extra}, nil, "192.0.2.2")
		if !errors.Is(err, wire.ErrUnauthenticated) {
			t.Fatalf("the password with %q appended: got %v, want unauthenticated", extra, err)
		}
	}
}

// TestThrottleCountsIPv6ByNetwork: an IPv6 client usually holds a whole /64 and can
// pick a fresh address in it for every attempt, so failures counted per address
// never added up: guesses for many users from one network were never throttled.
// IPv6 failures count per /64; an IPv4 address written as IPv6 counts as itself.
func TestThrottleCountsIPv6ByNetwork(t *testing.T) {
	h := start(t, nil, sessionConfig(t))
	ctx := t.Context()
	for i := range 3 {
		_, err := h.svc.authenticate(ctx, &wire.Credentials{Username: fmt.Sprint("ghost", i), Password: "x"}, nil, fmt.Sprintf("2001:db8:1:2::%x", i+1))
		if !errors.Is(err, wire.ErrUnauthenticated) {
			t.Fatalf("attempt %d: got %v, want unauthenticated", i, err)
		}
	}
	if _, err := h.svc.authenticate(ctx, &wire.Credentials{Username: "root", Password: "root-pw"}, nil, "2001:db8:1:2:ffff::9"); !errors.Is(err, wire.ErrThrottled) {
		t.Fatalf("another address of the same /64: got %v, want throttled", err)
	}
	if _, err := h.svc.authenticate(ctx, &wire.Credentials{Username: "root", Password: "root-pw"}, nil, "2001:db8:1:3::1"); err != nil {
		t.Fatalf("another /64: got %v, want success", err)
	}
	for i := range 3 {
		_, _ = h.svc.authenticate(ctx, &wire.Credentials{Username: fmt.Sprint("ghost", i), Password: "x"}, nil, "::ffff:192.0.2.77")
	}
	if _, err := h.svc.authenticate(ctx, nil, nil, "192.0.2.77"); !errors.Is(err, wire.ErrThrottled) {
		t.Fatalf("the IPv4 address written as IPv6 failed, then as IPv4: got %v, want throttled", err)
	}
	if _, err := h.svc.authenticate(ctx, nil, nil, "192.0.2.78"); err != nil {
		t.Fatalf("the next IPv4 address: got %v, want success", err)
	}
}

// failures returns the failures counted against key.
func (t *throttle) failures(key string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f, ok := t.table(key)[key]; ok {
		return f.count
	}
	return 0
}

// TestThrottleIsSharedByInstances: failures counted by one instance count on every
// other, and so does a success that forgets them. Each instance counted its own, so
// a client whose attempts a queue group spread over n instances had n times the
// failures before it was throttled.
func TestThrottleIsSharedByInstances(t *testing.T) {
	h1 := start(t, nil, sessionConfig(t))
	h2 := start(t, h1.srv, sessionConfig(t))
	ctx := t.Context()
	for i := range 3 {
		if _, err := h1.svc.authenticate(ctx, &wire.Credentials{Username: "alice", Password: "wrong"}, nil, fmt.Sprintf("192.0.2.%d", i)); !errors.Is(err, wire.ErrUnauthenticated) {
			t.Fatalf("attempt %d: got %v, want unauthenticated", i, err)
		}
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := h2.svc.throttle.failures(principalKey("alice")); n != 3 {
			return fmt.Errorf("the other instance counts %d failures for alice, want 3", n)
		}
		return nil
	})
	if _, err := h2.svc.authenticate(ctx, &wire.Credentials{Username: "alice", Password: "alice-pw"}, nil, "198.51.100.1"); !errors.Is(err, wire.ErrThrottled) {
		t.Fatalf("alice through the other instance: got %v, want throttled", err)
	}

	// root fails once through h1 and proves itself through h2: h1 forgets the failure.
	if _, err := h1.svc.authenticate(ctx, &wire.Credentials{Username: "root", Password: "wrong"}, nil, "198.51.100.2"); !errors.Is(err, wire.ErrUnauthenticated) {
		t.Fatalf("root, wrong password: got %v", err)
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := h2.svc.throttle.failures(principalKey("root")); n != 1 {
			return fmt.Errorf("the other instance counts %d failures for root, want 1", n)
		}
		return nil
	})
	if _, err := h2.svc.authenticate(ctx, &wire.Credentials{Username: "root", Password: "root-pw"}, nil, "198.51.100.3"); err != nil {
		t.Fatalf("root, right password: %v", err)
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := h1.svc.throttle.failures(principalKey("root")); n != 0 {
			return fmt.Errorf("the instance that saw root fail still counts %d failures after root proved itself elsewhere", n)
		}
		return nil
	})
}

// TestRepeatedFailureCountsOnce: a client with several server URLs presents the same
// credentials to each server in turn (nats.go tries every one), and each attempt
// reaches an auth instance through the callout. The same failed attempt — same
// credentials, same address — counts once per window, on whichever instances see it;
// another password, or another address, counts again.
func TestRepeatedFailureCountsOnce(t *testing.T) {
	h1 := start(t, nil, sessionConfig(t))
	h2 := start(t, h1.srv, sessionConfig(t))
	h2.svc.repeatKey = h1.svc.repeatKey // as two instances holding one callout issuer
	ctx := t.Context()
	fail := func(h *harness, password, ip string) {
		t.Helper()
		if _, err := h.svc.authenticate(ctx, &wire.Credentials{Username: "alice", Password: password}, nil, ip); !errors.Is(err, wire.ErrUnauthenticated) {
			t.Fatalf("alice/%s from %s: got %v, want unauthenticated", password, ip, err)
		}
	}
	wantFailures := func(n int) {
		t.Helper()
		natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			for i, h := range []*harness{h1, h2} {
				if got := h.svc.throttle.failures(principalKey("alice")); got != n {
					return fmt.Errorf("instance %d counts %d failures for alice, want %d", i+1, got, n)
				}
			}
			return nil
		})
	}
	// One connect over three servers, the callouts spread over both instances.
	fail(h1, "wrong", "192.0.2.1")
	wantFailures(1)
	fail(h2, "wrong", "192.0.2.1")
	fail(h1, "wrong", "192.0.2.1")
	wantFailures(1)
	fail(h2, "wrong2", "192.0.2.1")
	fail(h1, "wrong", "192.0.2.2")
	wantFailures(3)
}

func TestRepeatKey(t *testing.T) {
	kp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	a, _ := repeatKey(&CalloutConfig{Issuer: kp})
	b, _ := repeatKey(&CalloutConfig{Issuer: kp})
	c, _ := repeatKey(nil)
	d, _ := repeatKey(nil)
	if !bytes.Equal(a, b) || len(a) != 32 {
		t.Errorf("two instances with one issuer: keys %x and %x, want one 32-byte key", a, b)
	}
	if bytes.Equal(c, d) || bytes.Equal(a, c) {
		t.Error("without a callout each instance needs a random key of its own")
	}
}

// TestThrottledPrincipalOutlastsAFloodOfAddresses: the throttle's memory is bounded
// (MaxKeys), and when it was full it forgot every count, the principals' with the
// addresses'. A failed bearer token or anonymous attempt costs no bcrypt, so a client
// holding many addresses (an IPv6 /48 is 65,536 networks of /64) could fill it within
// the window and wipe the count of a principal it was guessing the password of, as
// often as it liked. Addresses now have a budget of their own: filling it forgets
// addresses, never a principal's failures.
func TestThrottledPrincipalOutlastsAFloodOfAddresses(t *testing.T) {
	cfg := sessionConfig(t)
	cfg.Throttle.MaxKeys = 8
	h := start(t, nil, cfg)
	ctx := t.Context()
	for i := range 3 {
		if _, err := h.svc.authenticate(ctx, &wire.Credentials{Username: "alice", Password: fmt.Sprint("guess", i)}, nil, fmt.Sprintf("2001:db8:0:%x::1", i)); !errors.Is(err, wire.ErrUnauthenticated) {
			t.Fatalf("guess %d: got %v, want unauthenticated", i, err)
		}
	}
	for i := range 3 * cfg.Throttle.MaxKeys {
		if _, err := h.svc.authenticate(ctx, &wire.Credentials{Token: "not-a-token"}, nil, fmt.Sprintf("2001:db8:1:%x::1", i)); !errors.Is(err, wire.ErrUnauthenticated) {
			t.Fatalf("bad token %d: got %v, want unauthenticated", i, err)
		}
	}
	if _, err := h.svc.authenticate(ctx, &wire.Credentials{Username: "alice", Password: "alice-pw"}, nil, "2001:db8:2::1"); !errors.Is(err, wire.ErrThrottled) {
		t.Fatalf("alice after a flood of failures from other addresses: got %v, want throttled", err)
	}
}

// TestStartWithAnInvalidStoredPolicySaysSo: an auth service that finds a stored
// policy it cannot apply (written behind the store's back, or by a later release
// with a permission this one does not know) does not start, since without a policy
// it would veto every property proposed and refuse every anonymous connection
// without a word. The error was the validation's alone — 'policy: role "x": unknown
// permission "FUTURE_PERMISSION"' — for a start given no policy at all; it now says
// the stored policy is at fault, at which revision, and how to replace it.
func TestStartWithAnInvalidStoredPolicySaysSo(t *testing.T) {
	srv := natstest.Start(t)
	js := srv.JetStream(t)
	if _, err := policy.OpenStore(t.Context(), js); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), policy.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := kv.Put(t.Context(), policy.Key, []byte(`{"roles":{"x":[{"permission":"FUTURE_PERMISSION"}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(srv.ServiceConn(t), Config{DefaultPolicy: policy.Development()}, noop.NewTracerProvider(), (&natstest.Buffer{}).Logger())
	if err == nil {
		t.Fatal("started with a stored policy it cannot apply")
	}
	for _, want := range []string{"stored policy", fmt.Sprintf("revision %d", rev), "FUTURE_PERMISSION", "--policy"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want it to name %q", err, want)
		}
	}
	// Given a policy to store, it starts and replaces the one it could not apply.
	h := start(t, srv, Config{InitialPolicy: testPolicy()})
	if !h.svc.Policy().Allowed([]string{"admin"}, policy.ModifySecurity, "") {
		t.Fatal("the policy given at start is not in effect")
	}
}
