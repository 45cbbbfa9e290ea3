package main

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestInterruptedCommandsSayWhichSignal: a command that Ctrl-C (or SIGTERM) cuts
// short, here lock acquire waiting for a lock held elsewhere, fails saying it was
// interrupted, with 128 and the signal's number as a shell reports it. It said
// "roster: context canceled" and exited 1, as for any other failure.
func TestInterruptedCommandsSayWhichSignal(t *testing.T) {
	c := newCLI(t)
	ctx := testCtx(t)
	holder := openSession(t, c.server)
	if _, err := holder.Lock(ctx, "orders/7", client.LockOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, sig := range []os.Signal{os.Interrupt, syscall.SIGTERM} {
		cctx, cancel := context.WithCancelCause(ctx)
		out, errb := &natstest.Buffer{}, &natstest.Buffer{}
		done := c.start(cctx, "", out, errb, "lock", "acquire", "orders/7", "--wait", "-1s")
		natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			page, err := holder.ListLocks(ctx, wire.LockListRequest{Prefix: "orders/7"})
			if err != nil || len(page.Locks) != 1 || len(page.Locks[0].Waiters) != 1 {
				return errors.New("lock acquire does not wait for orders/7 yet")
			}
			return nil
		})
		cancel(signalError{sig})
		err := <-done
		want := 128 + int(sig.(syscall.Signal))
		if exitCode(err) != want || !strings.HasPrefix(err.Error(), "interrupted (SIG") {
			t.Errorf("lock acquire interrupted by %v while it waited: got %v (exit %d), want interrupted (exit %d)", sig, err, exitCode(err), want)
		}
	}
}
