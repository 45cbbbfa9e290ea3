package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// testPolicy grants admins everything, users their own properties under profile/ and one-segment keys, and
// admits anonymous sessions as users. Its property rules accept any key but Dept
// (vetoed), Tier (bronze or silver) and Level (rewritten to basic), and values up
// to 1 MiB (the registry's own limits are under test).
func testPolicy() *policy.Holder {
	all := policy.AllGrants()
	basic := "basic"
	return policy.NewHolder(&policy.Policy{
		Properties: policy.Properties{Default: policy.Accept, MaxValueLength: 1 << 20, Rules: []policy.PropertyRule{
			{Key: "Dept", Veto: true},
			{Key: "Tier", Values: policy.List{"bronze", "silver"}},
			{Key: "Level", Set: &basic},
		}},
		Roles: map[string][]policy.Grant{
			"admin":  all,
			"user":   {{Permission: policy.ModifyOwnProperties, Names: []string{"profile/**", "*"}}},
			"viewer": {{Permission: policy.ViewSession}},
			// May change and close others, not read them.
			"moderator": {{Permission: policy.ModifySession}},
		},
		Anonymous: policy.Anonymous{Allowed: true, Roles: []string{"user"}},
	})
}

// startAuth answers wire.SubjectAuthenticate for the registry under test: anonymous
// credentials become principal "anonymous" with role user, a password "pw" makes the
// username the principal, with the username as its role, a password "slowpw" does
// the same after 500 ms with role user, and anything else is unauthenticated. It stands in for the auth service until that one is wired in:
// replacing this function with starting services/auth is the only change needed.
func startAuth(t testing.TB, srv *natstest.Server) {
	t.Helper()
	nc := srv.ServiceConn(t)
	_, err := nc.QueueSubscribe(wire.SubjectAuthenticate, "auth", func(m *nats.Msg) {
		var req wire.AuthenticateRequest
		if err := json.Unmarshal(m.Data, &req); err != nil {
			_ = endpoint.ReplyError(nc, m.Reply, wire.Errorf(wire.CodeBadRequest, "bad request"))
			return
		}
		c := req.Credentials
		var resp wire.AuthenticateResponse
		switch {
		case c == nil || c.Type == "" || c.Type == wire.CredentialsAnonymous:
			resp = wire.AuthenticateResponse{Principal: "anonymous", Roles: []string{"user"}}
		case c.Type == wire.CredentialsPassword && c.Password == "pw" && c.Username != "":
			resp = wire.AuthenticateResponse{Principal: c.Username, Roles: []string{c.Username}}
		case c.Type == wire.CredentialsPassword && c.Password == "slowpw" && c.Username != "":
			// An auth service under load, or a bcrypt check: accepted after a while.
			time.Sleep(500 * time.Millisecond)
			resp = wire.AuthenticateResponse{Principal: c.Username, Roles: []string{"user"}}
		case c.Type == wire.CredentialsPassword && c.Password == "slow":
			_ = endpoint.ReplyError(nc, m.Reply, wire.Errorf(wire.CodeThrottled, "too many failed attempts"))
			return
		default:
			_ = endpoint.ReplyError(nc, m.Reply, wire.Errorf(wire.CodeUnauthenticated, "credentials not accepted"))
			return
		}
		resp.Properties = req.Properties
		resp.Authenticator = "test"
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

// instance is a running registry.
type instance struct {
	*Service
	logs *natstest.Buffer
	stop func()
}

// startRegistry runs a registry instance on its own connection until the test ends
// or stop is called, and waits until it has loaded the sessions.
func startRegistry(t testing.TB, srv *natstest.Server, cfg Config) *instance {
	t.Helper()
	nc := srv.ServiceConn(t)
	logs := &natstest.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 5 * time.Second
	}
	s, err := New(nc, cfg, testPolicy(), noop.NewTracerProvider(), log)
	if err != nil {
		t.Fatalf("registry: %v", err)
	}
	stop := natstest.Run(t, s.Run, nc.Close)
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { return s.track.ready(t.Context()) })
	return &instance{Service: s, logs: logs, stop: stop}
}

// startUnready starts an instance as roster serve does — New, then Run at once —
// without waiting for its tracker to load, on its own connection.
func startUnready(t testing.TB, srv *natstest.Server, cfg Config) *Service {
	t.Helper()
	nc := srv.ServiceConn(t)
	s, err := New(nc, cfg, testPolicy(), noop.NewTracerProvider(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	natstest.Run(t, s.Run, nc.Close)
	return s
}

// env is a server with the auth double and one registry.
type env struct {
	srv *natstest.Server
	reg *instance
	js  jetstream.JetStream
	kv  jetstream.KeyValue
}

// startServer starts the embedded server for a test. Tests check behaviour, not
// durability, so JetStream fsyncs periodically instead of on every write: on a slow
// disk shared with other test processes an fsync can take longer than the timing
// bounds under test. Benchmarks keep the default (fsync always).
func startServer(t testing.TB, opts ...natstest.Option) *natstest.Server {
	t.Helper()
	return natstest.Start(t, append([]natstest.Option{func(c *embedded.Config) { c.SyncInterval = time.Minute }}, opts...)...)
}

func newEnv(t testing.TB, cfg Config, opts ...natstest.Option) *env {
	t.Helper()
	srv := startServer(t, opts...)
	startAuth(t, srv)
	reg := startRegistry(t, srv, cfg)
	js := srv.JetStream(t)
	kv, err := js.KeyValue(context.Background(), sessions.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	return &env{srv: srv, reg: reg, js: js, kv: kv}
}

// client is a session held by a client connection.
type client struct {
	nc    *nats.Conn
	id    string
	token string
}

func (c *client) header() nats.Header {
	h := nats.Header{}
	h.Set(wire.HeaderSession, c.id)
	h.Set(wire.HeaderToken, c.token)
	return h
}

// call sends a request for the client's session.
func (c *client) call(subject string, req, resp any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return wire.Call(ctx, c.nc, subject, c.header(), req, resp)
}

// open opens a session on nc.
func open(t testing.TB, nc *nats.Conn, req *wire.SessionOpenRequest) (*client, *wire.SessionOpenResponse) {
	t.Helper()
	c, resp, err := tryOpen(nc, req)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return c, resp
}

// tryOpen is open for goroutines other than the test's, which must not call
// t.Fatal: it returns the error.
func tryOpen(nc *nats.Conn, req *wire.SessionOpenRequest) (*client, *wire.SessionOpenResponse, error) {
	var resp wire.SessionOpenResponse
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	subject := wire.SubjectSessionOpen
	if req != nil && req.GatewayType != "" {
		subject = wire.SubjectSessionOpenGateway
	}
	if err := wire.Call(ctx, nc, subject, nil, req, &resp); err != nil {
		return nil, nil, err
	}
	return &client{nc: nc, id: resp.Session.ID, token: resp.Token}, &resp, nil
}

// admin opens a session as the admin principal.
func admin(t testing.TB, nc *nats.Conn) *client {
	c, _ := open(t, nc, &wire.SessionOpenRequest{Credentials: &wire.Credentials{Type: wire.CredentialsPassword, Username: "admin", Password: "pw"}})
	return c
}

// wantCode fails unless err is a wire error with the code.
func wantCode(t testing.TB, err error, code wire.Code) {
	t.Helper()
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != code {
		t.Fatalf("got error %v, want %s", err, code)
	}
}

// record reads a session's record straight from the bucket.
func (e *env) record(t testing.TB, id string) *sessions.Record {
	t.Helper()
	entry, err := e.kv.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("kv get %s: %v", id, err)
	}
	r, err := sessions.Decode(entry.Value(), entry.Revision())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// lastSeq is the last sequence of the sessions bucket's stream: it moves on every
// write.
func (e *env) lastSeq(t testing.TB) uint64 {
	t.Helper()
	st, err := e.kv.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.(*jetstream.KeyValueBucketStatus).StreamInfo().State.LastSeq
}

// events returns the session events stored for one session and kind.
func (e *env) events(t testing.TB, id string, kind wire.SessionEventKind) []*wire.SessionEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := e.js.OrderedConsumer(ctx, EventsStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{wire.SessionEventSubject(id, kind)},
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []*wire.SessionEvent
	for {
		batch, err := cons.FetchNoWait(100)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var ev wire.SessionEvent
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				t.Fatal(err)
			}
			out = append(out, &ev)
		}
		if n == 0 {
			return out
		}
	}
}

// eventCount counts stored events of one kind for a session without consuming them.
func (e *env) eventCount(t testing.TB, id string, kind wire.SessionEventKind) uint64 {
	t.Helper()
	stream, err := e.js.Stream(context.Background(), EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	subj := wire.SessionEventSubject(id, kind)
	info, err := stream.Info(context.Background(), jetstream.WithSubjectFilter(subj))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subj]
}

// waitEventCount waits until the stored events of one kind for a session number
// want. Events are published after the reply, so they may take a moment.
func (e *env) waitEventCount(t testing.TB, id string, kind wire.SessionEventKind, want uint64) {
	t.Helper()
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if got := e.eventCount(t, id, kind); got != want {
			return fmt.Errorf("session %s: got %d %s events, want %d", id, got, kind, want)
		}
		return nil
	})
}
