package registry

import (
	"errors"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// An update by filter that one matching session cannot take (over the properties
// limit) is answered limit_exceeded, and no session is changed: the other matching
// sessions were changed before (or not, depending on map iteration order).
func TestUpdateByFilterOverALimitChangesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{Limits: Limits{Properties: 3}})
	nc := e.srv.ClientConn(t)
	adm := admin(t, nc)
	var ids []string
	for range 4 {
		c, _ := open(t, nc, &wire.SessionOpenRequest{Properties: map[string]string{"team": "x"}})
		ids = append(ids, c.id)
	}
	full, _ := open(t, nc, &wire.SessionOpenRequest{Properties: map[string]string{"team": "x", "p": "1", "q": "1"}})
	before := e.lastSeq(t)
	err := adm.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Filter: `team is "x"`, Set: map[string]string{"new": "v"}}, nil)
	changed := 0
	for _, id := range ids {
		if e.record(t, id).User["new"] == "v" {
			changed++
		}
	}
	t.Logf("reply: %v; %d of %d sessions under the limit changed; full session has new=%q", err, changed, len(ids), e.record(t, full.id).User["new"])
	if !errors.Is(err, wire.ErrLimitExceeded) {
		t.Errorf("update by filter answered %v, want limit_exceeded: the change takes session %s over the limit of 3 properties", err, full.id)
	}
	if changed != 0 || e.lastSeq(t) != before {
		t.Fatalf("update by filter answered %v but changed %d sessions (bucket sequence %d to %d)", err, changed, before, e.lastSeq(t))
	}
}
