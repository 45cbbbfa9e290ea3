package registry

import (
	"testing"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestChangingOthersPropertiesNeedsViewSessionToo: seed 002 lets clients with
// VIEW_SESSION and MODIFY_SESSION change another session's properties. With
// MODIFY_SESSION alone, an update by id answered with the whole session — principal,
// roles, properties, $ClientIP — which get refuses without VIEW_SESSION, and an update
// by filter selected by properties the caller may not read. Both are forbidden now
// and change nothing; closing others stays MODIFY_SESSION's alone.
func TestChangingOthersPropertiesNeedsViewSessionToo(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	nc := e.srv.ClientConn(t)
	victim, _ := open(t, nc, &wire.SessionOpenRequest{Properties: map[string]string{"team": "blue", "secret": "s3"}})
	mod, _ := open(t, nc, &wire.SessionOpenRequest{Credentials: &wire.Credentials{Type: wire.CredentialsPassword, Username: "moderator", Password: "pw"}})

	wantCode(t, mod.call(wire.SubjectSessionGet, &wire.SessionGetRequest{ID: victim.id}, nil), wire.CodeForbidden)
	var upd wire.SessionUpdateResponse
	err := mod.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{ID: victim.id, Set: map[string]string{"flag": "1"}}, &upd)
	if upd.Session != nil {
		t.Errorf("update by id without VIEW_SESSION answered with the session: %+v", upd.Session)
	}
	wantCode(t, err, wire.CodeForbidden)
	wantCode(t, mod.call(wire.SubjectSessionUpdate, &wire.SessionUpdateRequest{Filter: `secret is "s3"`, Set: map[string]string{"flag": "2"}}, nil), wire.CodeForbidden)
	if got := e.record(t, victim.id).User; got["flag"] != "" {
		t.Fatalf("victim's properties %v: changed by a caller without VIEW_SESSION", got)
	}
	// The moderator changes its own properties as before, and closes others.
	var cl wire.SessionCloseResponse
	if err := mod.call(wire.SubjectSessionClose, &wire.SessionCloseRequest{ID: victim.id}, &cl); err != nil || cl.Closed != 1 {
		t.Fatalf("close by id with MODIFY_SESSION: %v, closed %d", err, cl.Closed)
	}
}
