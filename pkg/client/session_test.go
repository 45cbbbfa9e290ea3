package client_test

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

func TestOpenWithCredentials(t *testing.T) {
	t.Parallel()
	p := startSecured(t)
	tests := []struct {
		name          string
		creds         *wire.Credentials
		wantPrincipal string
		wantRoles     []string
	}{
		{"password", client.Password("alice", "wonderland"), "alice", []string{"trader"}},
		{"jwt", nil, "bob", []string{"admin"}},
		{"anonymous", nil, "", []string{"guest"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			creds := tc.creds
			if tc.name == "jwt" {
				creds = client.JWT(signJWT(t, "bob", "admin"))
			}
			s := open(t, p.ClientURL(), client.Options{Credentials: creds, Properties: map[string]string{"Department": "Accounts"}})
			if got := s.Principal(); got != tc.wantPrincipal {
				t.Errorf("principal: got %q, want %q", got, tc.wantPrincipal)
			}
			if got := s.Roles(); !slices.Equal(got, tc.wantRoles) {
				t.Errorf("roles: got %v, want %v", got, tc.wantRoles)
			}
			props := s.Properties()
			if props["Department"] != "Accounts" || props["$SessionId"] != s.ID() || props["$Principal"] != tc.wantPrincipal {
				t.Errorf("properties: got %v, want Department=Accounts, $SessionId=%s, $Principal=%q", props, s.ID(), tc.wantPrincipal)
			}
			if got := s.State(); got != client.StateActive {
				t.Errorf("state: got %s, want ACTIVE", got)
			}
		})
	}
	t.Run("wrong password", func(t *testing.T) {
		_, err := client.Open(ctxT(t), p.ClientURL(), client.Options{Credentials: client.Password("alice", "nope")})
		if !errors.Is(err, client.ErrUnauthenticated) {
			t.Fatalf("got %v, want ErrUnauthenticated", err)
		}
	})
}

func TestPropertiesAndClose(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	s := open(t, p.ClientURL(), client.Options{Properties: map[string]string{"Department": "Accounts", "Desk": "FX"}})
	var mu sync.Mutex
	var changes []client.StateChange
	s.OnStateChange(func(ch client.StateChange) {
		mu.Lock()
		changes = append(changes, ch)
		mu.Unlock()
	})
	ctx := ctxT(t)

	if err := s.SetProperties(ctx, map[string]string{"Desk": "Rates", "Floor": "3"}, "Department"); err != nil {
		t.Fatalf("set properties: %v", err)
	}
	want := map[string]string{"Desk": "Rates", "Floor": "3"}
	if got := s.Info().Properties; !maps.Equal(got, want) {
		t.Errorf("properties after set: got %v, want %v", got, want)
	}
	fresh, err := s.Refresh(ctx)
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if !maps.Equal(fresh.Properties, want) {
		t.Errorf("properties from the registry: got %v, want %v", fresh.Properties, want)
	}
	if err := s.SetProperties(ctx, map[string]string{"$Principal": "x"}); !errors.Is(err, client.ErrInvalidName) {
		t.Errorf("setting a $ property: got %v, want ErrInvalidName", err)
	}

	if err := s.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := s.Close(ctx); err != nil {
		t.Errorf("second close: got %v, want nil", err)
	}
	if got := s.State(); got != client.StateClosed {
		t.Errorf("state after close: got %s, want CLOSED", got)
	}
	mu.Lock()
	got := slices.Clone(changes)
	mu.Unlock()
	if len(got) != 1 || got[0].New != client.StateClosed || got[0].Reason != wire.ClosedByClient {
		t.Errorf("state changes: got %+v, want one change to CLOSED by_client", got)
	}
	// Seed 004: after logout every call gets an error.
	calls := map[string]func() error{
		"refresh":        func() error { _, err := s.Refresh(ctx); return err },
		"set properties": func() error { return s.SetProperties(ctx, map[string]string{"A": "b"}) },
		"keepalive":      func() error { return s.Keepalive(ctx) },
		"change principal": func() error {
			return s.ChangePrincipal(ctx, nil)
		},
		"lock":     func() error { _, err := s.Lock(ctx, "a", client.LockOptions{}); return err },
		"try lock": func() error { _, err := s.TryLock(ctx, "a", client.LockOptions{}); return err },
		"send":     func() error { _, err := s.Send(ctx, client.ToFilter("all"), "x", nil); return err },
		"request":  func() error { _, err := s.Request(ctx, client.ToSession("x"), "x", nil, 0); return err },
		"handle":   func() error { _, err := s.Handle("x", nil); return err },
		"get":      func() error { _, err := s.GetSession(ctx, "x"); return err },
		"list":     func() error { _, err := s.ListSessions(ctx, wire.SessionListRequest{}); return err },
		"update":   func() error { _, err := s.UpdateSessions(ctx, wire.SessionUpdateRequest{ID: "x"}); return err },
		"close others": func() error {
			_, err := s.CloseSessions(ctx, wire.SessionCloseRequest{ID: "x"})
			return err
		},
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, client.ErrSessionClosed) {
			t.Errorf("%s after close: got %v, want ErrSessionClosed", name, err)
		}
	}
}

// TestSharedSession uses one session from many goroutines at once (seed 003).
func TestSharedSession(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	s := open(t, p.ClientURL(), client.Options{})
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("K%d", i)
			if err := s.SetProperties(ctx, map[string]string{key: "v"}); err != nil {
				errs <- err
				return
			}
			if _, err := s.Refresh(ctx); err != nil {
				errs <- err
				return
			}
			// Locks belong to the session, not to a goroutine: one name each.
			l, err := s.Lock(ctx, fmt.Sprintf("shared/%d", i), client.LockOptions{})
			if err != nil {
				errs <- err
				return
			}
			errs <- l.Unlock(ctx)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	info, err := s.Refresh(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Properties) != 16 {
		t.Errorf("properties after 16 concurrent sets: got %d, want 16", len(info.Properties))
	}
}

func TestChangePrincipal(t *testing.T) {
	t.Parallel()
	p := startSecured(t)
	s := open(t, p.ClientURL(), client.Options{})
	ctx := ctxT(t)
	oldToken := s.Token()
	if err := s.ChangePrincipal(ctx, client.Password("alice", "wonderland")); err != nil {
		t.Fatalf("change principal: %v", err)
	}
	if s.Principal() != "alice" || !slices.Equal(s.Roles(), []string{"trader"}) || s.Token() == oldToken {
		t.Errorf("after change: principal %q roles %v token changed %v; want alice [trader] true", s.Principal(), s.Roles(), s.Token() != oldToken)
	}
	if err := s.Keepalive(ctx); err != nil {
		t.Errorf("keepalive with the new token: %v", err)
	}
}

// TestConnectErrorHidesCredentials: a URL may carry a password or a token; the error
// of a failed dial names the URL without them (roster printed them on stderr).
func TestConnectErrorHidesCredentials(t *testing.T) {
	t.Parallel()
	addr := hostPort(freePort(t))
	for _, url := range []string{
		"nats://alice:s3cret@" + addr,
		"nats://s3cret@" + addr,
		"nats://" + addr + ",nats://bob:s3cret@" + addr,
	} {
		_, err := client.Connect(url, client.WithNATSOptions(nats.MaxReconnects(0)))
		if !errors.Is(err, client.ErrUnavailable) || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), addr) {
			t.Errorf("connect to %s: got %v, want ErrUnavailable naming %s without the secret", url, err, addr)
		}
	}
}
