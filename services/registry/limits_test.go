package registry

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestChangePrincipalHonoursTheLimits: a change of principal is held to the limits
// an open is — the new principal's sessions, and the record size its new principal
// and roles take the record to — refused with limit_exceeded naming the limit, and
// the session, its token included, stays as it was.
func TestChangePrincipalHonoursTheLimits(t *testing.T) {
	t.Parallel()
	const recordLimit = 4096
	e := newEnv(t, Config{Limits: Limits{SessionsPerPrincipal: 2, RecordSize: recordLimit, ValueLength: 8192}})
	nc := e.srv.ClientConn(t)
	alice := &wire.Credentials{Type: wire.CredentialsPassword, Username: "alice", Password: "pw"}
	for range 2 {
		open(t, nc, &wire.SessionOpenRequest{Credentials: alice})
	}
	long := &wire.Credentials{Type: wire.CredentialsPassword, Username: strings.Repeat("n", 200), Password: "pw"}
	c, _ := open(t, nc, nil)
	full, _ := open(t, nc, nil)
	fillToRecordLimit(t, full, recordLimit)
	for _, tc := range []struct {
		name  string
		c     *client
		creds *wire.Credentials
		limit string
	}{
		{"a principal at its limit", c, alice, "sessions per principal"},
		{"a record taken past its size", full, long, "record size limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.lastSeq(t)
			err := tc.c.call(wire.SubjectSessionChangePrincipal, &wire.SessionChangePrincipalRequest{Credentials: tc.creds}, nil)
			wantCode(t, err, wire.CodeLimitExceeded)
			if !strings.Contains(err.Error(), tc.limit) {
				t.Errorf("got %v, want the message to name the %s", err, tc.limit)
			}
			if after := e.lastSeq(t); after != before {
				t.Errorf("the refused change of principal wrote the bucket: sequence %d, then %d", before, after)
			}
			if r := e.record(t, tc.c.id); r.Principal != "anonymous" {
				t.Errorf("got principal %q, want anonymous", r.Principal)
			}
			if err := tc.c.call(wire.SubjectSessionKeepalive, nil, nil); err != nil {
				t.Errorf("the old token after the refused change: %v", err)
			}
		})
	}
}

// TestBadBodiesOnEveryEndpointChangeNothing sends every endpoint bodies that are
// not its request — unknown members, wrong types, a body that is no object, data
// after it, a body past the size limit — by a session that may do anything: each is
// refused with bad_request (too_large for the size) and neither the bucket nor the
// events stream changes.
func TestBadBodiesOnEveryEndpointChangeNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	adm := admin(t, nc)
	wrongType := map[string]string{
		wire.SubjectSessionOpen:            `{"timeout_ms":"60000"}`,
		wire.SubjectSessionOpenGateway:     `{"gateway_type":1,"gateway_id":"g"}`,
		wire.SubjectSessionGet:             `{"id":7}`,
		wire.SubjectSessionList:            `{"limit":"10"}`,
		wire.SubjectSessionUpdate:          `{"set":["a"]}`,
		wire.SubjectSessionKeepalive:       `[]`,
		wire.SubjectSessionResume:          `"now"`,
		wire.SubjectSessionChangePrincipal: `{"credentials":"admin"}`,
		wire.SubjectSessionClose:           `{"filter":true}`,
		wire.SubjectSessionEvents:          `{"kinds":"closed"}`,
	}
	stream, err := e.js.Stream(context.Background(), EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	eventsSeq := func() uint64 {
		info, err := stream.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return info.State.LastSeq
	}
	e.waitEventCount(t, adm.id, wire.EventOpened, 1)
	before, beforeEvents := e.lastSeq(t), eventsSeq()
	for subject, wrong := range wrongType {
		for _, tc := range []struct {
			name, body string
			want       wire.Code
		}{
			{"unknown member", `{"zz":1}`, wire.CodeBadRequest},
			{"wrong type", wrong, wire.CodeBadRequest},
			{"null", `null`, wire.CodeBadRequest},
			{"trailing data", `{}{}`, wire.CodeBadRequest},
			{"malformed", `{"`, wire.CodeBadRequest},
			{"oversized", `{"zz":"` + strings.Repeat("x", 70<<10) + `"}`, wire.CodeTooLarge},
		} {
			t.Run(subject[len(wire.SessionPrefix)+1:]+"/"+tc.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_, err := wire.CallRaw(ctx, nc, subject, adm.header(), []byte(tc.body))
				wantCode(t, err, tc.want)
			})
		}
	}
	if after := e.lastSeq(t); after != before {
		t.Errorf("bad bodies wrote the bucket: sequence %d, then %d", before, after)
	}
	if after := eventsSeq(); after != beforeEvents {
		t.Errorf("bad bodies stored events: sequence %d, then %d", beforeEvents, after)
	}
}

// TestARecordOverALoweredLimitCanBeMadeSmaller: the limits bound what an update puts
// into a record, and a record filled under limits an operator has since lowered
// (restarting with a lower --max-properties or --max-record-size) is over them. An
// update that removes properties, or changes them without adding, puts nothing in:
// it was refused all the same, since the record it left was still over the limit,
// so a session could not shed what it held, and an update by filter removing a
// property everywhere was refused whole for one such session. Now such updates are
// written; one that adds is still refused, naming the limit.
func TestARecordOverALoweredLimitCanBeMadeSmaller(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	startAuth(t, srv)
	first := startRegistry(t, srv, Config{Limits: Limits{Properties: 8, RecordSize: 16 << 10, ValueLength: 2048}})
	e := &env{srv: srv, js: srv.JetStream(t)}
	e.kv, _ = e.js.KeyValue(t.Context(), "ROSTER_SESSIONS")
	nc := srv.ClientConn(t)
	adm := admin(t, nc)
	// many: seven properties, where the limit will be four.
	many, _ := open(t, nc, &wire.SessionOpenRequest{Properties: map[string]string{
		"tag": "t", "a1": "1", "a2": "1", "a3": "1", "a4": "1", "a5": "1", "a6": "1"}})
	// big: about 6 KB of properties, where the record size limit will be 4 KiB.
	big2k := strings.Repeat("x", 2000)
	big, _ := open(t, nc, &wire.SessionOpenRequest{Properties: map[string]string{
		"tag": "t", "b1": big2k, "b2": big2k, "b3": big2k}})
	first.stop()
	startRegistry(t, srv, Config{Limits: Limits{Properties: 4, RecordSize: 4096, ValueLength: 2048}})

	var upd wire.SessionUpdateResponse
	if err := adm.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Filter: `has tag`, Remove: []string{"tag"}}, &upd); err != nil || upd.Updated != 2 {
		t.Errorf("removing tag by filter from the two sessions over the limits: %v, updated %d, want 2", err, upd.Updated)
	}
	for _, tc := range []struct {
		name  string
		c     *client
		req   wire.SessionUpdateRequest
		limit string
	}{
		{"add a property past the properties limit", many, wire.SessionUpdateRequest{Set: map[string]string{"a9": "1"}}, "limit of properties"},
		{"add a property past the size limit", big, wire.SessionUpdateRequest{Set: map[string]string{"b4": "1"}}, "record size limit"},
		// As many bytes, each stored as six ("\u0000"): larger as stored.
		{"a value as long that is larger as stored", big, wire.SessionUpdateRequest{Set: map[string]string{"b3": strings.Repeat("\x00", 2000)}}, "record size limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.lastSeq(t)
			err := tc.c.call(wire.SubjectSessionUpdate, &tc.req, nil)
			wantCode(t, err, wire.CodeLimitExceeded)
			if !strings.Contains(err.Error(), tc.limit) {
				t.Errorf("got %v, want the message to name the %s", err, tc.limit)
			}
			if after := e.lastSeq(t); after != before {
				t.Errorf("the refused update wrote the bucket: sequence %d, then %d", before, after)
			}
		})
	}
	for _, tc := range []struct {
		name string
		c    *client
		req  wire.SessionUpdateRequest
	}{
		{"remove a property of a session over the properties limit", many, wire.SessionUpdateRequest{Remove: []string{"a1"}}},
		{"change a property of a session over the properties limit", many, wire.SessionUpdateRequest{Set: map[string]string{"a2": "2"}}},
		{"remove a property of a record over the size limit", big, wire.SessionUpdateRequest{Remove: []string{"b1"}}},
		{"shorten a property of a record over the size limit", big, wire.SessionUpdateRequest{Set: map[string]string{"b2": "short"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var upd wire.SessionUpdateResponse
			if err := tc.c.call(wire.SubjectSessionUpdate, &tc.req, &upd); err != nil || upd.Updated != 1 {
				t.Errorf("got %v, updated %d; want the change written", err, upd.Updated)
			}
		})
	}
	if got := e.record(t, many.id).User; len(got) != 5 || got["a2"] != "2" {
		t.Errorf("session over the properties limit holds %v, want a2..a6 with a2=2", got)
	}
	if got := e.record(t, big.id).User; len(got) != 2 || got["b2"] != "short" || got["b3"] != big2k {
		t.Errorf("session over the size limit holds %d properties (b2=%.8q), want b2=short and b3", len(got), got["b2"])
	}
}
