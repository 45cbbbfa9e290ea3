package client_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestChangePrincipalOfASessionWithManyProperties: a session may hold as many user
// properties as the registry's limit (100 by default), and a change of principal
// sends them all to the auth service to vet. The auth service refused more than 64,
// which it took for a client's proposal, so such a session could not change
// principal at all: limit_exceeded, "at most 64 properties may be proposed".
func TestChangePrincipalOfASessionWithManyProperties(t *testing.T) {
	t.Parallel()
	p := startSecured(t)
	s := open(t, p.ClientURL(), client.Options{Credentials: client.Password("alice", "wonderland")})
	set := map[string]string{}
	for i := range 80 {
		set[fmt.Sprintf("P%02d", i)] = "v"
	}
	if err := s.SetProperties(ctxT(t), set); err != nil {
		t.Fatalf("set 80 properties: %v", err)
	}
	if err := s.ChangePrincipal(ctxT(t), &wire.Credentials{Username: "root", Password: "toor"}); err != nil {
		t.Fatalf("change of principal of a session with 80 properties (the limit is 100): %v", err)
	}
	if got := s.Principal(); got != "root" {
		t.Errorf("principal %q, want root", got)
	}
	user := 0
	for k := range s.Properties() {
		if !strings.HasPrefix(k, "$") {
			user++
		}
	}
	if user != 81 { // and alice's Desk
		t.Errorf("%d user properties after the change, want 81", user)
	}
}
