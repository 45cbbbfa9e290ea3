package registry

import (
	"context"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/schematest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestSchemasRefuseWhatTheRegistryRefuses: a request the registry refuses as
// bad_request for a combination of members must be invalid by its schema too. The
// schemas described the exclusions in words (or not at all) and accepted every one
// of these bodies, so a client validating against them learnt of the mistake only
// from the service.
func TestSchemasRefuseWhatTheRegistryRefuses(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	c, _ := open(t, nc, nil)
	id := c.id
	cases := []struct {
		name, schema, subject, body string
	}{
		{"open permanent with a timeout", "session.open.request", wire.SubjectSessionOpen, `{"permanent":true,"timeout_ms":5000}`},
		{"open with gateway fields", "session.open.request", wire.SubjectSessionOpen, `{"gateway_type":"kafka","gateway_id":"gw-1"}`},
		{"open gateway type alone", "session.open.request", wire.SubjectSessionOpen, `{"gateway_type":"kafka"}`},
		{"open gateway id alone", "session.open.request", wire.SubjectSessionOpen, `{"gateway_id":"gw-1"}`},
		{"open gateway id empty", "session.open.request", wire.SubjectSessionOpen, `{"gateway_type":"kafka","gateway_id":""}`},
		{"gateway open without the fields", "session.open_gateway.request", wire.SubjectSessionOpenGateway, `{}`},
		{"gateway open type alone", "session.open_gateway.request", wire.SubjectSessionOpenGateway, `{"gateway_type":"kafka"}`},
		{"gateway open id empty", "session.open_gateway.request", wire.SubjectSessionOpenGateway, `{"gateway_type":"kafka","gateway_id":""}`},
		{"gateway open permanent with a timeout", "session.open_gateway.request", wire.SubjectSessionOpenGateway, `{"gateway_type":"kafka","gateway_id":"gw-1","permanent":true,"timeout_ms":5000}`},
		{"update by id and filter", "session.update.request", wire.SubjectSessionUpdate, `{"id":"` + id + `","filter":"has a","set":{"a":"1"}}`},
		{"update nothing", "session.update.request", wire.SubjectSessionUpdate, `{}`},
		{"update empty set and remove", "session.update.request", wire.SubjectSessionUpdate, `{"set":{},"remove":[]}`},
		{"close by id and filter", "session.close.request", wire.SubjectSessionClose, `{"id":"` + id + `","filter":"has a"}`},
		{"events from a sequence and a time", "session.events.request", wire.SubjectSessionEvents, `{"start_seq":1,"start_time":"2025-01-01T00:00:00Z"}`},
	}
	before := e.lastSeq(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := schematest.Check(tc.schema, []byte(tc.body)); err == nil {
				t.Errorf("the schema %s accepts %s; want it refused as the registry refuses it", tc.schema, tc.body)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := wire.CallRaw(ctx, nc, tc.subject, c.header(), []byte(tc.body))
			wantCode(t, err, wire.CodeBadRequest)
		})
	}
	if after := e.lastSeq(t); after != before {
		t.Fatalf("refused requests wrote the bucket: sequence %d, then %d", before, after)
	}
	// What the registry accepts, the schemas still accept.
	for _, tc := range []struct{ schema, body string }{
		{"session.open.request", `{"permanent":true,"timeout_ms":0}`},
		{"session.open.request", `{"timeout_ms":5000,"permanent":false}`},
		{"session.open.request", `{"gateway_type":"","gateway_id":""}`},
		{"session.open_gateway.request", `{"gateway_type":"kafka","gateway_id":"gw-1"}`},
		{"session.open_gateway.request", `{"gateway_type":"kafka","gateway_id":"gw-1","permanent":true,"timeout_ms":0}`},
		{"session.update.request", `{"id":"` + id + `","set":{"a":"1"}}`},
		{"session.update.request", `{"filter":"has a","remove":["a"]}`},
		{"session.update.request", `{"id":"` + id + `","filter":"","set":{},"remove":["a"]}`},
		{"session.close.request", `{}`},
		{"session.close.request", `{"id":"` + id + `","filter":""}`},
		{"session.events.request", `{"start_seq":0,"start_time":"2025-01-01T00:00:00Z"}`},
		{"session.events.request", `{"start_seq":3}`},
	} {
		schematest.Validate(t, tc.schema, []byte(tc.body))
	}
}
