package messaging

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/goleak"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
	"github.com/seed-3c836eab/roster/services/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testPolicy: "sender" may send and request to sessions and filters on chat/** and
// orders/**; "direct" and "bystander" only to sessions, on chat/**; "nobody" may do
// nothing.
func testPolicy() *policy.Holder {
	paths := []string{"chat/**", "orders/**"}
	return policy.NewHolder(&policy.Policy{
		Roles: map[string][]policy.Grant{
			"sender": {
				{Permission: policy.SendToSession, Names: paths},
				{Permission: policy.SendToFilter, Names: paths},
			},
			"direct":    {{Permission: policy.SendToSession, Names: []string{"chat/**"}}},
			"bystander": {{Permission: policy.SendToSession, Names: []string{"chat/**"}}},
		},
		Anonymous:  policy.Anonymous{Allowed: true, Roles: []string{"nobody"}},
		Properties: policy.Properties{Default: policy.Accept},
	})
}

// env is an embedded NATS with the real registry, a stand-in for the auth service's
// authenticate subject, and a messaging instance whose spans are recorded.
type env struct {
	srv   *natstest.Server
	msg   *Service
	spans *tracetest.SpanRecorder
	tp    *sdktrace.TracerProvider
	cc    *nats.Conn     // client connection used to open sessions and call
	view  *sessions.View // the shared view (newEnvWith with shared), else nil
	stop  func()         // stops the messaging instance (Run returns); also at cleanup
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	return newEnvWith(t, cfg, false)
}

// forEachView runs test with a messaging instance that watches the bucket itself and
// with one that shares a full view (Config.Sessions), as in an all-in-one process.
func forEachView(t *testing.T, test func(t *testing.T, newEnv func(*testing.T, Config) *env)) {
	t.Run("own view", func(t *testing.T) { test(t, newEnv) })
	t.Run("shared view", func(t *testing.T) {
		test(t, func(t *testing.T, cfg Config) *env { return newEnvWith(t, cfg, true) })
	})
}

func newEnvWith(t *testing.T, cfg Config, shared bool) *env {
	t.Helper()
	srv := natstest.Start(t)
	startAuth(t, srv)
	pol := testPolicy()
	log := natstest.Logger(t)

	regConn := srv.ServiceConn(t)
	reg, err := registry.New(regConn, registry.Config{DrainTimeout: 5 * time.Second}, pol, noop.NewTracerProvider(), log)
	if err != nil {
		t.Fatalf("registry: %v", err)
	}
	natstest.Run(t, reg.Run)

	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 5 * time.Second
	}
	if shared {
		view, err := sessions.Watch(context.Background(), srv.JetStream(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(view.Close)
		cfg.Sessions = view
	}
	s, err := New(srv.ServiceConn(t), cfg, pol, tp, log)
	if err != nil {
		t.Fatalf("messaging: %v", err)
	}
	stop := natstest.Run(t, s.Run)
	return &env{srv: srv, msg: s, spans: spans, tp: tp, cc: srv.ClientConn(t), view: cfg.Sessions, stop: stop}
}

// startAuth answers wire.SubjectAuthenticate as the auth service would: a password
// "pw" makes the username the principal and its only role; anonymous sessions get
// the role nobody. Proposed properties are accepted.
func startAuth(t *testing.T, srv *natstest.Server) {
	t.Helper()
	nc := srv.ServiceConn(t)
	_, err := nc.Subscribe(wire.SubjectAuthenticate, func(m *nats.Msg) {
		var req wire.AuthenticateRequest
		_ = json.Unmarshal(m.Data, &req)
		resp := wire.AuthenticateResponse{Principal: "anonymous", Roles: []string{"nobody"}, Properties: req.Properties, Authenticator: "test"}
		if c := req.Credentials; c != nil && c.Type == wire.CredentialsPassword && c.Password == "pw" {
			resp.Principal, resp.Roles = c.Username, []string{c.Username}
		}
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

// session is an open session and the headers that act for it.
type session struct {
	id    string
	token string
}

func (s session) header() nats.Header {
	return nats.Header{wire.HeaderSession: {s.id}, wire.HeaderToken: {s.token}}
}

// open opens a session through the registry as user role (principal and role alike)
// and waits until the messaging instance holds it.
func (e *env) open(t *testing.T, role string, props map[string]string) session {
	t.Helper()
	var resp wire.SessionOpenResponse
	req := wire.SessionOpenRequest{
		Credentials: &wire.Credentials{Type: wire.CredentialsPassword, Username: role, Password: "pw"},
		Properties:  props,
	}
	if err := wire.Call(context.Background(), e.cc, wire.SubjectSessionOpen, nil, req, &resp); err != nil {
		t.Fatalf("open session: %v", err)
	}
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if _, ok := e.msg.ix.get(resp.Session.ID); !ok {
			return wire.Errorf(wire.CodeSessionNotFound, "messaging does not hold %s yet", resp.Session.ID)
		}
		return nil
	})
	return session{id: resp.Session.ID, token: resp.Token}
}

// call makes a messaging request as from, returning the raw reply.
func (e *env) call(from session, subject string, body any) (*nats.Msg, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return wire.CallRaw(ctx, e.cc, subject, from.header(), data)
}

// receiver collects the deliveries to one session on its own connection and answers
// requests with answer (nil: never answer).
type receiver struct {
	mu   sync.Mutex
	msgs []*nats.Msg
	got  chan *nats.Msg
}

func (e *env) receive(t *testing.T, s session, answer func(*nats.Msg)) *receiver {
	t.Helper()
	r := &receiver{got: make(chan *nats.Msg, 1024)}
	nc := e.srv.ClientConn(t)
	_, err := nc.Subscribe(wire.SessionDeliverPrefix("", s.id)+".>", func(m *nats.Msg) {
		r.mu.Lock()
		r.msgs = append(r.msgs, m)
		r.mu.Unlock()
		r.got <- m
		if answer != nil && m.Reply != "" {
			answer(m)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *receiver) next(t *testing.T) *nats.Msg {
	t.Helper()
	select {
	case m := <-r.got:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no delivery within 5s")
		return nil
	}
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

// respondError answers a delivered request with a wire error, as a receiver does.
func respondError(m *nats.Msg, err *wire.Error) {
	status, msg, body := wire.EncodeError(err)
	reply := nats.NewMsg(m.Reply)
	reply.Header.Set(wire.HeaderErrorCode, status)
	reply.Header.Set(wire.HeaderError, msg)
	reply.Data = body
	_ = m.RespondMsg(reply)
}
