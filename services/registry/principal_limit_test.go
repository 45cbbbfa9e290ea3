package registry

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// Two opens racing for a principal with room for both must both succeed: the
// count is exact within an instance (docs/architecture.md, Limits). An open's
// reservation used to be released only after the session was counted, so an open
// arriving in between counted that session twice and was refused.
func TestConcurrentOpensWithinTheLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{Limits: Limits{SessionsPerPrincipal: 2}})
	nc := e.srv.ClientConn(t)
	for i := range 300 {
		creds := &wire.Credentials{Type: wire.CredentialsPassword, Username: fmt.Sprintf("u%d", i), Password: "pw"}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for j := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				var resp wire.SessionOpenResponse
				errs[j] = wire.Call(ctx, nc, wire.SubjectSessionOpen, nil, &wire.SessionOpenRequest{Credentials: creds}, &resp)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatalf("principal u%d, two opens with a limit of 2: %v", i, err)
			}
		}
	}
}
