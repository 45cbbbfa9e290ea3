package client_test

import (
	"errors"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestRequestStreamAfterCloseIsSessionClosed: once a session opened with Open is
// closed, its connection closes too; RequestStream then failed with ErrUnavailable
// ("connection to NATS closed") or a bare subscribe error, not with
// ErrSessionClosed as every other call does.
func TestRequestStreamAfterCloseIsSessionClosed(t *testing.T) {
	p := rostertest.Start(t)
	ctx := ctxT(t)
	s, err := client.Open(ctx, p.ClientURL(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() error {
		if !s.Client().Conn().IsClosed() {
			return errors.New("the session's own connection is not closed yet")
		}
		return nil
	})
	_, err = s.RequestStream(ctx, client.ToSession("x"), "ping", nil, time.Second, func(wire.MsgResult) {})
	if !errors.Is(err, client.ErrSessionClosed) {
		t.Errorf("RequestStream after close: got %v, want ErrSessionClosed", err)
	}
}

// TestInfoIsTheCallersCopy: Info and Refresh return a copy of the session, but it
// shared its properties, fixed properties and roles with the session's own state,
// so a caller changing its copy changed what Properties, Roles and Info return to
// every other goroutine (and raced with them).
func TestInfoIsTheCallersCopy(t *testing.T) {
	p := rostertest.Start(t)
	s := open(t, p.ClientURL(), client.Options{Properties: map[string]string{"Desk": "FX"}})
	ctx := ctxT(t)
	mess := func(info wire.Session) {
		info.Properties["Desk"] = "changed"
		info.Fixed["$SessionId"] = "changed"
		info.Roles[0] = "changed"
	}
	check := func(after string) {
		t.Helper()
		if got := s.Properties()["Desk"]; got != "FX" {
			t.Errorf("Desk after changing the copy %s returned: got %q, want FX", after, got)
		}
		if got := s.Properties()["$SessionId"]; got != s.ID() {
			t.Errorf("%s after changing the copy %s returned: got %q, want %s", "$SessionId", after, got, s.ID())
		}
		if got := s.Roles(); len(got) == 0 || got[0] == "changed" {
			t.Errorf("roles after changing the copy %s returned: got %v", after, got)
		}
	}
	mess(s.Info())
	check("Info")
	info, err := s.Refresh(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mess(info)
	check("Refresh")
}
