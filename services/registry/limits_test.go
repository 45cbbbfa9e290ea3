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
