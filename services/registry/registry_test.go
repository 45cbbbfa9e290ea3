package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/schematest"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// rawCall sends a request body as is and returns the reply, so tests can validate the
// bytes against the schemas.
func rawCall(t *testing.T, c *client, subject string, body []byte) *nats.Msg {
	t.Helper()
	var hdr nats.Header
	if c.id != "" {
		hdr = c.header()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg, err := wire.CallRaw(ctx, c.nc, subject, hdr, body)
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	return msg
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)

	// Open, validating the real request and reply against the schemas.
	openBody := []byte(`{"properties":{"profile/name":"Ada","k1":"v"},"timeout_ms":30000}`)
	schematest.Validate(t, "session.open.request", openBody)
	reply := rawCall(t, &client{nc: nc}, wire.SubjectSessionOpen, openBody)
	schematest.Validate(t, "session.open.response", reply.Data)
	var opened wire.SessionOpenResponse
	if err := json.Unmarshal(reply.Data, &opened); err != nil {
		t.Fatal(err)
	}
	c := &client{nc: nc, id: opened.Session.ID, token: opened.Token}
	s := opened.Session
	if s.State != wire.StateActive || s.Principal != "anonymous" || s.TimeoutMS != 30000 {
		t.Fatalf("got %+v, want an ACTIVE anonymous session with a 30 s timeout", s)
	}
	fixed := s.Fixed
	want := map[string]string{
		"$SessionId": s.ID, "$Principal": "anonymous", "$Roles": `"user"`, "$ClientIP": "127.0.0.1",
		"$Transport": "TCP", "$ServerName": "roster-test", "$ClientType": "GO", "$Latitude": "NaN",
		"$Longitude": "NaN", "$Country": "", "$Language": "", "$Connector": "",
	}
	for k, v := range want {
		if fixed[k] != v {
			t.Errorf("fixed %s: got %q, want %q", k, fixed[k], v)
		}
	}
	if _, ok := fixed["$GatewayType"]; ok {
		t.Error("$GatewayType set on a session that is not a gateway's")
	}
	if s.Properties["profile/name"] != "Ada" {
		t.Errorf("got properties %v, want profile/name=Ada", s.Properties)
	}
	rec := e.record(t, s.ID)
	if rec.TokenHash != sessions.HashToken(c.token) || strings.Contains(string(mustJSON(t, rec)), c.token) {
		t.Fatal("the record must hold the token's hash and never the token")
	}
	if rec.Connection == "" || !strings.HasPrefix(rec.Connection, "roster-test/") {
		t.Fatalf("got connection key %q, want roster-test/<cid>", rec.Connection)
	}

	for _, tc := range []struct{ subject, body, schema string }{
		{wire.SubjectSessionGet, `{}`, "session.get"},
		{wire.SubjectSessionKeepalive, ``, "session.keepalive"},
		{wire.SubjectSessionUpdate, `{"set":{"profile/city":"Paris"},"remove":["k1"]}`, "session.update"},
		{wire.SubjectSessionResume, `{}`, "session.resume"},
	} {
		if tc.body != "" {
			schematest.Validate(t, tc.schema+".request", []byte(tc.body))
		}
		reply := rawCall(t, c, tc.subject, []byte(tc.body))
		schematest.Validate(t, tc.schema+".response", reply.Data)
	}
	var got wire.SessionGetResponse
	if err := c.call(wire.SubjectSessionGet, &wire.SessionGetRequest{}, &got); err != nil {
		t.Fatal(err)
	}
	if p := got.Session.Properties; p["profile/city"] != "Paris" || p["k1"] != "" || p["profile/name"] != "Ada" {
		t.Fatalf("got properties %v after update", p)
	}

	reply = rawCall(t, c, wire.SubjectSessionClose, []byte(`{}`))
	schematest.Validate(t, "session.close.response", reply.Data)
	rec = e.record(t, s.ID)
	if rec.State != wire.StateClosed || rec.CloseReason != wire.ClosedByClient || rec.ClosedAt == nil {
		t.Fatalf("got record %+v, want CLOSED by_client", rec)
	}

	// Events: opened, updated (with the changed keys), closed; each valid. They are
	// published after the reply, so they may take a moment.
	for _, k := range []wire.SessionEventKind{wire.EventOpened, wire.EventUpdated, wire.EventClosed} {
		var evs []*wire.SessionEvent
		natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
			if evs = e.events(t, s.ID, k); len(evs) != 1 {
				return fmt.Errorf("got %d %s events, want 1", len(evs), k)
			}
			return nil
		})
		schematest.Validate(t, "session.event", mustJSON(t, evs[0]))
		if k == wire.EventUpdated && fmt.Sprint(evs[0].Keys) != "[k1 profile/city]" {
			t.Errorf("updated event keys: got %v, want [k1 profile/city]", evs[0].Keys)
		}
		if k == wire.EventClosed && evs[0].Reason != wire.ClosedByClient {
			t.Errorf("closed event reason: got %q, want by_client", evs[0].Reason)
		}
	}
	if logs := e.reg.logs.String(); strings.Contains(logs, c.token) {
		t.Fatal("the token appears in the registry's log")
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestGatewayAndAuthErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	_, resp := open(t, nc, &wire.SessionOpenRequest{GatewayType: "kafka", GatewayID: "gw-1"})
	if f := resp.Session.Fixed; f["$GatewayType"] != "kafka" || f["$GatewayId"] != "gw-1" {
		t.Fatalf("got fixed %v, want the gateway properties", f)
	}
	ctx := context.Background()
	// Gateway sessions open on their own subject, which the auth callout grants
	// (GATEWAY_SESSION); the fields on the plain one, or the subject without them,
	// are bad requests.
	for _, tc := range []struct {
		subject string
		req     *wire.SessionOpenRequest
	}{
		{wire.SubjectSessionOpen, &wire.SessionOpenRequest{GatewayType: "kafka", GatewayID: "gw-1"}},
		{wire.SubjectSessionOpen, &wire.SessionOpenRequest{GatewayID: "gw-1"}},
		{wire.SubjectSessionOpenGateway, &wire.SessionOpenRequest{}},
		{wire.SubjectSessionOpenGateway, &wire.SessionOpenRequest{GatewayType: "kafka"}},
		{wire.SubjectSessionOpenGateway, &wire.SessionOpenRequest{GatewayID: "gw-1"}},
	} {
		err := wire.Call(ctx, nc, tc.subject, nil, tc.req, nil)
		wantCode(t, err, wire.CodeBadRequest)
	}
	for _, tc := range []struct {
		name  string
		creds *wire.Credentials
		want  wire.Code
	}{
		{"wrong password", &wire.Credentials{Type: wire.CredentialsPassword, Username: "u", Password: "x"}, wire.CodeUnauthenticated},
		{"throttled", &wire.Credentials{Type: wire.CredentialsPassword, Username: "u", Password: "slow"}, wire.CodeThrottled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := wire.Call(ctx, nc, wire.SubjectSessionOpen, nil, &wire.SessionOpenRequest{Credentials: tc.creds}, nil)
			wantCode(t, err, tc.want)
		})
	}
}

func TestConcurrentUpdatesLoseNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	c, _ := open(t, nc, nil)
	const n = 32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("k%02d", i)
			errs <- c.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Set: map[string]string{key: key}}, nil)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("update: %v", err)
		}
	}
	rec := e.record(t, c.id)
	for i := range n {
		key := fmt.Sprintf("k%02d", i)
		if rec.User[key] != key {
			t.Errorf("property %s: got %q, want %q (a lost update)", key, rec.User[key], key)
		}
	}
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if got := len(e.events(t, c.id, wire.EventUpdated)); got != n {
			return fmt.Errorf("got %d updated events, want %d", got, n)
		}
		return nil
	})
}

func TestAfterCloseEverythingIsSessionClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	c, _ := open(t, nc, nil)
	other, _ := open(t, nc, nil)
	adm := admin(t, nc)
	if err := c.call(wire.SubjectSessionClose, &wire.SessionCloseRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	view, err := sessions.Watch(context.Background(), e.js)
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()
	// The view follows the bucket's watch: wait until it holds the tombstone, so that
	// its answer below is its own, not a read of the bucket.
	natstest.CheckFor(t, 2*time.Second, 5*time.Millisecond, func() error {
		if r, ok := view.Get(c.id); !ok || !r.Closed() {
			return fmt.Errorf("the view does not hold session %s closed", c.id)
		}
		return nil
	})
	cases := []struct {
		name string
		call func() error
	}{
		{"get", func() error { return c.call(wire.SubjectSessionGet, &wire.SessionGetRequest{}, nil) }},
		{"update", func() error {
			return c.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Set: map[string]string{"k": "v"}}, nil)
		}},
		{"keepalive", func() error { return c.call(wire.SubjectSessionKeepalive, nil, nil) }},
		{"resume", func() error { return c.call(wire.SubjectSessionResume, nil, nil) }},
		{"change principal", func() error { return c.call(wire.SubjectSessionChangePrincipal, nil, nil) }},
		{"close", func() error { return c.call(wire.SubjectSessionClose, nil, nil) }},
		{"wrong token", func() error {
			bad := *c
			bad.token = other.token
			return bad.call(wire.SubjectSessionGet, nil, nil)
		}},
		{"admin get by id", func() error { return adm.call(wire.SubjectSessionGet, &wire.SessionGetRequest{ID: c.id}, nil) }},
		{"admin close by id", func() error { return adm.call(wire.SubjectSessionClose, &wire.SessionCloseRequest{ID: c.id}, nil) }},
		{"admin update by id", func() error {
			return adm.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{ID: c.id, Set: map[string]string{"k": "v"}}, nil)
		}},
		{"view authenticate", func() error {
			_, err := view.Authenticate(c.id, c.token)
			return err
		}},
	}
	before := e.lastSeq(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, tc.call(), wire.CodeSessionClosed)
		})
	}
	if after := e.lastSeq(t); after != before {
		t.Fatalf("the bucket changed (sequence %d to %d) on requests for a closed session", before, after)
	}
	// The other session is unaffected: no fallback.
	if err := other.call(wire.SubjectSessionKeepalive, nil, nil); err != nil {
		t.Fatalf("other session: %v", err)
	}
}
