package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

func newLockCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lock",
		Short: "Acquire, release and list named locks",
	}
	cmd.AddCommand(newLockAcquireCmd(), newLockReleaseCmd(), newLockListCmd())
	return cmd
}

// commandExitError carries the exit status of the command lock acquire ran: its
// own, or 128 and the number of the signal that ended it, as a shell reports it.
type commandExitError struct {
	name   string
	code   int
	signal os.Signal // nil when the command exited
	notRun error     // why the command could not be started (status 126 or 127)
}

func (e *commandExitError) Error() string {
	if e.notRun != nil {
		return fmt.Sprintf("cannot run %s: %v (status %d)", e.name, e.notRun, e.code)
	}
	if e.signal != nil {
		return fmt.Sprintf("%s ended by signal %v (status %d)", e.name, e.signal, e.code)
	}
	return fmt.Sprintf("%s exited with status %d", e.name, e.code)
}

// notRun is the error for a command lock acquire cannot start, with the status a
// shell gives it: 127 when there is no such command, 126 when there is one that
// cannot be run (not executable, a directory, not a program).
func notRun(name string, err error) error {
	code := 126
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		code = 127
	}
	return &commandExitError{name: name, code: code, notRun: err}
}

func newLockAcquireCmd() *cobra.Command {
	var f clientFlags
	var shared bool
	var scope string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "acquire NAME [-- COMMAND [ARG...]]",
		Short: "Acquire a lock, and hold it while a command runs or until interrupted",
		Long: `Acquire the named lock and print its fencing token.

With a command after --, run it while holding the lock, with ROSTER_LOCK_NAME and
ROSTER_LOCK_TOKEN in its environment, then release the lock and exit with the
command's status (128 and the signal's number when a signal ended it, as a shell
reports it; 127 when there is no such command and 126 when it cannot be run, found
before the lock is taken). If the lock is lost meanwhile (its session ended, a
connection-scoped lock's connection dropped, or the server could not be reached for
as long as it may take to release the lock: the smaller of the session timeout and
the server's reconnect window), the command is sent SIGTERM and acquire fails with
the lost lock's status. An interrupt (Ctrl-C's SIGINT, SIGTERM, SIGHUP) is
passed on to the command as it came.

Without a command, hold the lock until interrupted (Ctrl-C), then release it. As an
existing session (--session-id, --session-token), the lock is taken for that
session and kept when acquire exits: release it with roster lock release.

--wait bounds the wait for a lock held by someone else: 0 tries once, a negative
value waits until interrupted. Not getting the lock in time exits with status 6.`,
		Example: `  roster lock acquire orders/42 -- ./process-order 42
  roster lock acquire reports --shared --wait 1m -- make report
  roster lock acquire orders/42            # hold until Ctrl-C
  roster lock acquire orders/42 --session-id $ROSTER_SESSION_ID --session-token $ROSTER_SESSION_TOKEN`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := outputFor(cmd)
			if err != nil {
				return err
			}
			name, command := args[0], args[1:]
			switch dash := cmd.ArgsLenAtDash(); {
			case dash == 0:
				// roster lock acquire -- make: the command's name would be taken for
				// the lock's, and the lock held until interrupted, running nothing.
				return usageError{errors.New("name the lock before --: roster lock acquire NAME -- COMMAND")}
			case dash > 1 || (dash < 0 && len(args) > 1):
				return usageError{errors.New("put the command after --: roster lock acquire NAME -- COMMAND")}
			}
			opts := client.LockOptions{Mode: wire.LockExclusive, Scope: wire.LockScope(scope)}
			if shared {
				opts.Mode = wire.LockShared
			}
			if !opts.Scope.Valid() {
				return usageError{fmt.Errorf("%s %q: want session or connection", flagSource(cmd, "scope"), scope)}
			}
			if opts.Scope == wire.ScopeConnection && f.sessionID != "" {
				// The lock service grants a connection-scoped lock only on the
				// connection the session is ACTIVE on, which is not this command's.
				return usageError{fmt.Errorf("--scope connection needs the session's own connection: it cannot be used with %s", flagSource(cmd, "session-id"))}
			}
			if len(command) > 0 {
				// Before the lock is taken: a mistyped command neither waits for the
				// lock nor holds it from others for nothing.
				if _, err := exec.LookPath(command[0]); err != nil {
					return notRun(command[0], err)
				}
			}
			return f.session(cmd, client.Options{}, func(ctx context.Context, s *client.Session) error {
				l, err := acquire(ctx, s, name, opts, wait, f.timeout)
				if err != nil {
					return err
				}
				if err := out.emit(l.Info(), func(w io.Writer) {
					fmt.Fprintf(w, "acquired %s (%s, %s scope) token %d\n", l.Name(), l.Mode(), l.Scope(), l.Token())
				}); err != nil {
					return err
				}
				if f.sessionID != "" && len(command) == 0 {
					return nil // the attached session keeps the lock
				}
				var runErr error
				if len(command) > 0 {
					runErr = runHolding(ctx, cmd, l, command)
				} else {
					select {
					case <-ctx.Done():
					case <-l.Lost(): // reported below
					}
				}
				if l.Err() != nil {
					lost := fmt.Errorf("lock %s lost: %w", name, l.Err())
					if runErr != nil {
						// The status is the lost lock's, not that of the command stopped
						// because of it.
						return fmt.Errorf("%w (%v)", lost, runErr)
					}
					return lost
				}
				rctx, cancel := f.requestContext(context.WithoutCancel(ctx))
				defer cancel()
				if err := l.Unlock(rctx); err != nil {
					return errors.Join(runErr, fmt.Errorf("release %s: %w", name, err))
				}
				return runErr
			})
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().BoolVar(&shared, "shared", false, "acquire in shared mode (with other shared holders) instead of exclusive")
	cmd.Flags().StringVar(&scope, "scope", string(wire.ScopeSession), "session (held until released or the session ends) or connection (also released when the connection drops)")
	cmd.Flags().DurationVar(&wait, "wait", 10*time.Second, "how long to wait for the lock: 0 tries once, negative waits until interrupted")
	annotateEnv(cmd.Flags())
	return cmd
}

// acquire takes the lock, trying once (a request bounded by timeout), waiting up to
// wait, or until ctx ends.
func acquire(ctx context.Context, s *client.Session, name string, opts client.LockOptions, wait, timeout time.Duration) (*client.Lock, error) {
	switch {
	case wait == 0:
		tctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return s.TryLock(tctx, name, opts)
	case wait > 0:
		wctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		l, err := s.Lock(wctx, name, opts)
		if errors.Is(err, client.ErrTimeout) && ctx.Err() == nil && errors.Is(wctx.Err(), context.DeadlineExceeded) {
			// Say which deadline: the SDK's "before the deadline: context deadline
			// exceeded" names none the user gave.
			return nil, &wire.Error{Code: wire.CodeTimeout, Message: fmt.Sprintf("lock %q not granted within --wait %s", name, wait)}
		}
		return l, err
	default:
		return s.Lock(ctx, name, opts)
	}
}

// runHolding runs command while l is held; it stops the command when the lock is
// lost or ctx ends.
func runHolding(ctx context.Context, cmd *cobra.Command, l *client.Lock, command []string) error {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := exec.CommandContext(cctx, command[0], command[1:]...)
	c.Cancel = func() error { return c.Process.Signal(stopSignal(ctx)) }
	c.WaitDelay = 10 * time.Second
	c.Stdin, c.Stdout, c.Stderr = cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
	c.Env = append(os.Environ(), "ROSTER_LOCK_NAME="+l.Name(), "ROSTER_LOCK_TOKEN="+strconv.FormatUint(l.Token(), 10))
	c.Env = append(c.Env, traceEnv(ctx)...)
	if err := c.Start(); err != nil {
		return notRun(command[0], err)
	}
	go func() {
		select {
		case <-l.Lost():
			cancel()
		case <-cctx.Done():
		}
	}()
	err := c.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ee) && ee.ExitCode() > 0:
		return &commandExitError{name: command[0], code: ee.ExitCode()}
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return &commandExitError{name: command[0], code: 128 + int(ws.Signal()), signal: ws.Signal()}
		}
		return fmt.Errorf("%s: %w", strings.Join(command, " "), err)
	default:
		return fmt.Errorf("%s: %w", strings.Join(command, " "), err)
	}
}

// stopSignal is the signal that stops the command lock acquire runs: the one that
// interrupted roster (ctx's cause), passed on as the command would have got it
// without roster in between — what a program does on Ctrl-C (SIGINT) is often not
// what it does on SIGTERM — or SIGTERM when the lock was lost.
func stopSignal(ctx context.Context) os.Signal {
	var sig signalError
	if errors.As(context.Cause(ctx), &sig) {
		return sig.sig
	}
	return syscall.SIGTERM
}

func newLockReleaseCmd() *cobra.Command {
	var f clientFlags
	var token uint64
	cmd := &cobra.Command{
		Use:   "release NAME",
		Short: "Release a lock held by an existing session (--session-id, --session-token)",
		Long: `Release a lock that an existing session holds — one taken with roster lock acquire
--session-id, or by a program that handed over its session id and token. A lock the
session does not hold exits with status 8 (lock_not_held).`,
		Example: `  roster lock release orders/42 --session-id $ROSTER_SESSION_ID --session-token $ROSTER_SESSION_TOKEN
  ROSTER_SESSION_ID=… ROSTER_SESSION_TOKEN=… roster lock release orders/42 --token 17 -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := outputFor(cmd)
			if err != nil {
				return err
			}
			if f.sessionID == "" {
				return usageError{errors.New("lock release acts as the session holding the lock: give --session-id and --session-token")}
			}
			return f.session(cmd, client.Options{}, func(ctx context.Context, s *client.Session) error {
				rctx, cancel := f.requestContext(ctx)
				defer cancel()
				released, err := s.Release(rctx, args[0], token)
				if err != nil {
					return err
				}
				return out.emit(released, func(w io.Writer) {
					fmt.Fprintf(w, "released %s token %d\n", released.Name, released.Token)
				})
			})
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().Uint64Var(&token, "token", 0, "release only if this is the held lock's fencing token")
	annotateEnv(cmd.Flags())
	return cmd
}

func newLockListCmd() *cobra.Command {
	var f clientFlags
	var prefix string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List locks with their holders and waiters (VIEW_LOCKS)",
		Example: `  roster lock list
  roster lock list --prefix orders/ -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out, err := outputFor(cmd)
			if err != nil {
				return err
			}
			return f.session(cmd, client.Options{}, func(ctx context.Context, s *client.Session) error {
				all := []wire.LockInfo{}
				after := ""
				for {
					rctx, cancel := f.requestContext(ctx)
					page, err := s.ListLocks(rctx, wire.LockListRequest{Prefix: prefix, After: after})
					cancel()
					if err != nil {
						return err
					}
					all = append(all, page.Locks...)
					if page.Next == "" {
						break
					}
					after = page.Next
				}
				return out.emit(map[string]any{"locks": all}, func(w io.Writer) {
					tw := columns(w)
					fmt.Fprintf(tw, "NAME\tMODE\tHOLDER\tTOKEN\tWAITERS\n")
					for _, l := range all {
						waiting := len(l.Waiters)
						if len(l.Holders) == 0 {
							fmt.Fprintf(tw, "%s\t-\t-\t-\t%d\n", l.Name, waiting)
						}
						for _, h := range l.Holders {
							fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\n", l.Name, h.Mode, h.Session, h.Token, waiting)
						}
					}
					_ = tw.Flush()
					fmt.Fprintf(w, "%d %s\n", len(all), plural(len(all), "lock", "locks"))
				})
			})
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().StringVar(&prefix, "prefix", "", "only locks whose names start with this")
	annotateEnv(cmd.Flags())
	return cmd
}
