package messaging

import (
	"context"
	"errors"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestSessionReadWithoutStorageIsUnavailable: a session the instance's view has not
// seen (opened a moment ago) is read from the bucket before it is declared unknown.
// When that read fails — JetStream not answering — the session may well exist: the
// answer must be unavailable, which a caller retries, not session_not_found, which
// says the session is gone for good (the SDK closes a session told so about itself).
func TestSessionReadWithoutStorageIsUnavailable(t *testing.T) {
	e := newEnvWith(t, Config{}, true)
	from := e.open(t, "sender", nil)
	e.view.Close() // the watch stops: the view learns nothing more by itself
	var resp wire.SessionOpenResponse
	if err := wire.Call(context.Background(), e.cc, wire.SubjectSessionOpen, nil, wire.SessionOpenRequest{}, &resp); err != nil {
		t.Fatalf("open session: %v", err)
	}
	fresh := session{id: resp.Session.ID, token: resp.Token}
	if err := e.srv.DisableJetStream(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		from session
		to   string
	}{
		{"to a session the view has not seen", from, fresh.id},
		{"from a session the view has not seen", fresh, from.id},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.call(c.from, wire.SubjectMsgSend, wire.MsgSendRequest{Message: wire.Message{SessionID: c.to, Path: "chat/x"}})
			if !errors.Is(err, wire.ErrUnavailable) {
				t.Fatalf("got %v, want unavailable", err)
			}
		})
	}
}
