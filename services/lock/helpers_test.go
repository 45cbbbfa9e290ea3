package lock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/schematest"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
	"github.com/seed-3c836eab/roster/services/registry"
)

// testPolicy: admin may do everything; trader may acquire update-topic/a only;
// viewer may list locks and acquire nothing.
func testPolicy() *policy.Holder {
	all := policy.AllGrants()
	return policy.NewHolder(&policy.Policy{
		Roles: map[string][]policy.Grant{
			"admin":  all,
			"trader": {{Permission: policy.AcquireLock, Names: []string{"update-topic/a"}}},
			"viewer": {{Permission: policy.ViewLocks}},
		},
		Anonymous: policy.Anonymous{Allowed: true, Roles: []string{"admin"}},
	})
}

// serveAuth stands in for the auth service on wire.SubjectAuthenticate: password
// "pw" makes the username the principal, and its part before any "-" its only role. The registry under test
// is the real one.
func serveAuth(t testing.TB, srv *natstest.Server) {
	t.Helper()
	nc := srv.ServiceConn(t)
	_, err := nc.QueueSubscribe(wire.SubjectAuthenticate, "auth", func(m *nats.Msg) {
		var req wire.AuthenticateRequest
		_ = json.Unmarshal(m.Data, &req)
		c := req.Credentials
		if c == nil || c.Type != wire.CredentialsPassword || c.Password != "pw" || c.Username == "" {
			_ = endpoint.ReplyError(nc, m.Reply, wire.Errorf(wire.CodeUnauthenticated, "credentials not accepted"))
			return
		}
		role, _, _ := strings.Cut(c.Username, "-") // "admin-7" is a principal with role admin
		data, _ := json.Marshal(wire.AuthenticateResponse{Principal: c.Username, Roles: []string{role},
			Properties: req.Properties, Authenticator: "test"})
		_ = m.Respond(data)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// env is an embedded server with the auth stand-in, a registry and lock instances.
type env struct {
	srv *natstest.Server
	js  jetstream.JetStream
	pol *policy.Holder
	// authz, when set, is the Authorizer of the lock instances started from then
	// on, instead of pol.
	authz Authorizer
	// stopRegistry stops the registry (also done when the test ends).
	stopRegistry func()
}

func newEnv(t testing.TB, opts ...natstest.Option) *env {
	t.Helper()
	srv := natstest.Start(t, opts...)
	serveAuth(t, srv)
	e := &env{srv: srv, js: srv.JetStream(t), pol: testPolicy()}
	e.stopRegistry = e.startRegistry(t)
	return e
}

func (e *env) startRegistry(t testing.TB) (stop func()) {
	t.Helper()
	nc := e.srv.ServiceConn(t)
	reg, err := registry.New(nc, registry.Config{DrainTimeout: 5 * time.Second}, e.pol, noop.NewTracerProvider(), natstest.Logger(t))
	if err != nil {
		t.Fatalf("registry: %v", err)
	}
	return natstest.Run(t, reg.Run, nc.Close)
}

// instance is a running lock service instance.
type instance struct {
	*Service
	nc   *nats.Conn
	view *sessions.View
	// logs holds what the instance logged (also written to the test's log with
	// ROSTER_TEST_LOG set).
	logs *natstest.Buffer
	once sync.Once
	stop func()
}

// startLock runs a lock instance on its own connection, with its own session view,
// until the test ends or stop (graceful) or kill (the connection drops first) is
// called.
func (e *env) startLock(t testing.TB, cfg Config) *instance {
	t.Helper()
	return e.startLockTraced(t, cfg, noop.NewTracerProvider())
}

// startLockTraced is startLock with the instance's tracer provider.
func (e *env) startLockTraced(t testing.TB, cfg Config, tp trace.TracerProvider) *instance {
	t.Helper()
	in, err := e.launchLock(t, cfg, tp)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// startLockViewing is startLock with options for the instance's session view.
func (e *env) startLockViewing(t testing.TB, cfg Config, opts ...sessions.Option) *instance {
	t.Helper()
	in, err := e.launchLock(t, cfg, noop.NewTracerProvider(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// launchLock is startLock for goroutines other than the test's, which must not
// call t.Fatal: it returns what failed instead.
func (e *env) launchLock(t testing.TB, cfg Config, tp trace.TracerProvider, viewOpts ...sessions.Option) (*instance, error) {
	nc, err := e.srv.ConnectService()
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	view, err := sessions.Watch(ctx, js, viewOpts...)
	if err != nil {
		cancel()
		nc.Close()
		return nil, err
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 5 * time.Second
	}
	logs := &natstest.Buffer{}
	log := slog.New(slog.NewMultiHandler(logs.Logger().Handler(), natstest.Logger(t).Handler()))
	var authz Authorizer = e.pol
	if e.authz != nil {
		authz = e.authz
	}
	s, err := New(nc, cfg, view, authz, tp, log)
	if err != nil {
		cancel()
		view.Close()
		nc.Close()
		return nil, fmt.Errorf("lock: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	in := &instance{Service: s, nc: nc, view: view, logs: logs}
	in.stop = func() {
		in.once.Do(func() {
			cancel()
			<-done
			view.Close()
			nc.Close()
		})
	}
	t.Cleanup(in.stop)
	return in, nil
}

// waitLogged waits until the instance has logged msg n times in all, and fails the
// test if it does not within 15 s.
func (in *instance) waitLogged(t testing.TB, msg string, n int) {
	t.Helper()
	natstest.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		if got := in.logged(msg); got < n {
			return fmt.Errorf("the instance logged %q %d times, want %d", msg, got, n)
		}
		return nil
	})
}

// logged counts the lines of the instance's log whose message is msg.
func (in *instance) logged(msg string) int {
	want := `"msg":` + jsonString(msg)
	n := 0
	for line := range strings.Lines(in.logs.String()) {
		if strings.Contains(line, want) {
			n++
		}
	}
	return n
}

// kill drops the instance's connection without draining, as a crash would, then
// stops what is left of it.
func (in *instance) kill() {
	in.nc.Close()
	in.stop()
}

// client is a session opened over a client connection (CLIENTS account), so that
// its requests cross the service import as real clients' do.
type client struct {
	nc    *nats.Conn
	id    string
	token string
	roles []string
}

// open opens a session with role as principal and role.
func (e *env) open(t testing.TB, role string, timeoutMS int64) *client {
	t.Helper()
	return e.openOn(t, e.srv.ClientConn(t), role, timeoutMS)
}

func (e *env) openOn(t testing.TB, nc *nats.Conn, role string, timeoutMS int64) *client {
	t.Helper()
	var resp wire.SessionOpenResponse
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := wire.Call(ctx, nc, wire.SubjectSessionOpen, nil, &wire.SessionOpenRequest{
		Credentials: &wire.Credentials{Type: wire.CredentialsPassword, Username: role, Password: "pw"},
		TimeoutMS:   timeoutMS,
	}, &resp)
	if err != nil {
		t.Fatalf("open session: %v", err)
	}
	return &client{nc: nc, id: resp.Session.ID, token: resp.Token, roles: resp.Session.Roles}
}

func (c *client) header() nats.Header {
	h := nats.Header{}
	h.Set(wire.HeaderSession, c.id)
	h.Set(wire.HeaderToken, c.token)
	return h
}

// rawCall sends body to subject for the session and returns the reply message.
func (c *client) rawCall(ctx context.Context, subject string, body []byte) (*nats.Msg, error) {
	return wire.CallRaw(ctx, c.nc, subject, c.header(), body)
}

// call sends req as JSON and decodes the reply into resp.
func (c *client) call(ctx context.Context, subject string, req, resp any) error {
	return wire.Call(ctx, c.nc, subject, c.header(), req, resp)
}

func (c *client) acquire(ctx context.Context, req *wire.LockAcquireRequest) (*wire.Lock, error) {
	var resp wire.LockAcquireResponse
	if err := c.call(ctx, wire.SubjectLockAcquire, req, &resp); err != nil {
		return nil, err
	}
	return resp.Lock, nil
}

func (c *client) release(ctx context.Context, name string, token uint64) error {
	return c.call(ctx, wire.SubjectLockRelease, &wire.LockReleaseRequest{Name: name, Token: token}, nil)
}

// mustAcquire acquires with a 10 s bound and fails the test on error.
func (c *client) mustAcquire(t testing.TB, req *wire.LockAcquireRequest) *wire.Lock {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := c.acquire(ctx, req)
	if err != nil {
		t.Fatalf("acquire %s (%s): %v", req.Name, req.Mode, err)
	}
	return l
}

func (c *client) mustRelease(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.release(ctx, name, 0); err != nil {
		t.Fatalf("release %s: %v", name, err)
	}
}

// pending is an acquire running in the background.
type pending struct {
	done chan struct{}
	lock *wire.Lock
	err  error
}

func (c *client) acquireAsync(req *wire.LockAcquireRequest) *pending {
	p := &pending{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		p.lock, p.err = c.acquire(ctx, req)
	}()
	return p
}

// wait returns the result, failing the test if it does not come within d.
func (p *pending) wait(t testing.TB, d time.Duration) (*wire.Lock, error) {
	t.Helper()
	select {
	case <-p.done:
		return p.lock, p.err
	case <-time.After(d):
		t.Fatalf("acquire did not complete within %v", d)
		return nil, nil
	}
}

func (p *pending) completed() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wantCode fails unless err is a wire error with the code.
func wantCode(t testing.TB, err error, code wire.Code) {
	t.Helper()
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != code {
		t.Fatalf("got error %v, want %s", err, code)
	}
}

// lockRecord returns a lock's record from the bucket; nil when it has none.
func (e *env) lockRecord(t testing.TB, name string) *record {
	t.Helper()
	kv, err := e.js.KeyValue(context.Background(), Bucket)
	if err != nil {
		t.Fatal(err)
	}
	ent, err := kv.Get(context.Background(), KeyFor(name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	rec, err := decodeRecord(ent.Value(), ent.Revision())
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// waiting returns the request ids waiting on a lock, from the bucket.
func (e *env) waiting(t testing.TB, name string) []string {
	t.Helper()
	rec := e.lockRecord(t, name)
	if rec == nil {
		return nil
	}
	var ids []string
	for _, w := range rec.Waiters {
		ids = append(ids, w.ID)
	}
	return ids
}

// sessionRecord returns a session's record from the sessions bucket.
func (e *env) sessionRecord(t testing.TB, id string) *sessions.Record {
	t.Helper()
	kv, err := e.js.KeyValue(context.Background(), sessions.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	ent, err := kv.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	r, err := sessions.Decode(ent.Value(), ent.Revision())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// waitQueued waits until n requests wait on name.
// waitSessionState waits until the session's record is in state want.
func (e *env) waitSessionState(t testing.TB, id string, want wire.SessionState) {
	t.Helper()
	kv, err := e.js.KeyValue(context.Background(), sessions.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		entry, err := kv.Get(context.Background(), id)
		if err != nil {
			return err
		}
		r, err := sessions.Decode(entry.Value(), entry.Revision())
		if err != nil {
			return err
		}
		if r.State != want {
			return fmt.Errorf("session %s is %s, want %s", id, r.State, want)
		}
		return nil
	})
}

func (e *env) waitQueued(t testing.TB, name string, n int) {
	t.Helper()
	natstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if got := len(e.waiting(t, name)); got != n {
			return fmt.Errorf("%d waiters, want %d", got, n)
		}
		return nil
	})
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// validate checks a body against its schema.
func validate(t testing.TB, schema string, v any) {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	schematest.Validate(t, schema, data)
}
