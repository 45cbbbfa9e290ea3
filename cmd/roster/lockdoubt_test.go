package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/roster"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestLockAcquireStopsItsCommandWhenCutOff: lock acquire -- CMD whose connection
// goes silent (a partition: nothing either way, nothing closed on its side) stops
// CMD before the server can release the lock to another session, and exits with
// the lost lock's status (7, unavailable), saying the lock may have been released.
// It went on running CMD: the SDK reported the lock lost only once it reached the
// server again, long after another session had been granted it. The server counts
// the connection lost half a window after the partition, and releases the lock a
// window later.
func TestLockAcquireStopsItsCommandWhenCutOff(t *testing.T) {
	t.Parallel()
	const window = 2 * time.Second
	p := rostertest.Start(t, rostertest.WithConfig(func(c *roster.Config) { c.Registry.ReconnectWindow = window }))
	px := natstest.StartPartition(t, p.ClientURL())
	c := cli{t: t, server: px.URL()}
	ctx := testCtx(t)
	out, errb := &natstest.Buffer{}, &natstest.Buffer{}
	done := c.start(ctx, "", out, errb, "lock", "acquire", "orders/3", "--timeout", "1s", "--",
		"sh", "-c", `trap 'echo stopped; exit 143' TERM; echo started; while :; do sleep 0.1; done`)
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(out.String(), "started") {
			return errors.New("the command has not started: " + out.String() + errb.String())
		}
		return nil
	})
	other := openSession(t, p.ClientURL())
	granted := make(chan error, 1)
	go func() {
		_, err := other.Lock(ctx, "orders/3", client.LockOptions{})
		granted <- err
	}()
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		page, err := other.ListLocks(ctx, wire.LockListRequest{Prefix: "orders/3"})
		if err != nil || len(page.Locks) != 1 || len(page.Locks[0].Waiters) != 1 {
			return errors.New("the other session does not wait for the lock yet")
		}
		return nil
	})

	px.Freeze()
	time.Sleep(window / 2) // the holder's last answered request went out before the freeze
	px.Sever()
	select {
	case err := <-granted:
		if err != nil {
			t.Fatalf("the other session's Lock: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the other session was never granted the lock")
	}
	if !strings.Contains(out.String(), "stopped") {
		t.Fatalf("another session was granted the lock while lock acquire's command still ran: %q", out.String())
	}
	px.Close()
	select {
	case err := <-done:
		if exitCode(err) != exitUnavailable || !strings.Contains(err.Error(), "lock orders/3 lost") || !strings.Contains(err.Error(), "may have been released") {
			t.Errorf("got %v (exit %d), want exit %d saying the lock may have been released", err, exitCode(err), exitUnavailable)
		}
	case <-ctx.Done():
		t.Fatal("lock acquire did not exit")
	}
}
