package client_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/client"
)

// TestCallsDuringAChangeOfPrincipal: a Session is shared by goroutines, and one of
// them changing its principal rotates the token the others send. The registry
// refuses the old token as soon as it has written the new one, before the change's
// answer reaches the client: calls made meanwhile failed with ErrInvalidToken (a
// Close so refused left the session open on the server, a resume closed it on this
// side only). They are sent again with the new token.
func TestCallsDuringAChangeOfPrincipal(t *testing.T) {
	t.Parallel()
	p := startSecured(t)
	s := open(t, p.ClientURL(), client.Options{Credentials: client.Password("alice", "wonderland")})
	ctx := ctxT(t)
	var (
		stop   atomic.Bool
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed int
		first  error
	)
	for i := range 8 {
		wg.Go(func() {
			for n := 0; !stop.Load(); n++ {
				var err error
				switch n % 3 {
				case 0:
					err = s.Keepalive(ctx)
				case 1:
					_, err = s.Refresh(ctx)
				default:
					// The lock service: each service checks the token itself.
					var l *client.Lock
					if l, err = s.TryLock(ctx, fmt.Sprintf("orders/%d", i), client.LockOptions{}); err == nil {
						err = l.Unlock(ctx)
					}
				}
				if err != nil {
					mu.Lock()
					if failed++; first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for range 20 {
		if err := s.ChangePrincipal(ctx, client.Password("alice", "wonderland")); err != nil {
			t.Fatalf("change principal: %v", err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if failed > 0 {
		t.Errorf("%d calls made during 20 changes of principal failed; the first: %v", failed, first)
	}
	// Concurrent changes are made one after another, each with the token the one
	// before gave.
	var changes sync.WaitGroup
	for range 4 {
		changes.Go(func() {
			if err := s.ChangePrincipal(ctx, client.Password("alice", "wonderland")); err != nil {
				t.Errorf("concurrent change of principal: %v", err)
			}
		})
	}
	changes.Wait()
	if err := s.Keepalive(ctx); err != nil {
		t.Errorf("keepalive after the changes: %v", err)
	}
}
