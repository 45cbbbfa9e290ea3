package roster_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/roster"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
	"github.com/seed-3c836eab/roster/services/auth"
)

// Issue 5's token guarantees, checked across the whole system: the embedded server
// with the auth callout and all four services, real users and a real policy.

// tokenPolicy lets members do everything a session-scoped request of each service
// needs, so that a refusal can only come from the session's state or token.
const tokenPolicy = `
roles:
  member:
    - permission: ACQUIRE_LOCK
      names: ["t/**"]
    - permission: VIEW_LOCKS
    - permission: SEND_TO_FILTER
      names: ["t/**"]
    - permission: MODIFY_OWN_PROPERTIES
    - permission: VIEW_SESSION
    - permission: MODIFY_SECURITY
anonymous:
  allowed: false
properties:
  default: accept
`

// Passwords of the users file; the log test looks for them.
const (
	alicePassword = "alice-secret-pw-7f3a9c"
	bobPassword   = "bob-secret-pw-42d1e8"
	wrongPassword = "not-the-password-c0ffee"
)

// authFiles writes a users file with alice and bob (role member) and the policy.
func authFiles(t *testing.T) func(*roster.Config) {
	t.Helper()
	dir := t.TempDir()
	users, pol := filepath.Join(dir, "users.yaml"), filepath.Join(dir, "policy.yaml")
	for user, pw := range map[string]string{"alice": alicePassword, "bob": bobPassword} {
		if err := auth.AddUser(users, user, pw, []string{"member"}, nil, bcrypt.MinCost, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(pol, []byte(tokenPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(c *roster.Config) {
		c.Auth.UsersFile = users
		c.Auth.PolicyFile = pol
	}
}

// connect opens a client connection as the SDK does: a fresh user nkey, the
// connection's own inbox prefix, and alice's credentials.
func connect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	nc, err := nats.Connect(url, nats.Nkey(pub, kp.Sign), nats.CustomInboxPrefix(wire.ConnectionInbox(pub)),
		nats.UserInfo("alice", alicePassword))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// session is a session as a client holds it.
type session struct {
	nc        *nats.Conn
	id, token string
}

func password(user, pw string) *wire.Credentials {
	return &wire.Credentials{Type: wire.CredentialsPassword, Username: user, Password: pw}
}

func (s *session) header() nats.Header {
	h := nats.Header{}
	h.Set(wire.HeaderSession, s.id)
	h.Set(wire.HeaderToken, s.token)
	return h
}

func (s *session) call(subject string, req, resp any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return wire.Call(ctx, s.nc, subject, s.header(), req, resp)
}

func openSession(t *testing.T, nc *nats.Conn, timeout time.Duration) *session {
	t.Helper()
	var resp wire.SessionOpenResponse
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := &wire.SessionOpenRequest{Credentials: password("alice", alicePassword), TimeoutMS: timeout.Milliseconds()}
	if err := wire.Call(ctx, nc, wire.SubjectSessionOpen, nil, req, &resp); err != nil {
		t.Fatalf("open: %v", err)
	}
	return &session{nc: nc, id: resp.Session.ID, token: resp.Token}
}

// scoped is one session-scoped request of one service.
type scoped struct {
	name    string
	subject string
	body    any
}

// everyService lists a session-scoped request of every service that accepts them.
var everyService = []scoped{
	{"registry get", wire.SubjectSessionGet, &wire.SessionGetRequest{}},
	{"registry update", wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Set: map[string]string{"k": "v"}}},
	{"registry keepalive", wire.SubjectSessionKeepalive, nil},
	{"lock acquire", wire.SubjectLockAcquire, &wire.LockAcquireRequest{Name: "t/a"}},
	{"lock list", wire.SubjectLockList, &wire.LockListRequest{}},
	{"messaging send", wire.SubjectMsgSend, &wire.MsgSendRequest{Message: wire.Message{Filter: `k is "nobody"`, Path: "t/x"}}},
	{"auth policy.get", auth.Prefix + ".policy.get", nil},
}

// acceptedEverywhere fails unless every service accepts the session's token.
func acceptedEverywhere(t *testing.T, s *session) {
	t.Helper()
	for _, r := range everyService {
		if err := s.call(r.subject, r.body, nil); err != nil {
			t.Fatalf("%s with a valid session: %v", r.name, err)
		}
	}
}

// rejectedEverywhereBy polls every service with the session's (old) token until
// each refuses it with code, and fails unless all do by deadline. A service that
// refused and then accepts again fails the test at once.
func rejectedEverywhereBy(t *testing.T, s *session, code wire.Code, event, deadline time.Time) {
	t.Helper()
	refused := map[string]time.Duration{}
	natstest.CheckFor(t, time.Until(deadline), 5*time.Millisecond, func() error {
		var waiting []string
		for _, r := range everyService {
			err := s.call(r.subject, r.body, nil)
			var we *wire.Error
			switch {
			case errors.As(err, &we) && we.Code == code:
				if _, ok := refused[r.name]; !ok {
					refused[r.name] = time.Since(event)
				}
			case refused[r.name] != 0:
				t.Fatalf("%s refused the token with %s, then answered %v", r.name, code, err)
			default:
				waiting = append(waiting, fmt.Sprintf("%s: got %v", r.name, err))
			}
		}
		if len(waiting) > 0 {
			return fmt.Errorf("want %s from every service; %s", code, strings.Join(waiting, "; "))
		}
		return nil
	})
	t.Logf("refused with %s after the event: %v", code, refused)
}

func TestTokenRejectedEverywhereWithinOneSecond(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t, rostertest.WithConfig(authFiles(t)))
	nc := connect(t, p.ClientURL())

	t.Run("close", func(t *testing.T) {
		s := openSession(t, nc, 0)
		acceptedEverywhere(t, s)
		event := time.Now()
		if err := s.call(wire.SubjectSessionClose, &wire.SessionCloseRequest{}, nil); err != nil {
			t.Fatal(err)
		}
		rejectedEverywhereBy(t, s, wire.CodeSessionClosed, event, event.Add(time.Second))
	})

	t.Run("expiry", func(t *testing.T) {
		const timeout = time.Second
		s := openSession(t, nc, timeout)
		acceptedEverywhere(t, s)
		lastReply := time.Now()
		// The client falls silent. Watch the record from the services account
		// (reading it is no activity) until the registry closes it.
		kv := sessionsBucket(t, p)
		var rec *sessions.Record
		natstest.CheckFor(t, timeout+3*time.Second, 5*time.Millisecond, func() error {
			rec = rawRecord(t, kv, s.id)
			if !rec.Closed() {
				return fmt.Errorf("session %s is %s", s.id, rec.State)
			}
			return nil
		})
		if rec.CloseReason != wire.ClosedExpired {
			t.Fatalf("got close reason %q, want expired", rec.CloseReason)
		}
		if late := rec.ClosedAt.Sub(lastReply) - timeout; late > time.Second {
			t.Fatalf("expired %v after its timeout; want within 1 s", late)
		}
		rejectedEverywhereBy(t, s, wire.CodeSessionClosed, *rec.ClosedAt, rec.ClosedAt.Add(time.Second))
	})

	t.Run("change principal", func(t *testing.T) {
		s := openSession(t, nc, 0)
		acceptedEverywhere(t, s)
		event := time.Now()
		var resp wire.SessionChangePrincipalResponse
		if err := s.call(wire.SubjectSessionChangePrincipal, &wire.SessionChangePrincipalRequest{Credentials: password("bob", bobPassword)}, &resp); err != nil {
			t.Fatal(err)
		}
		if resp.Session.Principal != "bob" || resp.Token == "" || resp.Token == s.token {
			t.Fatalf("got principal %q and token changed %v, want bob and a new token", resp.Session.Principal, resp.Token != s.token)
		}
		// The new token works everywhere at once, even where the rotation has not
		// arrived yet (the services' views read the record again before refusing).
		rotated := &session{nc: nc, id: s.id, token: resp.Token}
		acceptedEverywhere(t, rotated)
		rejectedEverywhereBy(t, s, wire.CodeInvalidToken, event, event.Add(time.Second))
	})
}

// sessionsBucket opens the sessions bucket from the services account.
func sessionsBucket(t *testing.T, p *roster.Process) jetstream.KeyValue {
	t.Helper()
	nc, err := p.Server().ConnectService()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), sessions.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func rawEntry(t *testing.T, kv jetstream.KeyValue, id string) jetstream.KeyValueEntry {
	t.Helper()
	e, err := kv.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("kv get %s: %v", id, err)
	}
	return e
}

func rawRecord(t *testing.T, kv jetstream.KeyValue, id string) *sessions.Record {
	t.Helper()
	e := rawEntry(t, kv, id)
	rec, err := sessions.Decode(e.Value(), e.Revision())
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestTokenStoredOnlyHashed(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t, rostertest.WithConfig(authFiles(t)))
	s := openSession(t, connect(t, p.ClientURL()), 0)
	acceptedEverywhere(t, s)
	raw := rawEntry(t, sessionsBucket(t, p), s.id).Value()
	sum := sha256.Sum256([]byte(s.token))
	if bytes.Contains(raw, []byte(s.token)) {
		t.Fatalf("the stored record holds the token: %s", raw)
	}
	if !bytes.Contains(raw, []byte(`"token_hash":"`+hex.EncodeToString(sum[:])+`"`)) {
		t.Fatalf("the stored record does not hold the token's SHA-256: %s", raw)
	}
}

func TestSecretsNeverLogged(t *testing.T) {
	t.Parallel()
	logs := &natstest.Buffer{}
	cfg := roster.Config{Embedded: embedded.Config{
		Name: "roster-test", Listen: "127.0.0.1:-1", DataDir: t.TempDir(), SyncInterval: time.Minute,
	}}
	authFiles(t)(&cfg)
	p, err := roster.Start(context.Background(), cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = p.Stop()
		}
	})
	nc := connect(t, p.ClientURL())

	// replies collects the error replies, headers and body; raw wants one.
	var replies bytes.Buffer
	raw := func(s *session, subject string, body string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var h nats.Header
		if s != nil {
			h = s.header()
		}
		if h == nil {
			h = nats.Header{}
		}
		// Services other than the registry learn of a close or a rotation from their
		// view of the bucket, within the second the guarantee allows (tested in
		// TestTokenRejectedEverywhereWithinOneSecond): ask again until the refusal comes.
		var msg *nats.Msg
		deadline := time.Now().Add(time.Second)
		for {
			var err error
			msg, err = nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: subject, Header: h, Data: []byte(body)})
			if err != nil {
				t.Fatalf("%s: %v", subject, err)
			}
			if msg.Header.Get(wire.HeaderErrorCode) != "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: got a success reply for a second, want an error", subject)
			}
			time.Sleep(5 * time.Millisecond)
		}
		fmt.Fprintf(&replies, "%s %v %s\n", subject, msg.Header, msg.Data)
	}

	s := openSession(t, nc, 0)
	tokens := []string{s.token}
	acceptedEverywhere(t, s)
	wrong := &session{nc: nc, id: s.id, token: strings.Repeat("A", len(s.token))}
	for _, r := range everyService {
		raw(wrong, r.subject, "{}")
	}
	raw(nil, wire.SubjectSessionOpen, `{"credentials":{"type":"password","username":"alice","password":"`+wrongPassword+`"}}`)
	raw(nil, wire.SubjectSessionOpen, `{"credentials":{"type":"password","username":"nobody","password":"`+alicePassword+`"}}`)
	raw(s, wire.SubjectSessionChangePrincipal, `{"credentials":{"type":"password","username":"bob","password":"`+wrongPassword+`"}}`)
	var changed wire.SessionChangePrincipalResponse
	if err := s.call(wire.SubjectSessionChangePrincipal, &wire.SessionChangePrincipalRequest{Credentials: password("bob", bobPassword)}, &changed); err != nil {
		t.Fatal(err)
	}
	raw(s, wire.SubjectSessionGet, "{}") // the old token: invalid_token
	s.token = changed.Token
	tokens = append(tokens, s.token)
	acceptedEverywhere(t, s)
	if err := s.call(wire.SubjectSessionClose, &wire.SessionCloseRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range everyService {
		raw(s, r.subject, "{}") // session_closed
	}
	// A connection with a wrong password is refused by the auth callout.
	if bad, err := nats.Connect(p.ClientURL(), nats.UserInfo("alice", wrongPassword)); err == nil {
		bad.Close()
		t.Fatal("a connection with a wrong password was admitted")
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped = true

	out := logs.String()
	// The capture is not empty, and it saw the refusals: the test looks at the
	// output that matters.
	for _, want := range []string{"service started", "auth"} {
		if !strings.Contains(out, want) {
			t.Fatalf("captured log lacks %q; is the capture working?\n%s", want, out)
		}
	}
	// The auth instance says how it judges credentials.
	if !strings.Contains(out, `msg="authenticator chain" authenticators=users`) {
		t.Errorf("the log does not name the authenticator chain:\n%s", out)
	}
	if !strings.Contains(replies.String(), string(wire.CodeInvalidToken)) || !strings.Contains(replies.String(), string(wire.CodeSessionClosed)) {
		t.Fatalf("error replies lack invalid_token or session_closed:\n%s", replies.String())
	}
	secrets := map[string]string{"alice's password": alicePassword, "bob's password": bobPassword, "the wrong password": wrongPassword}
	for i, tok := range tokens {
		secrets[fmt.Sprintf("token %d", i)] = tok
	}
	for name, secret := range secrets {
		if strings.Contains(out, secret) {
			t.Errorf("%s appears in the log", name)
		}
		if strings.Contains(replies.String(), secret) {
			t.Errorf("%s appears in an error reply", name)
		}
	}
	t.Logf("checked %d bytes of log and %d bytes of error replies", len(out), replies.Len())
}
