package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/schematest"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestTombstoneOfASessionRemovedWhileNoRegistryRanIsAValidSession: the tombstone an
// instance writes for a session whose record the KV TTL removed while no registry
// ran is listed (include_closed) like any other session, so it must be a valid
// session by the schema. It held only $SessionId and $Principal among the fixed
// properties, where the schema requires every fixed key (what is unknown is empty,
// NaN for latitude and longitude), and a list holding it failed session.list.response.
func TestTombstoneOfASessionRemovedWhileNoRegistryRanIsAValidSession(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	startAuth(t, srv)
	first := startRegistry(t, srv, Config{}) // creates the bucket and the streams
	first.stop()
	e := &env{srv: srv, js: srv.JetStream(t)}
	e.kv, _ = e.js.KeyValue(t.Context(), sessions.Bucket)

	// A session opened while a registry ran (its opened event is stored) whose record
	// the KV TTL then removes while none runs.
	now := time.Now()
	rec := &sessions.Record{
		ID: newID(), Principal: "erin", Roles: []string{"user"}, State: wire.StateActive,
		TimeoutMS: 5000, StartTime: now, LastActivity: now, UpdatedAt: now,
	}
	rec.Fixed = fixedProperties(rec.ID, rec.Principal, rec.Roles, nil, now, &wire.SessionOpenRequest{})
	data, err := sessions.Encode(rec)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := e.kv.Create(t.Context(), rec.ID, data, jetstream.KeyTTL(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ev, _ := json.Marshal(wire.SessionEvent{Kind: wire.EventOpened, SessionID: rec.ID, Time: now, Principal: rec.Principal, State: wire.StateActive, Revision: rev})
	if _, err := e.js.Publish(t.Context(), wire.SessionEventSubject(rec.ID, wire.EventOpened), ev); err != nil {
		t.Fatal(err)
	}
	e.waitRemoved(t, rec.ID, 10*time.Second)

	startRegistry(t, srv, Config{})
	e.waitEventCount(t, rec.ID, wire.EventClosed, 1)
	adm := admin(t, srv.ClientConn(t))
	var body []byte
	natstest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		reply, err := wire.CallRaw(ctx, adm.nc, wire.SubjectSessionList, adm.header(), []byte(`{"filter":"$Principal is \"erin\"","include_closed":true}`))
		if err != nil {
			return err
		}
		var page wire.SessionListResponse
		if err := json.Unmarshal(reply.Data, &page); err != nil {
			return err
		}
		if len(page.Sessions) != 1 || page.Sessions[0].State != wire.StateClosed {
			return fmt.Errorf("got %d sessions of erin, want her closed one", len(page.Sessions))
		}
		body = reply.Data
		return nil
	})
	if err := schematest.Check("session.list.response", body); err != nil {
		t.Fatalf("the list holding the tombstone: %v\n%s", err, body)
	}
}
