package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/bcrypt"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/roster"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
	"github.com/seed-3c836eab/roster/services/auth"
)

// productionPolicy is a strict policy as docs/architecture.md's production
// configuration has it: no anonymous sessions, no connection relaxations.
const productionPolicy = `
roles:
  admin:
    - permission: VIEW_SESSION
    - permission: MODIFY_SESSION
    - permission: VIEW_LOCKS
    - permission: MODIFY_SECURITY
  trader:
    - permission: ACQUIRE_LOCK
      names: ["orders/*"]
    - permission: SEND_TO_SESSION
      names: ["chat/**"]
    - permission: MODIFY_OWN_PROPERTIES
      names: ["Desk"]
anonymous:
  allowed: false
properties:
  default: veto
  rules:
    - key: Desk
connections: {}
`

// startProduction runs Roster with productionPolicy and a users file: alice and bob
// (traders), root (admin).
func startProduction(t *testing.T, opts ...rostertest.Option) *roster.Process {
	t.Helper()
	dir := t.TempDir()
	policyFile := filepath.Join(dir, "policy.yaml")
	usersFile := filepath.Join(dir, "users.yaml")
	if err := os.WriteFile(policyFile, []byte(productionPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, u := range []struct{ name, pw, role string }{{"alice", "wonderland", "trader"}, {"bob", "builder", "trader"}, {"root", "toor", "admin"}} {
		if err := auth.AddUser(usersFile, u.name, u.pw, []string{u.role}, nil, bcrypt.MinCost, false); err != nil {
			t.Fatal(err)
		}
	}
	return rostertest.Start(t, append([]rostertest.Option{rostertest.WithConfig(func(c *roster.Config) {
		c.Auth.PolicyFile = policyFile
		c.Auth.UsersFile = usersFile
	})}, opts...)...)
}

// TestOneSessionCannotFillALocksQueue: a session may have at most 16 requests
// waiting for one lock. Without the bound one session could queue MaxWaiters (2,000)
// requests, each with its own request_id, and every other session asking to wait for
// that lock got limit_exceeded until they ended.
func TestOneSessionCannotFillALocksQueue(t *testing.T) {
	p := startProduction(t)
	bob := open(t, p.ClientURL(), client.Options{Credentials: client.Password("bob", "builder")})
	alice := open(t, p.ClientURL(), client.Options{Credentials: client.Password("alice", "wonderland")})
	other := open(t, p.ClientURL(), client.Options{Credentials: client.Password("alice", "wonderland")})
	ctx := ctxT(t)
	held, err := bob.TryLock(ctx, "orders/1", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Unlock(ctx)

	// alice asks 20 times, each request waiting 30 s under an id of its own.
	const asked = 20
	bodies := make([][]byte, asked)
	for i := range bodies {
		bodies[i], _ = json.Marshal(wire.LockAcquireRequest{Name: "orders/1", WaitMS: 30000, RequestID: "flood-" + strconv.Itoa(i)})
	}
	replies := flood(t, alice, wire.SubjectLockAcquire, bodies)
	expectRefused(t, replies, asked-16, "one session fills the queue")
	// Another session still queues, and waits out its time.
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := other.Lock(wctx, "orders/1", client.LockOptions{}); !errors.Is(err, client.ErrTimeout) {
		t.Fatalf("another session waits for the lock: got %v, want timeout", err)
	}
	select {
	case m := <-replies:
		t.Fatalf("one more reply: %s", m.Data)
	default:
	}
}

// TestOneSessionCannotHoldEveryEventsRead: a registry instance holds at most 16
// waiting event reads (wait_ms) of one session. It holds 4,096 in all, and without
// the bound one session could take them all: every other reader, FollowEvents
// included, got limit_exceeded until they ended, a minute later.
func TestOneSessionCannotHoldEveryEventsRead(t *testing.T) {
	p := startProduction(t)
	alice := open(t, p.ClientURL(), client.Options{Credentials: client.Password("alice", "wonderland")})
	bob := open(t, p.ClientURL(), client.Options{Credentials: client.Password("bob", "builder")})
	ctx := ctxT(t)

	const asked = 20
	// Reads past the end of the stream, each waiting 10 s for an event.
	body, _ := json.Marshal(wire.SessionEventsRequest{SessionID: alice.ID(), StartSeq: 1 << 40, WaitMS: 10000})
	replies := flood(t, alice, wire.SubjectSessionEvents, slices.Repeat([][]byte{body}, asked))
	expectRefused(t, replies, asked-16, "one session takes every held read")
	// Another session's read still waits, and ends with an empty page.
	start := time.Now()
	resp, err := bob.Events(ctx, wire.SessionEventsRequest{SessionID: bob.ID(), StartSeq: 1 << 40, WaitMS: 300})
	if err != nil || len(resp.Events) != 0 || time.Since(start) < 250*time.Millisecond {
		t.Fatalf("another session's waiting read: got %+v, %v after %v; want an empty page after 300 ms", resp, err, time.Since(start))
	}
	select {
	case m := <-replies:
		t.Fatalf("one more reply: %s", m.Data)
	default:
	}
}

// TestOneSessionCannotHoldEveryRequestSlot: a messaging instance runs at most 64
// requests of one session at once. A request holds one of the service's 256 handler
// slots until its receivers answer or its timeout (up to a minute), so one session
// asking a receiver that never answers could hold every slot, and every other
// session's send and request waited behind it.
func TestOneSessionCannotHoldEveryRequestSlot(t *testing.T) {
	t.Parallel()
	p := startProduction(t)
	alice := open(t, p.ClientURL(), client.Options{Credentials: client.Password("alice", "wonderland")})
	other := open(t, p.ClientURL(), client.Options{Credentials: client.Password("alice", "wonderland")})
	bob := open(t, p.ClientURL(), client.Options{Credentials: client.Password("bob", "builder")})
	ctx := ctxT(t)
	release := make(chan struct{})
	defer close(release)
	if _, err := bob.Handle("chat/slow", func(ctx context.Context, _ *client.Message) ([]byte, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}

	const asked, limit = 70, 64
	body, _ := json.Marshal(wire.MsgRequestRequest{Message: wire.Message{SessionID: bob.ID(), Path: "chat/slow"}, TimeoutMS: 10000})
	replies := flood(t, alice, wire.SubjectMsgRequest, slices.Repeat([][]byte{body}, asked))
	expectRefused(t, replies, asked-limit, "one session holds every request slot")
	// Another session still sends.
	if n, err := other.Send(ctx, client.ToSession(bob.ID()), "chat/hello", nil); err != nil || n != 1 {
		t.Fatalf("another session sends: got %d, %v", n, err)
	}
}

// TestForgedRequestInfoIsNotTrusted: the auth service trusts a policy request
// without Nats-Request-Info as one from inside the services account; a client that
// sends its own header (absent, malformed, lower case, twice, naming SERVICES) still
// gets the server's, and needs a session with MODIFY_SECURITY.
func TestForgedRequestInfoIsNotTrusted(t *testing.T) {
	t.Parallel()
	p := startProduction(t)
	alice := open(t, p.ClientURL(), client.Options{Credentials: client.Password("alice", "wonderland")})
	root := open(t, p.ClientURL(), client.Options{Credentials: client.Password("root", "toor")})
	ctx := ctxT(t)
	_, rev, err := root.Policy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	evil := policy.Development()
	body, _ := json.Marshal(policy.SetRequest{Policy: evil})
	nc := alice.Client().Conn()
	for name, hdr := range map[string]nats.Header{
		"none":          {},
		"garbage":       {wire.HeaderRequestInfo: {"garbage"}},
		"empty":         {wire.HeaderRequestInfo: {""}},
		"lower":         {"nats-request-info": {"garbage"}},
		"twice":         {wire.HeaderRequestInfo: {"garbage", "{}"}},
		"services":      {wire.HeaderRequestInfo: {`{"acc":"SERVICES"}`}},
		"session-noinf": {wire.HeaderSession: {alice.ID()}, wire.HeaderToken: {alice.Token()}, "nats-request-info": {"x"}},
	} {
		_, err := wire.CallRaw(ctx, nc, wire.SubjectPolicySet, hdr, body)
		if err == nil {
			t.Errorf("%s: policy.set succeeded", name)
		}
	}
	_, rev2, _ := root.Policy(ctx)
	if rev2 != rev {
		t.Fatalf("the policy changed: revision %d, was %d", rev2, rev)
	}
}

// flood publishes each body to subject as session s, all at once, and returns the
// channel the replies arrive on.
func flood(t *testing.T, s *client.Session, subject string, bodies [][]byte) <-chan *nats.Msg {
	t.Helper()
	nc := s.Client().Conn()
	replies := make(chan *nats.Msg, len(bodies))
	inbox := nc.NewInbox()
	sub, err := nc.ChanSubscribe(inbox, replies)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	for _, body := range bodies {
		msg := &nats.Msg{Subject: subject, Reply: inbox, Data: body, Header: nats.Header{
			wire.HeaderSession: {s.ID()}, wire.HeaderToken: {s.Token()}}}
		if err := nc.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}
	return replies
}

// expectRefused waits for n replies, each limit_exceeded: the requests beyond the
// bound (those within it are held, and answer nothing yet).
func expectRefused(t *testing.T, replies <-chan *nats.Msg, n int, what string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for refused := 0; refused < n; refused++ {
		select {
		case m := <-replies:
			if m.Header.Get(wire.HeaderErrorCode) == "" || !strings.Contains(string(m.Data), string(wire.CodeLimitExceeded)) {
				t.Fatalf("reply to a held request: %s %s", m.Header, m.Data)
			}
		case <-deadline:
			t.Fatalf("%d requests were refused, want %d: %s", refused, n, what)
		}
	}
}
