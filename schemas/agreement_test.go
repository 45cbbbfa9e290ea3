package schemas_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/roster"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/schematest"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
	"github.com/seed-3c836eab/roster/services/auth"
	"github.com/seed-3c836eab/roster/services/lock"
	"github.com/seed-3c836eab/roster/services/registry"
)

// Placeholders in a request template, replaced by the id of a session opened for
// the case: the caller's own, and another one.
const (
	selfID  = "{{self}}"
	otherID = "{{other}}"
)

// requestSpec is a request body the service accepts, from which the mutated bodies
// are derived.
type requestSpec struct {
	schema, subject string
	// scoped: the request carries the caller's session in its headers.
	scoped bool
	// internal: the request is sent from the SERVICES account.
	internal bool
	body     string
}

func requestSpecs(t *testing.T) []requestSpec {
	t.Helper()
	pol, err := json.Marshal(policy.Development())
	if err != nil {
		t.Fatal(err)
	}
	var specs []requestSpec
	for _, prefix := range []string{auth.Prefix, wire.SessionPrefix, wire.LockPrefix, wire.MessagingPrefix} {
		specs = append(specs, requestSpec{schema: "health.request", subject: prefix + ".health", body: `{}`})
	}
	message := `"path":"chat/room1","content_type":"text/plain","payload":"aGk=","headers":{"X-Trace":"1"},"message_id":"m-1"`
	return append(specs, []requestSpec{
		{schema: "auth.authenticate.request", subject: wire.SubjectAuthenticate, internal: true,
			body: `{"credentials":{"type":"anonymous"},"properties":{"a":"1"},"client":{"acc":"CLIENTS","host":"127.0.0.1","id":7,"user":"-"}}`},
		{schema: "auth.policy.get.request", subject: auth.Prefix + ".policy.get", scoped: true, body: `{}`},
		// A stale revision: whatever the service accepts is answered conflict and
		// leaves the stored policy alone.
		{schema: "auth.policy.set.request", subject: auth.Prefix + ".policy.set", scoped: true,
			body: `{"policy":` + string(pol) + `,"revision":1}`},
		// Sessions opened by a case must not expire while the test runs: an
		// expiry writes the store while a later case runs.
		{schema: "session.open.request", subject: wire.SubjectSessionOpen,
			body: `{"credentials":{"type":"anonymous"},"properties":{"a":"1"},"timeout_ms":3600000,"permanent":false,"gateway_type":"","gateway_id":""}`},
		{schema: "session.open_gateway.request", subject: wire.SubjectSessionOpenGateway,
			body: `{"credentials":{"type":"anonymous"},"properties":{"a":"1"},"timeout_ms":3600000,"permanent":false,"gateway_type":"kafka","gateway_id":"gw-1"}`},
		{schema: "session.open.request", subject: wire.SubjectSessionOpen, body: `{"timeout_ms":0,"permanent":true}`},
		{schema: "session.get.request", subject: wire.SubjectSessionGet, scoped: true, body: `{"id":"` + otherID + `"}`},
		{schema: "session.list.request", subject: wire.SubjectSessionList, scoped: true,
			body: `{"filter":"has a","after":"` + otherID + `","limit":10,"include_closed":true}`},
		{schema: "session.update.request", subject: wire.SubjectSessionUpdate, scoped: true,
			body: `{"id":"` + otherID + `","set":{"a":"1"},"remove":["b"]}`},
		{schema: "session.update.request", subject: wire.SubjectSessionUpdate, scoped: true,
			body: `{"filter":"has nothing","set":{"a":"1"},"remove":["b"]}`},
		{schema: "session.keepalive.request", subject: wire.SubjectSessionKeepalive, scoped: true, body: `{}`},
		{schema: "session.resume.request", subject: wire.SubjectSessionResume, scoped: true, body: `{}`},
		{schema: "session.change_principal.request", subject: wire.SubjectSessionChangePrincipal, scoped: true,
			body: `{"credentials":{"type":"anonymous"}}`},
		{schema: "session.close.request", subject: wire.SubjectSessionClose, scoped: true, body: `{"id":"` + otherID + `"}`},
		{schema: "session.close.request", subject: wire.SubjectSessionClose, scoped: true, body: `{"filter":"has nothing"}`},
		{schema: "session.events.request", subject: wire.SubjectSessionEvents, scoped: true,
			body: `{"session_id":"` + otherID + `","kinds":["opened"],"start_seq":1,"limit":10,"wait_ms":0}`},
		{schema: "session.events.request", subject: wire.SubjectSessionEvents, scoped: true,
			body: `{"start_time":"2025-01-01T00:00:00Z","limit":10}`},
		{schema: "lock.acquire.request", subject: wire.SubjectLockAcquire, scoped: true,
			body: `{"name":"orders/1","mode":"shared","scope":"session","wait_ms":0,"request_id":"r-1"}`},
		{schema: "lock.release.request", subject: wire.SubjectLockRelease, scoped: true, body: `{"name":"orders/1","token":1}`},
		{schema: "lock.cancel.request", subject: wire.SubjectLockCancel, scoped: true, body: `{"name":"orders/1","request_id":"r-1"}`},
		{schema: "lock.list.request", subject: wire.SubjectLockList, scoped: true, body: `{"prefix":"orders","after":"a","limit":10}`},
		{schema: "msg.send.request", subject: wire.SubjectMsgSend, scoped: true, body: `{"session_id":"` + otherID + `",` + message + `}`},
		{schema: "msg.send.request", subject: wire.SubjectMsgSend, scoped: true, body: `{"filter":"has nothing",` + message + `}`},
		{schema: "msg.request.request", subject: wire.SubjectMsgRequest, scoped: true,
			body: `{"session_id":"` + otherID + `",` + message + `,"timeout_ms":1000,"stream_id":"s-1"}`},
		{schema: "msg.request.request", subject: wire.SubjectMsgRequest, scoped: true,
			body: `{"filter":"has nothing",` + message + `,"timeout_ms":1000}`},
	}...)
}

// mutation is a body derived from a valid one.
type mutation struct {
	name string
	body []byte
	// spelling: an integer written with a fraction or an exponent (1000.0, 1000e0),
	// which JSON Schema reads as the integer and the services refuse (see
	// docs/architecture.md, "Schemas and drift").
	spelling bool
}

// mutations derives, from the JSON object body, bodies that each change one thing:
// a member set to null, removed, emptied, given another JSON type, a number written
// as a float or with an exponent, an unknown or unnamed member, recursively into
// objects and the first item of lists.
func mutations(t *testing.T, body string) []mutation {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(body))
	dec.UseNumber()
	var root any
	if err := dec.Decode(&root); err != nil {
		t.Fatalf("template %s: %v", body, err)
	}
	var out []mutation
	add := func(name string, v any) {
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out = append(out, mutation{name, data, strings.HasSuffix(name, spelled)})
	}
	derive("body", root, func(v any) any { return v }, add)
	return out
}

// spelled ends the name of a mutation that spells an integer otherwise.
const spelled = " (spelling)"

func derive(at string, v any, put func(any) any, add func(string, any)) {
	add(at+" null", put(nil))
	switch v := v.(type) {
	case string:
		add(at+` ""`, put(""))
		add(at+" blank", put(" "))
		add(at+" number", put(json.Number("1")))
	case json.Number:
		add(at+" string", put(v.String()))
		add(at+" negative", put(json.Number("-1")))
		add(at+" too big", put(json.Number("18446744073709551616")))
		add(at+" fraction", put(json.Number(v.String()+".5")))
		if _, err := v.Int64(); err == nil {
			add(at+" as a float"+spelled, put(json.Number(v.String()+".0")))
			add(at+" with an exponent"+spelled, put(json.Number(v.String()+"e0")))
		}
	case bool:
		add(at+" string", put(fmt.Sprint(v)))
	case []any:
		add(at+" object", put(map[string]any{}))
		add(at+" empty", put([]any{}))
		if len(v) > 0 {
			derive(at+"[0]", v[0], func(x any) any {
				c := slices.Clone(v)
				c[0] = x
				return put(c)
			}, add)
		}
	case map[string]any:
		add(at+" list", put([]any{}))
		add(at+" unknown member", put(with(v, "unknown", "x")))
		add(at+" unnamed member", put(with(v, "", "x")))
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			add(at+"."+k+" absent", put(without(v, k)))
			derive(at+"."+k, v[k], func(x any) any { return put(with(v, k, x)) }, add)
		}
	}
}

func with(m map[string]any, k string, v any) map[string]any {
	c := make(map[string]any, len(m)+1)
	for mk, mv := range m {
		c[mk] = mv
	}
	c[k] = v
	return c
}

func without(m map[string]any, k string) map[string]any {
	c := with(m, k, nil)
	delete(c, k)
	return c
}

// validationCodes are the codes of a request the service refuses for its form, as
// the schemas do.
var validationCodes = []wire.Code{wire.CodeBadRequest, wire.CodeInvalidName}

// TestServicesAgreeWithRequestSchemas derives, from a valid body of every request
// schema, bodies that each change one member (null, absent, empty, blank, another
// type, out of range, an unknown member, …), validates each against the schema and
// sends it to the running services: the schema refuses it exactly when the service
// answers with a validation code (bad_request, invalid_name), and a refused request
// writes nothing. The one documented difference: an integer spelled with a fraction
// or an exponent is bad_request, naming the member.
func TestServicesAgreeWithRequestSchemas(t *testing.T) {
	p := rostertest.Start(t)
	nc, svc, js := connectBoth(t, p)

	// Store the development policy again, so that revision 1 is stale.
	admin := openSession(t, nc, js)
	req := map[string]any{"policy": policy.Development()}
	if err := wire.Call(context.Background(), nc, auth.Prefix+".policy.set", admin.header(), req, nil); err != nil {
		t.Fatal(err)
	}

	for _, spec := range requestSpecs(t) {
		// A template its schema refuses tests little: most of its mutations are
		// refused for the template's own fault (session.list's "after":"0" was).
		template := strings.ReplaceAll(spec.body, otherID, strings.Repeat("A", 22)) // a well-formed id
		if err := schematest.Check(spec.schema, []byte(template)); err != nil {
			t.Errorf("the template %s is refused by its own schema: %v", spec.body, err)
		}
		for _, m := range mutations(t, spec.body) {
			t.Run(spec.schema+"/"+m.name, func(t *testing.T) {
				conn, hdr := nc, nats.Header{}
				if spec.internal {
					conn = svc
				}
				body := m.body
				var ids []string
				if spec.scoped {
					self := openSession(t, nc, js)
					hdr = self.header()
					ids = append(ids, self.id)
				}
				if bytes.Contains(body, []byte(otherID)) {
					other := openSession(t, nc, js).id
					body = bytes.ReplaceAll(body, []byte(otherID), []byte(other))
					ids = append(ids, other)
				}
				schemaErr := schematest.Check(spec.schema, body)
				before := storeSeqs(t, js, ids)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_, err := wire.CallRaw(ctx, conn, spec.subject, hdr, body)
				code, msg := errorCode(err)
				refused := slices.Contains(validationCodes, code)
				switch {
				case m.spelling:
					if code != wire.CodeBadRequest || !strings.Contains(msg, "must be") {
						t.Errorf("%s: got %s %s, want bad_request naming the member", body, orOK(code), msg)
					}
				case schemaErr != nil && !refused:
					t.Errorf("the schema refuses %s, the service answers %s %s\nschema: %v", body, orOK(code), msg, schemaErr)
				case schemaErr == nil && refused:
					t.Errorf("the schema accepts %s, the service answers %s: %s", body, code, msg)
				case refused:
					if after := storeSeqs(t, js, ids); !slices.Equal(after, before) {
						t.Errorf("%s, refused (%s), wrote the store: %v, then %v", body, code, before, after)
					}
				}
			})
		}
	}
}

type session struct{ id, token string }

func (s session) header() nats.Header {
	return nats.Header{wire.HeaderSession: {s.id}, wire.HeaderToken: {s.token}}
}

// openSession opens a permanent session on nc, so that no expiry writes the store
// while a case runs, and waits for its opened event, which the registry stores
// after it replies.
func openSession(t *testing.T, nc *nats.Conn, js jetstream.JetStream) session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var resp wire.SessionOpenResponse
	if err := wire.Call(ctx, nc, wire.SubjectSessionOpen, nil, wire.SessionOpenRequest{Permanent: true}, &resp); err != nil {
		t.Fatalf("open: %v", err)
	}
	id := resp.Session.ID
	events, err := js.Stream(ctx, registry.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		_, err := events.GetLastMsgForSubject(ctx, wire.SessionEventSubject(id, wire.EventOpened))
		return err
	})
	return session{id, resp.Token}
}

// storeSeqs returns the last sequence of every bucket Roster keeps state in, and
// the number of events stored for each of the sessions ids.
func storeSeqs(t *testing.T, js jetstream.JetStream, ids []string) []uint64 {
	t.Helper()
	ctx := context.Background()
	var seqs []uint64
	for _, name := range []string{"KV_" + sessions.Bucket, "KV_" + lock.Bucket, "KV_" + policy.Bucket} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		seqs = append(seqs, s.CachedInfo().State.LastSeq)
	}
	events, err := js.Stream(ctx, registry.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		info, err := events.Info(ctx, jetstream.WithSubjectFilter(wire.SessionEventsPrefix+"."+id+".>"))
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, info.State.Msgs)
	}
	return seqs
}

func errorCode(err error) (wire.Code, string) {
	if err == nil {
		return "", ""
	}
	var we *wire.Error
	if errors.As(err, &we) {
		return we.Code, we.Message
	}
	return "", err.Error()
}

func orOK(c wire.Code) string {
	if c == "" {
		return "ok"
	}
	return string(c)
}

// TestRepliesAgreeWithResponseSchemas sends the valid body of every request schema
// to the running services and validates each reply against the response schema
// the endpoint names in its metadata, where it names one: what a client decodes is
// what the schemas document (the session replies' reconnect_window_ms among it,
// which the Go SDK's lock guarantee rests on, with the value the registry is
// configured with). Every request is answered with a success: one the service
// refuses has no reply to check, so a case whose body names state of the caller's
// (the lock a release names) has that state made first.
func TestRepliesAgreeWithResponseSchemas(t *testing.T) {
	const window = 7 * time.Second
	p := rostertest.Start(t, rostertest.WithConfig(func(c *roster.Config) { c.Registry.ReconnectWindow = window }))
	nc, svc, js := connectBoth(t, p)
	schemas := responseSchemas(t, svc)
	checked := map[string]bool{}
	for _, spec := range requestSpecs(t) {
		response, ok := schemas[spec.subject]
		if !ok {
			t.Errorf("no endpoint serves %s (%s)", spec.subject, spec.schema)
			continue
		}
		if response == "" {
			continue // answered with an empty body
		}
		checked[response] = true
		t.Run(spec.schema+"/"+spec.subject, func(t *testing.T) {
			conn, hdr := nc, nats.Header{}
			if spec.internal {
				conn = svc
			}
			body := []byte(spec.body)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if spec.scoped {
				hdr = openSession(t, nc, js).header()
			}
			if bytes.Contains(body, []byte(otherID)) {
				body = bytes.ReplaceAll(body, []byte(otherID), []byte(openSession(t, nc, js).id))
			}
			switch spec.schema {
			case "lock.release.request", "lock.cancel.request":
				// The session holds the lock the body names, taken by the request it
				// names, with the token it names.
				var acq wire.LockAcquireResponse
				if err := wire.Call(ctx, nc, wire.SubjectLockAcquire, hdr,
					wire.LockAcquireRequest{Name: "orders/1", Mode: wire.LockShared, RequestID: "r-1"}, &acq); err != nil {
					t.Fatalf("acquire orders/1 first: %v", err)
				}
				body = bytes.ReplaceAll(body, []byte(`"token":1`), fmt.Appendf(nil, `"token":%d`, acq.Lock.Token))
			}
			reply, err := wire.CallRaw(ctx, conn, spec.subject, hdr, body)
			if err != nil {
				t.Fatalf("%s: answered %v, want a reply to check against %s", body, err, response)
			}
			schematest.Validate(t, response, reply.Data)
			if strings.HasPrefix(spec.schema, "session.") {
				var got struct {
					Window *int64 `json:"reconnect_window_ms"`
				}
				if err := json.Unmarshal(reply.Data, &got); err != nil {
					t.Fatal(err)
				}
				if got.Window != nil && *got.Window != window.Milliseconds() {
					t.Errorf("reconnect_window_ms %d, want %d (the registry's)", *got.Window, window.Milliseconds())
				}
			}
		})
	}
	// Every response schema an endpoint names is checked against a reply (the
	// stream's items are msg.stream's, checked where the stream is).
	for subject, response := range schemas {
		if response != "" && !checked[response] {
			t.Errorf("no request checks a reply of %s against %s", subject, response)
		}
	}
}

// responseSchemas asks every service for its endpoints, and returns the response
// schema each names ("" for none), by subject.
func responseSchemas(t *testing.T, svc *nats.Conn) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, name := range []string{"roster-auth", "roster-registry", "roster-lock", "roster-messaging"} {
		msg, err := svc.Request("$SRV.INFO."+name, nil, 5*time.Second)
		if err != nil {
			t.Fatalf("$SRV.INFO.%s: %v", name, err)
		}
		var info micro.Info
		if err := json.Unmarshal(msg.Data, &info); err != nil {
			t.Fatal(err)
		}
		for _, ep := range info.Endpoints {
			out[ep.Subject] = ep.Metadata["response_schema"]
		}
	}
	return out
}

// connectBoth connects to p as a client (nc) and as a service (svc, with js on it),
// until the test ends.
func connectBoth(t *testing.T, p *roster.Process) (nc, svc *nats.Conn, js jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(p.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if svc, err = p.Server().ConnectService(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	if js, err = jetstream.New(svc); err != nil {
		t.Fatal(err)
	}
	return nc, svc, js
}
