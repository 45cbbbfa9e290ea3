package main

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
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
	t.Parallel()
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

// TestCtrlCEndsAReadOfStandardInput: a command reading standard input (a payload,
// a policy, a password) that waits for more is ended by Ctrl-C. roster catches
// the signal, so the read went on, on a terminal until the user typed Ctrl-D; then
// the command ran anyway and failed with "context canceled".
func TestCtrlCEndsAReadOfStandardInput(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"send", "--server", "nats://127.0.0.1:1", "--filter", "all", "--path", "p", "-"},
		{"request", "--server", "nats://127.0.0.1:1", "--filter", "all", "--path", "p", "-"},
		{"policy", "set", "--server", "nats://127.0.0.1:1", "-"},
		{"policy", "check", "-"},
		{"user", "add", "alice", "--users-file", filepath.Join(t.TempDir(), "users.yaml")},
	} {
		stdin, typing := io.Pipe() // a terminal nobody types on
		t.Cleanup(func() { _ = typing.Close() })
		ctx, cancel := context.WithCancelCause(context.Background())
		root := newRootCmd()
		root.SetArgs(args)
		root.SetIn(stdin)
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		done := make(chan error, 1)
		go func() { done <- root.ExecuteContext(ctx) }()
		cancel(signalError{os.Interrupt})
		select {
		case err := <-done:
			if exitCode(err) != 130 {
				t.Errorf("roster %s interrupted while reading stdin: got %v (exit %d), want interrupted (exit 130)", strings.Join(args, " "), err, exitCode(err))
			}
		case <-time.After(20 * time.Second):
			t.Errorf("roster %s still reads stdin after Ctrl-C", strings.Join(args, " "))
		}
	}
}

// TestLockAcquirePassesTheInterruptOnToItsCommand: Ctrl-C (SIGINT) given to lock
// acquire running a command reaches the command as SIGINT, as it would without
// roster in between, so that what the command does on an interrupt (Python's
// KeyboardInterrupt, a shell's trap on INT) happens. It was sent SIGTERM, which ends
// most programs without their clean-up, even as the terminal's own SIGINT reached
// them. SIGTERM is passed on as SIGTERM, and SIGHUP as SIGHUP (README and the help
// say so).
func TestLockAcquirePassesTheInterruptOnToItsCommand(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	ctx := testCtx(t)
	const script = `trap 'echo got INT; exit 7' INT; trap 'echo got TERM; exit 9' TERM; trap 'echo got HUP; exit 11' HUP; echo ready; while :; do sleep 0.05; done`
	for _, tc := range []struct {
		sig  os.Signal
		want string
		exit int
	}{{os.Interrupt, "got INT", 7}, {syscall.SIGTERM, "got TERM", 9}, {syscall.SIGHUP, "got HUP", 11}} {
		cctx, cancel := context.WithCancelCause(ctx)
		out, errb := &natstest.Buffer{}, &natstest.Buffer{}
		done := c.start(cctx, "", out, errb, "lock", "acquire", "orders/9", "--", "sh", "-c", script)
		natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			if !strings.Contains(out.String(), "ready") {
				return errors.New("the command has not started")
			}
			return nil
		})
		cancel(signalError{tc.sig})
		err := <-done
		if !strings.Contains(out.String(), tc.want) || exitCode(err) != tc.exit {
			t.Errorf("lock acquire interrupted by %v: the command printed %q and acquire exited %d (%v); want %q and exit %d", tc.sig, out.String(), exitCode(err), err, tc.want, tc.exit)
		}
	}
}
