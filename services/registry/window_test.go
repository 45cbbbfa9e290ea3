package registry

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/schematest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestRepliesCarryTheReconnectWindow: the replies that give a session — open,
// get (which Attach uses), keepalive, resume — say the registry's reconnect window,
// as their schemas require. A client cannot know it otherwise (it is the server's
// configuration), and needs it, with the session's timeout, to tell when the server
// may have released its session's locks without its doing.
func TestRepliesCarryTheReconnectWindow(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{ReconnectWindow: 7 * time.Second})
	nc := e.srv.ClientConn(t)
	reply := rawCall(t, &client{nc: nc}, wire.SubjectSessionOpen, []byte(`{}`))
	var opened wire.SessionOpenResponse
	if err := json.Unmarshal(reply.Data, &opened); err != nil {
		t.Fatal(err)
	}
	c := &client{nc: nc, id: opened.Session.ID, token: opened.Token}
	for _, tc := range []struct {
		schema string
		data   []byte
	}{
		{"session.open", reply.Data},
		{"session.get", rawCall(t, c, wire.SubjectSessionGet, []byte(`{}`)).Data},
		{"session.keepalive", rawCall(t, c, wire.SubjectSessionKeepalive, []byte(`{}`)).Data},
		{"session.resume", rawCall(t, c, wire.SubjectSessionResume, []byte(`{}`)).Data},
	} {
		schematest.Validate(t, tc.schema+".response", tc.data)
		var got struct {
			Window int64 `json:"reconnect_window_ms"`
		}
		if err := json.Unmarshal(tc.data, &got); err != nil {
			t.Fatal(err)
		}
		if got.Window != 7000 {
			t.Errorf("%s reply: reconnect_window_ms %d, want 7000: %s", tc.schema, got.Window, tc.data)
		}
	}
}
