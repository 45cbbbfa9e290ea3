package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"golang.org/x/crypto/bcrypt"

	"github.com/seed-3c836eab/roster/pkg/client"
	"github.com/seed-3c836eab/roster/pkg/embedded"
	"github.com/seed-3c836eab/roster/pkg/natstest"
	"github.com/seed-3c836eab/roster/pkg/roster"
	"github.com/seed-3c836eab/roster/pkg/roster/rostertest"
	"github.com/seed-3c836eab/roster/pkg/wire"
	"github.com/seed-3c836eab/roster/services/auth"
)

// cli runs one roster command in-process against server.
type cli struct {
	t      *testing.T
	server string
}

type result struct {
	stdout, stderr string
	err            error
}

// exit returns the exit status the command would have ended with.
func (r result) exit() int {
	if r.err == nil {
		return 0
	}
	return exitCode(r.err)
}

func (c cli) run(ctx context.Context, stdin string, args ...string) result {
	c.t.Helper()
	var out, errb natstest.Buffer
	r := c.start(ctx, stdin, &out, &errb, args...)
	err := <-r
	return result{stdout: out.String(), stderr: errb.String(), err: err}
}

func (c cli) start(ctx context.Context, stdin string, out, errb *natstest.Buffer, args ...string) <-chan error {
	root := newRootCmd()
	// --server goes before a "--" that starts a command's own arguments.
	dash := len(args)
	for i, a := range args {
		if a == "--" {
			dash = i
			break
		}
	}
	root.SetArgs(append(append(append([]string{}, args[:dash]...), "--server", c.server), args[dash:]...))
	root.SetOut(out)
	root.SetErr(errb)
	root.SetIn(strings.NewReader(stdin))
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	return done
}

func newCLI(t *testing.T) cli {
	p := rostertest.Start(t)
	return cli{t: t, server: p.ClientURL()}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// listen starts roster listen and waits until it handles its paths.
func (c cli) listen(ctx context.Context, args ...string) (out *natstest.Buffer, sessionID string, stop func() error) {
	c.t.Helper()
	lctx, cancel := context.WithCancel(ctx)
	out, errb := &natstest.Buffer{}, &natstest.Buffer{}
	done := c.start(lctx, "", out, errb, append([]string{"listen"}, args...)...)
	natstest.CheckFor(c.t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(errb.String(), "listening as session") {
			return errors.New("listen has not started: " + errb.String())
		}
		return nil
	})
	sessionID = strings.Fields(strings.TrimPrefix(errb.String(), "listening as session "))[0]
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	c.t.Cleanup(func() { _ = stop() })
	return out, sessionID, stop
}

func TestSendRequestListen(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	ctx := testCtx(t)
	out, id, stop := c.listen(ctx, "--property", "Department=Accounts", "--path", "chat/room1", "--path", "quote", "--reply", "1.08")

	r := c.run(ctx, "", "send", "--filter", `Department is "Accounts"`, "--path", "chat/room1", "--content-type", "text/plain", "hello")
	if r.err != nil || r.stdout != "delivered to 1 session\n" {
		t.Fatalf("send: got %q, %v; want delivered to 1 session", r.stdout, r.err)
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(out.String(), "message on chat/room1 from ") || !strings.Contains(out.String(), "(text/plain): hello\n") {
			return errors.New("listen printed " + strconv.Quote(out.String()))
		}
		return nil
	})

	r = c.run(ctx, "payload from stdin", "send", "--session", id, "--path", "other", "-", "-o", "json")
	if r.err != nil || !strings.Contains(r.stdout, `"delivered":1`) {
		t.Errorf("send to a session from stdin: got %q, %v", r.stdout, r.err)
	}

	r = c.run(ctx, "", "request", "--session", id, "--path", "quote", "EURUSD", "-o", "json")
	if r.err != nil {
		t.Fatalf("request: %v", r.err)
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res["status"] != "ok" || res["payload"] != "1.08" || res["session_id"] != id {
		t.Errorf("request result: got %q (%v), want ok 1.08 from %s", r.stdout, err, id)
	}
	// Nobody handles "other": the result is gone and the exit status says so.
	r = c.run(ctx, "", "request", "--session", id, "--path", "other", "x")
	if !errors.Is(r.err, wire.ErrUnavailable) || r.exit() != exitUnavailable || !strings.Contains(r.stdout, id+" gone") {
		t.Errorf("request to an unhandled path: got %q, %v (exit %d); want gone, exit %d", r.stdout, r.err, r.exit(), exitUnavailable)
	}
	if err := stop(); err != nil {
		t.Errorf("listen: %v", err)
	}
	if strings.Contains(out.String(), "on other") {
		t.Errorf("listen printed a delivery on a path it does not handle: %q", out.String())
	}
}

func TestLockCommands(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	ctx := testCtx(t)

	r := c.run(ctx, "", "lock", "acquire", "orders/42", "--", "sh", "-c", `echo "token=$ROSTER_LOCK_TOKEN name=$ROSTER_LOCK_NAME"; exit 3`)
	if r.exit() != 3 {
		t.Errorf("the command's exit status: got %d (%v), want 3", r.exit(), r.err)
	}
	var token string
	if _, err := fmt.Sscanf(r.stdout, "acquired orders/42 (exclusive, session scope) token %s\n", &token); err != nil || !strings.Contains(r.stdout, "token="+token+" name=orders/42\n") {
		t.Errorf("acquire output: got %q, want the token printed and passed to the command", r.stdout)
	}

	// Take it for a session opened elsewhere: it stays held after acquire exits.
	owner := openSession(t, c.server)
	as := []string{"--session-id", owner.ID(), "--session-token", owner.Token()}
	if r := c.run(ctx, "", append([]string{"lock", "acquire", "orders/7", "-o", "json"}, as...)...); r.err != nil || !strings.Contains(r.stdout, `"name":"orders/7"`) {
		t.Fatalf("acquire as a session: got %q, %v", r.stdout, r.err)
	}
	r = c.run(ctx, "", "lock", "list", "--prefix", "orders/")
	if r.err != nil || !strings.Contains(r.stdout, "orders/7") || !strings.Contains(r.stdout, owner.ID()) || !strings.HasSuffix(r.stdout, "1 lock\n") {
		t.Errorf("lock list: got %q, %v; want orders/7 held by %s", r.stdout, r.err, owner.ID())
	}
	// Tokens have 16 digits (a clock floor, docs/architecture.md "Fencing tokens"):
	// the columns after them stay under their headings.
	if lines := strings.Split(r.stdout, "\n"); len(lines) < 2 || strings.Index(lines[0], "WAITERS") != strings.LastIndex(lines[1], " ")+1 {
		t.Errorf("lock list: the waiters column is not under its heading in %q", r.stdout)
	}
	r = c.run(ctx, "", "lock", "acquire", "orders/7", "--wait", "0")
	if !errors.Is(r.err, wire.ErrTimeout) || r.exit() != exitTimeout {
		t.Errorf("try a held lock: got %v (exit %d), want timeout (exit %d)", r.err, r.exit(), exitTimeout)
	}
	r = c.run(ctx, "", "lock", "acquire", "orders/7", "--wait", "200ms")
	if r.exit() != exitTimeout {
		t.Errorf("wait 200ms for a held lock: got %v (exit %d), want exit %d", r.err, r.exit(), exitTimeout)
	}
	if r := c.run(ctx, "", append([]string{"lock", "release", "orders/7"}, as...)...); r.err != nil || !strings.HasPrefix(r.stdout, "released orders/7 token ") {
		t.Errorf("release: got %q, %v", r.stdout, r.err)
	}
	if r := c.run(ctx, "", append([]string{"lock", "release", "orders/7"}, as...)...); r.exit() != exitConflict {
		t.Errorf("second release: got %v (exit %d), want lock_not_held (exit %d)", r.err, r.exit(), exitConflict)
	}
	if r := c.run(ctx, "", "lock", "release", "orders/7"); r.exit() != 2 {
		t.Errorf("release without a session: got %v (exit %d), want a usage error (2)", r.err, r.exit())
	}
}

func TestUsageErrorsAndCompletion(t *testing.T) {
	c := cli{t: t, server: "nats://127.0.0.1:1"}
	ctx := testCtx(t)
	for _, args := range [][]string{
		{"send", "--path", "a", "x"},
		{"send", "--filter", "all", "x"},
		{"send", "--filter", "all", "--session", "s", "--path", "a"},
		{"request", "--path", "a"},
		{"lock", "acquire", "x", "--scope", "forever"},
		{"lock", "acquire", "x", "--scope", "connection", "--session-id", "x", "--session-token", "y"},
		{"lock", "acquire", "x", "echo"},
		{"send", "--filter", "all", "--path", "a", "--header", "novalue"},
		// Bad flags and arguments that cobra itself refuses.
		{"send", "--no-such-flag"},
		{"lock", "acquire", "x", "--wait", "soon"},
		{"lock", "acquire"},
		{"session", "get", "a", "b"},
		{"session", "get", "--session-id", "x"}, // without --session-token
	} {
		if r := c.run(ctx, "", args...); r.exit() != 2 {
			t.Errorf("%q: got %v (exit %d), want a usage error (2)", args, r.err, r.exit())
		}
	}
	t.Setenv("ROSTER_TIMEOUT", "soon")
	if r := c.run(ctx, "", "session", "get"); r.exit() != 2 {
		t.Errorf("ROSTER_TIMEOUT=soon: got %v (exit %d), want a usage error (2)", r.err, r.exit())
	}
	if r := c.run(ctx, "", "send", "--filter", "all", "--path", "a", "x", "--timeout", "1s"); r.exit() != exitUnavailable {
		t.Errorf("no server: got %v (exit %d), want exit %d", r.err, r.exit(), exitUnavailable)
	}
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs([]string{"completion", shell})
		if err := root.Execute(); err != nil || !strings.Contains(out.String(), "roster") {
			t.Errorf("completion %s: %v, %d bytes", shell, err, out.Len())
		}
	}
	// Cobra's hidden completion entry point completes subcommands.
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"__complete", "lock", ""})
	if err := root.Execute(); err != nil || !strings.Contains(out.String(), "acquire") || !strings.Contains(out.String(), "release") {
		t.Errorf("completing lock: got %q, %v", out.String(), err)
	}
}

func TestHelpHasExamples(t *testing.T) {
	t.Parallel()
	root := newRootCmd()
	var missing []string
	var walk func(cmdPath string, cmds []*cobra.Command)
	walk = func(cmdPath string, cmds []*cobra.Command) {
		for _, c := range cmds {
			if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
				continue
			}
			// A group (roster session) runs only to refuse unknown commands (usageArgs).
			if c.Runnable() && !c.HasSubCommands() && c.Example == "" {
				missing = append(missing, cmdPath+" "+c.Name())
			}
			walk(cmdPath+" "+c.Name(), c.Commands())
		}
	}
	walk("roster", root.Commands())
	if len(missing) > 0 {
		t.Errorf("commands without examples in --help: %v", missing)
	}
}

// openSession opens a session with the SDK, as another program would.
func openSession(t *testing.T, server string) *client.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := client.Open(ctx, server, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	})
	return s
}

func TestSessionEventsCommand(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	ctx := testCtx(t)
	s := openSession(t, c.server)
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	var r result
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		r = c.run(ctx, "", "session", "events", "--id", s.ID(), "--since", "1h")
		if r.err != nil {
			return r.err
		}
		if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 2 ||
			!strings.Contains(lines[0], " "+s.ID()+" opened ") || !strings.Contains(lines[1], " "+s.ID()+" closed ") || !strings.HasSuffix(lines[1], "reason=by_client") {
			return fmt.Errorf("got %q, want the session's opened and closed events", r.stdout)
		}
		return nil
	})

	// Follow the closed events from the next sequence on: a session that closes
	// now is printed as it happens (beside the sessions the commands themselves
	// opened and closed).
	seq, err := strconv.ParseUint(strings.Fields(strings.Split(r.stdout, "\n")[1])[0], 10, 64)
	if err != nil {
		t.Fatalf("the sequence of %q: %v", r.stdout, err)
	}
	fctx, cancel := context.WithCancel(ctx)
	out, errb := &natstest.Buffer{}, &natstest.Buffer{}
	done := c.start(fctx, "", out, errb, "session", "events", "--follow", "--kind", "closed", "--from-seq", strconv.FormatUint(seq+1, 10), "-o", "json")
	s2 := openSession(t, c.server)
	if err := s2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for line := range strings.Lines(out.String()) {
			var ev wire.StoredSessionEvent
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				return fmt.Errorf("follow printed %q: %v", line, err)
			}
			if ev.Event.Kind != wire.EventClosed || ev.Seq <= seq {
				t.Fatalf("followed %+v, want closed events after sequence %d", ev, seq)
			}
			if ev.Event.SessionID == s2.ID() {
				return nil
			}
		}
		return fmt.Errorf("follow printed %q, without %s's closed event", out.String(), s2.ID())
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("follow after an interrupt: %v (%s)", err, errb.String())
	}
}

// TestConnectionErrors: credentials the auth callout refuses exit 4, as documented
// (they used to be reported as unavailable, exit 7), and a server URL's password
// never reaches the output. Under deploy/'s policy, which admits no anonymous
// connection, a command given no credentials says so: it said only that the server
// refused the connection's credentials.
func TestConnectionErrors(t *testing.T) {
	t.Parallel()
	p := startDeployPolicy(t)
	c := cli{t: t, server: p.ClientURL()}
	ctx := testCtx(t)
	if r := c.run(ctx, "", "session", "get", "--user", "alice", "--password", "alice-pw"); r.err != nil {
		t.Fatalf("alice: %v", r.err)
	}
	if r := c.run(ctx, "", "session", "get", "--user", "alice", "--password", "wrong"); !errors.Is(r.err, wire.ErrUnauthenticated) || r.exit() != exitDenied {
		t.Errorf("wrong password: got %v (exit %d), want unauthenticated (exit %d)", r.err, r.exit(), exitDenied)
	}
	if r := c.run(ctx, "", "session", "get"); !errors.Is(r.err, wire.ErrUnauthenticated) || !strings.Contains(r.err.Error(), "no credentials were given") {
		t.Errorf("no credentials where anonymous connections are refused: got %v, want unauthenticated saying that none were given", r.err)
	}
	c.server = "nats://alice:s3cret@127.0.0.1:1"
	if r := c.run(ctx, "", "session", "get"); r.exit() != exitUnavailable || strings.Contains(r.err.Error(), "s3cret") {
		t.Errorf("no server: got %v (exit %d), want exit %d without the URL's password", r.err, r.exit(), exitUnavailable)
	}
}

// TestClientCommandNamesAMonitoringPort: a --server that is a node's HTTP monitoring
// port exits 7 saying so, and where clients connect; it said only "read tcp …: i/o
// timeout". (pkg/client TestConnectNamesAWrongPort covers the route port too, which
// the commands reach as they reach the client port: a route port's INFO advertises
// the client URLs, which nats.go follows.)
func TestClientCommandNamesAMonitoringPort(t *testing.T) {
	t.Parallel()
	s := natstest.Start(t, func(c *embedded.Config) { c.Monitor = "127.0.0.1:-1" })
	c := cli{t: t, server: s.MonitorAddr().String()}
	r := c.run(testCtx(t), "", "session", "get")
	if r.exit() != exitUnavailable || !strings.Contains(fmt.Sprint(r.err), "answers HTTP, as a NATS monitoring port does, not the NATS protocol (clients connect to the client port, 4222 by default)") {
		t.Errorf("got %v (exit %d), want exit %d naming the monitoring port", r.err, r.exit(), exitUnavailable)
	}
}

// TestTryLockIsBoundedByTimeout: lock acquire --wait 0 tries once, and that request
// is bounded by --timeout like every other; it used to wait for ever for a lock
// instance that took the request and died.
func TestTryLockIsBoundedByTimeout(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t, rostertest.WithConfig(func(c *roster.Config) { c.Services = []string{"auth", "registry"} }))
	dead, err := p.Server().ConnectService()
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	if _, err := dead.QueueSubscribe(wire.SubjectLockAcquire, "q", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := dead.Flush(); err != nil {
		t.Fatal(err)
	}
	c := cli{t: t, server: p.ClientURL()}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if r := c.run(ctx, "", "lock", "acquire", "x", "--wait", "0", "--timeout", "500ms"); r.exit() != exitTimeout || ctx.Err() != nil {
		t.Errorf("try a lock nobody answers for: got %v (exit %d), want a timeout (exit %d) after --timeout", r.err, r.exit(), exitTimeout)
	}
}

// TestLockWaitTimeoutNamesTheWait: a lock not granted within --wait exits 6 saying
// so, as a lock not free for --wait 0 says it is not available. It said "not granted
// before the deadline: context deadline exceeded", naming no deadline the user gave.
func TestLockWaitTimeoutNamesTheWait(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	ctx := testCtx(t)
	holder := openSession(t, c.server)
	if _, err := holder.Lock(ctx, "orders/7", client.LockOptions{}); err != nil {
		t.Fatal(err)
	}
	r := c.run(ctx, "", "lock", "acquire", "orders/7", "--wait", "300ms", "--", "true")
	if r.exit() != exitTimeout || !strings.Contains(fmt.Sprint(r.err), `lock "orders/7" not granted within --wait 300ms`) || strings.Contains(fmt.Sprint(r.err), "context deadline exceeded") {
		t.Errorf("got %v (exit %d), want exit %d saying the lock was not granted within --wait 300ms", r.err, r.exit(), exitTimeout)
	}
}

// TestLockLostIsReportedOnce: lock acquire holding a lock until interrupted fails
// when the lock is lost (here its session is closed by another), with status 5
// (session_closed), and says so once; it said "lock … lost: …" twice.
func TestLockLostIsReportedOnce(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	ctx := testCtx(t)
	out, errb := &natstest.Buffer{}, &natstest.Buffer{}
	done := c.start(ctx, "", out, errb, "lock", "acquire", "orders/9", "-o", "json")
	var held wire.Lock
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		return json.Unmarshal([]byte(out.String()), &held)
	})
	admin := openSession(t, c.server)
	if _, err := admin.CloseSessions(ctx, wire.SessionCloseRequest{ID: held.Session}); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		t.Fatal("lock acquire still holds a lock whose session was closed")
	}
	if exitCode(err) != exitSessionClosed {
		t.Errorf("got %v (exit %d), want exit %d", err, exitCode(err), exitSessionClosed)
	}
	if n := strings.Count(err.Error(), "lock orders/9 lost"); n != 1 {
		t.Errorf("the error says the lock was lost %d times, want once: %q", n, err.Error())
	}
}

// TestExportedSessionLeavesOpeningCommandsAlone: session open prints an export of
// the new session's id and token; with those in the environment, the commands that
// open a session of their own (listen, session open) still do, while the others act
// as the exported session. Only --session-id given on the command line is refused.
func TestExportedSessionLeavesOpeningCommandsAlone(t *testing.T) {
	c := newCLI(t)
	ctx := testCtx(t)
	owner := openSession(t, c.server)
	t.Setenv("ROSTER_SESSION_ID", owner.ID())
	t.Setenv("ROSTER_SESSION_TOKEN", owner.Token())

	if r := c.run(ctx, "", "session", "get"); r.err != nil || !strings.Contains(r.stdout, owner.ID()) {
		t.Fatalf("session get as the exported session: got %q, %v", r.stdout, r.err)
	}
	_, id, stop := c.listen(ctx)
	if id == owner.ID() {
		t.Errorf("listen used the exported session %s; want a session of its own", id)
	}
	if err := stop(); err != nil {
		t.Errorf("listen: %v", err)
	}

	octx, cancel := context.WithCancel(ctx)
	out, errb := &natstest.Buffer{}, &natstest.Buffer{}
	done := c.start(octx, "", out, errb, "session", "open")
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(out.String(), "export ROSTER_SESSION_ID=") {
			return fmt.Errorf("session open printed %q, %q", out.String(), errb.String())
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("session open: %v", err)
	}
	if strings.Contains(out.String(), "ROSTER_SESSION_ID="+owner.ID()) {
		t.Errorf("session open printed the exported session rather than a new one: %q", out.String())
	}

	for _, args := range [][]string{{"listen", "--session-id", owner.ID()}, {"session", "open", "--session-id", owner.ID()}} {
		if r := c.run(ctx, "", args...); r.exit() != 2 {
			t.Errorf("%q: got %v (exit %d), want a usage error (2)", args, r.err, r.exit())
		}
	}
}

// TestClosedSessionFromTheEnvironmentIsNamed: an export of session open left in the
// shell outlives its session; a command acting as it fails with the session's status
// and says the session came from ROSTER_SESSION_ID and how to do without it. The
// error named only a session id the user had not given ("session_closed: session … is
// closed (expired)", for lock list as for any command).
func TestClosedSessionFromTheEnvironmentIsNamed(t *testing.T) {
	c := newCLI(t)
	ctx := testCtx(t)
	gone := openSession(t, c.server)
	id, token := gone.ID(), gone.Token()
	if err := gone.Close(ctx); err != nil {
		t.Fatal(err)
	}
	live := openSession(t, c.server)
	for _, tc := range []struct {
		name, id, token string
		exit            int
	}{
		{"closed", id, token, exitSessionClosed},
		{"wrong token", live.ID(), token, exitDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("ROSTER_SESSION_ID", tc.id)
			t.Setenv("ROSTER_SESSION_TOKEN", tc.token)
			r := c.run(ctx, "", "lock", "list")
			if r.exit() != tc.exit || !strings.Contains(fmt.Sprint(r.err), "unset ROSTER_SESSION_ID and ROSTER_SESSION_TOKEN") {
				t.Errorf("from the environment: got %v (exit %d), want exit %d naming ROSTER_SESSION_ID", r.err, r.exit(), tc.exit)
			}
			r = c.run(ctx, "", "lock", "list", "--session-id", tc.id)
			if r.exit() != tc.exit || strings.Contains(fmt.Sprint(r.err), "ROSTER_SESSION_ID") {
				t.Errorf("--session-id on the command line: got %v (exit %d), want exit %d naming no variable", r.err, r.exit(), tc.exit)
			}
		})
	}
}

// TestSessionOpenPrintsStateChangesAsJSON: with -o json each change of state is an
// object with the documented snake_case members.
func TestSessionOpenPrintsStateChangesAsJSON(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	ctx := testCtx(t)
	out, errb := &natstest.Buffer{}, &natstest.Buffer{}
	done := c.start(ctx, "", out, errb, "session", "open", "-o", "json")
	var opened struct {
		Session struct {
			ID string `json:"id"`
		} `json:"session"`
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		return json.NewDecoder(strings.NewReader(out.String())).Decode(&opened)
	})
	admin := openSession(t, c.server)
	if _, err := admin.CloseSessions(ctx, wire.SessionCloseRequest{ID: opened.Session.ID}); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		t.Fatal("session open still runs after its session was closed")
	}
	if exitCode(err) != exitSessionClosed {
		t.Errorf("got %v (exit %d), want exit %d", err, exitCode(err), exitSessionClosed)
	}
	dec := json.NewDecoder(strings.NewReader(out.String()))
	var first, change map[string]any
	if err := dec.Decode(&first); err != nil {
		t.Fatal(err)
	}
	if err := dec.Decode(&change); err != nil {
		t.Fatalf("no state change printed after the session: %v (%q)", err, out.String())
	}
	if change["old_state"] != "ACTIVE" || change["new_state"] != "CLOSED" || change["reason"] != "by_server" {
		t.Errorf("got state change %v, want old_state ACTIVE, new_state CLOSED, reason by_server", change)
	}
	if n, err := jsonLines(out.String()); err != nil || n != 2 {
		t.Errorf("session open -o json: %d objects, %v; want the session and its change, a line each", n, err)
	}
}

// TestListenPrintsEachDeliveryOnce: --path '*' beside another path (or a path given
// twice) registered overlapping handlers, each of which printed the delivery.
func TestListenPrintsEachDeliveryOnce(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	ctx := testCtx(t)
	out, id, stop := c.listen(ctx, "--path", "*", "--path", "chat/room1", "--path", "chat/room1")
	defer func() { _ = stop() }()
	for _, m := range []struct{ path, text string }{{"chat/room1", "first"}, {"other", "second"}} {
		if r := c.run(ctx, "", "send", "--session", id, "--path", m.path, m.text); r.err != nil {
			t.Fatalf("send: %v", r.err)
		}
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(out.String(), "second") {
			return errors.New("listen printed " + strconv.Quote(out.String()))
		}
		return nil
	})
	if n := strings.Count(out.String(), "first"); n != 1 {
		t.Errorf("the delivery on chat/room1 was printed %d times, want once: %q", n, out.String())
	}
}

// TestLockAcquireCommandEndedBySignal: a command that a signal ends makes lock
// acquire exit with 128 and the signal's number, as a shell reports it; it exited 1
// ("signal: terminated"). A command stopped because the lock was lost still makes
// acquire exit with the lost lock's status.
func TestLockAcquireCommandEndedBySignal(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	ctx := testCtx(t)
	if r := c.run(ctx, "", "lock", "acquire", "orders/1", "--", "sh", "-c", "kill -TERM $$"); r.exit() != 128+15 {
		t.Errorf("a command ended by SIGTERM: got %v (exit %d), want exit %d", r.err, r.exit(), 128+15)
	}
	r := c.run(ctx, "", "lock", "list", "--prefix", "orders/")
	if r.err != nil || !strings.HasSuffix(r.stdout, "0 locks\n") {
		t.Errorf("lock list: got %q, %v; want the lock released", r.stdout, r.err)
	}

	out, errb := &natstest.Buffer{}, &natstest.Buffer{}
	done := c.start(ctx, "", out, errb, "lock", "acquire", "orders/2", "-o", "json", "--", "sleep", "30")
	var held wire.Lock
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		return json.Unmarshal([]byte(out.String()), &held)
	})
	admin := openSession(t, c.server)
	if _, err := admin.CloseSessions(ctx, wire.SessionCloseRequest{ID: held.Session}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if exitCode(err) != exitSessionClosed {
			t.Errorf("the lock lost while its command ran: got %v (exit %d), want exit %d", err, exitCode(err), exitSessionClosed)
		}
	case <-ctx.Done():
		t.Fatal("lock acquire still runs its command after the lock was lost")
	}
}

// TestLockAcquireCommandThatCannotRun: a command lock acquire cannot run makes it
// exit as a shell would, 127 when there is no such command and 126 when there is one
// that cannot be run, and is found before the lock is taken. It exited 2, as for a
// mistake in roster's own flags, after it had waited for the lock, taken it and
// printed "acquired"; here the lock is held elsewhere, so waiting for it would end
// in a timeout (6).
func TestLockAcquireCommandThatCannotRun(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	ctx := testCtx(t)
	holder := openSession(t, c.server)
	if _, err := holder.Lock(ctx, "orders/1", client.LockOptions{}); err != nil {
		t.Fatal(err)
	}
	notExecutable := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notExecutable, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		command string
		want    int
	}{
		{"/nonexistent/process-order", 127},
		{"no-such-command-in-path", 127},
		{notExecutable, 126},
	} {
		r := c.run(ctx, "", "lock", "acquire", "orders/1", "--wait", "1s", "--", tc.command, "42")
		if r.exit() != tc.want || !strings.Contains(fmt.Sprint(r.err), "cannot run "+tc.command) {
			t.Errorf("%s: got %v (exit %d), want exit %d saying it cannot run %s", tc.command, r.err, r.exit(), tc.want, tc.command)
		}
		if r.stdout != "" {
			t.Errorf("%s: printed %q, want nothing: the lock is not taken for a command that cannot run", tc.command, r.stdout)
		}
	}
}

// TestFiltersLeaveTheCommandsSessionOut: the session a command opens for itself
// matches filters like any other, but has no handler and ends with the command. It
// is left out: send --filter all counted it ("delivered to 2 sessions" beside one
// listener), request --filter all got "gone" from it and exited 7 although the one
// listener answered, and session list, set --filter and close --filter listed,
// updated and closed it. A session given with --session-id stays in.
func TestFiltersLeaveTheCommandsSessionOut(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	ctx := testCtx(t)
	_, id, stop := c.listen(ctx, "--path", "ping", "--reply", "pong")
	defer func() { _ = stop() }()

	if r := c.run(ctx, "", "send", "--filter", "all", "--path", "ping", "x"); r.err != nil || r.stdout != "delivered to 1 session\n" {
		t.Errorf("send --filter all: got %q, %v; want delivered to 1 session (the listener)", r.stdout, r.err)
	}
	r := c.run(ctx, "", "request", "--filter", "all", "--path", "ping", "x")
	if r.err != nil || r.stdout != id+" ok: pong\n1 result\n" {
		t.Errorf("request --filter all: got %q, %v (exit %d); want the listener's pong alone, exit 0", r.stdout, r.err, r.exit())
	}
	if r := c.run(ctx, "", "session", "list"); r.err != nil || !strings.Contains(r.stdout, id) || !strings.HasSuffix(r.stdout, "\n1 session\n") {
		t.Errorf("session list: got %q, %v; want the listener alone", r.stdout, r.err)
	}
	if r := c.run(ctx, "", "session", "set", "--filter", "all", "Seen=yes"); r.err != nil || r.stdout != "1 session updated\n" {
		t.Errorf("session set --filter all: got %q, %v; want the listener alone", r.stdout, r.err)
	}
	if r := c.run(ctx, "", "send", "--filter", `Department is`, "--path", "ping", "x"); r.exit() != 2 || !strings.Contains(r.err.Error(), "offset 13") {
		t.Errorf("an invalid filter: got %v (exit %d), want invalid_filter at offset 13 of the text given", r.err, r.exit())
	}

	owner := openSession(t, c.server)
	as := []string{"--session-id", owner.ID(), "--session-token", owner.Token()}
	if r := c.run(ctx, "", append([]string{"send", "--filter", "all", "--path", "ping", "x"}, as...)...); r.err != nil || r.stdout != "delivered to 2 sessions\n" {
		t.Errorf("send --filter all as a session: got %q, %v; want it and the listener", r.stdout, r.err)
	}
	if r := c.run(ctx, "", "session", "close", "--filter", "Seen is \"yes\""); r.err != nil || r.stdout != "1 session closed\n" {
		t.Errorf("session close --filter: got %q, %v; want the listener alone", r.stdout, r.err)
	}
}

// TestSendMessageID: send run twice with the same --message-id as the same session is
// handled once by a listener (a retry of the command after it failed to learn the
// outcome); another id is another message; a malformed id is refused before
// anything is sent.
func TestSendMessageID(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	ctx := testCtx(t)
	out, id, _ := c.listen(ctx, "--path", "jobs")
	sender := openSession(t, c.server)
	as := []string{"--session-id", sender.ID(), "--session-token", sender.Token()}
	for _, args := range [][]string{
		{"--message-id", "job-1", "first"},
		{"--message-id", "job-1", "first again"},
		{"--message-id", "job-2", "second"},
	} {
		r := c.run(ctx, "", append(append([]string{"send", "--session", id, "--path", "jobs"}, as...), args...)...)
		if r.err != nil || r.stdout != "delivered to 1 session\n" {
			t.Fatalf("send %v: got %q, %v", args, r.stdout, r.err)
		}
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		// Handlers run concurrently: wait for both, in whichever order.
		if got := out.String(); !strings.Contains(got, ": second\n") || !strings.Contains(got, ": first\n") {
			return errors.New("listen printed " + strconv.Quote(got))
		}
		return nil
	})
	if got := out.String(); strings.Count(got, "message on jobs") != 2 || strings.Contains(got, "first again") {
		t.Fatalf("listen printed %q; want first and second once each", got)
	}
	r := c.run(ctx, "", append(append([]string{"send", "--session", id, "--path", "jobs"}, as...), "--message-id", "no spaces", "x")...)
	if !errors.Is(r.err, wire.ErrBadRequest) {
		t.Fatalf("a malformed --message-id: got %v, want bad_request", r.err)
	}
}

// TestListsPrintEmptyArraysAsJSON: session list -o json with nothing to list prints
// "sessions": [], as lock list prints "locks": []; it printed "sessions": null, on
// which jq '.sessions[]' fails ("cannot iterate over null").
func TestListsPrintEmptyArraysAsJSON(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	ctx := testCtx(t)
	for _, tc := range []struct{ key, cmd string }{{"sessions", "session"}, {"locks", "lock"}} {
		r := c.run(ctx, "", tc.cmd, "list", "-o", "json")
		if r.err != nil {
			t.Fatalf("%s list: %v", tc.cmd, r.err)
		}
		var got map[string]json.RawMessage
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || string(got[tc.key]) != "[]" {
			t.Errorf("%s list -o json with none: got %q (%v), want %q: []", tc.cmd, r.stdout, err, tc.key)
		}
	}
}

// TestLongRunningCommandsSayWhenTheConnectionIsLost: listen and session events
// --follow say on stderr that their session lost its connection (and is resumed
// when Roster is back); they said nothing, and seemed to listen while nothing could
// reach them. session open's line for the change names the cause; it ended in a
// blank reason.
func TestLongRunningCommandsSayWhenTheConnectionIsLost(t *testing.T) {
	t.Parallel()
	p := rostertest.Start(t)
	c := cli{t: t, server: p.ClientURL()}
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	lout, lerr := &natstest.Buffer{}, &natstest.Buffer{}
	listenDone := c.start(ctx, "", lout, lerr, "listen")
	oout, oerr := &natstest.Buffer{}, &natstest.Buffer{}
	openDone := c.start(ctx, "", oout, oerr, "session", "open")
	eout, eerr := &natstest.Buffer{}, &natstest.Buffer{}
	eventsDone := c.start(ctx, "", eout, eerr, "session", "events", "--follow", "--kind", "opened")
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(lerr.String(), "listening as session") || !strings.Contains(oout.String(), "Open until interrupted") || !strings.Contains(eout.String(), " opened ") {
			return errors.New("listen, session open or session events has not started")
		}
		return nil
	})
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	const lost = "ACTIVE -> RECOVERING: unavailable: connection to NATS lost"
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(lerr.String(), lost) {
			return fmt.Errorf("listen's stderr %q does not say %q", lerr.String(), lost)
		}
		if !strings.Contains(eerr.String(), lost) {
			return fmt.Errorf("session events --follow's stderr %q does not say %q", eerr.String(), lost)
		}
		if !strings.Contains(oout.String(), "state "+lost+"\n") {
			return fmt.Errorf("session open printed %q, not %q", oout.String(), "state "+lost)
		}
		return nil
	})
	if strings.Contains(lout.String(), "RECOVERING") {
		t.Errorf("listen printed the change on stdout, among deliveries: %q", lout.String())
	}
	cancel()
	<-listenDone
	<-openDone
	<-eventsDone
}

// TestProposedPropertiesTheServerDropsAreNamed: listen and session open say on stderr
// which proposed properties the session did not get: the policy's properties rules
// veto them (here deploy/'s, which keep only Client* keys) without an error, and a
// listen --property Department=Accounts went on waiting for messages sent to
// Department is "Accounts", which could not reach it, without a word.
func TestProposedPropertiesTheServerDropsAreNamed(t *testing.T) {
	t.Parallel()
	p := startDeployPolicy(t)
	c := cli{t: t, server: p.ClientURL()}
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	var running []<-chan error
	for _, command := range []string{"listen", "session open"} {
		out, errb := &natstest.Buffer{}, &natstest.Buffer{}
		args := append(strings.Fields(command), "--user", "alice", "--password", "alice-pw", "--property", "Department=Accounts", "--property", "ClientApp=cli")
		done := c.start(ctx, "", out, errb, args...)
		natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			if !strings.Contains(errb.String(), "property Department") {
				return fmt.Errorf("%s's stderr %q does not name the vetoed property Department", command, errb.String())
			}
			return nil
		})
		if strings.Contains(errb.String(), "ClientApp") {
			t.Errorf("%s: stderr %q names ClientApp, which the session got", command, errb.String())
		}
		running = append(running, done)
	}
	cancel()
	for _, done := range running {
		<-done
	}
}

// startDeployPolicy starts Roster with deploy/'s policy, which admits no anonymous
// connection, and one user: alice (password alice-pw, role user).
func startDeployPolicy(t *testing.T) *roster.Process {
	t.Helper()
	usersFile := filepath.Join(t.TempDir(), "users.yaml")
	if err := auth.AddUser(usersFile, "alice", "alice-pw", []string{"user"}, nil, bcrypt.MinCost, false); err != nil {
		t.Fatal(err)
	}
	return rostertest.Start(t, rostertest.WithConfig(func(c *roster.Config) {
		c.Auth.UsersFile = usersFile
		c.Auth.PolicyFile = "../../deploy/roster/policy.yaml"
	}))
}

// TestListsKeepTheirColumns: session list and lock list keep every value under its
// heading whatever its length. Fixed widths did not: a RECOVERING session (the
// state is 10 letters, the column was 8) pushed its principal, roles and
// properties out from under their headings, and so did a lock name over 24.
func TestListsKeepTheirColumns(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	ctx := testCtx(t)
	lost := openSession(t, c.server)
	lost.Client().Conn().Close() // the registry counts its connection lost: RECOVERING
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		r := c.run(ctx, "", "session", "list")
		if !strings.Contains(r.stdout, "RECOVERING") {
			return fmt.Errorf("session list: no RECOVERING session yet in %q (%v)", r.stdout, r.err)
		}
		return nil
	})
	openSession(t, c.server) // and an ACTIVE one
	r := c.run(ctx, "", "session", "list")
	checkColumns(t, "session list", r.stdout, 2)

	owner := openSession(t, c.server)
	long := "orders/region-eu-west/customer-1234567/item-42"
	if _, err := owner.Lock(ctx, long, client.LockOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Lock(ctx, "orders/7", client.LockOptions{}); err != nil {
		t.Fatal(err)
	}
	r = c.run(ctx, "", "lock", "list", "--prefix", "orders/")
	checkColumns(t, "lock list", r.stdout, 2)
}

// checkColumns checks that each of the rows under out's heading line has a value
// starting at every heading's column, and that there are rows of them.
func checkColumns(t *testing.T, what, out string, rows int) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != rows+2 { // heading, rows, the count
		t.Fatalf("%s: got %q, want a heading, %d rows and a count", what, out, rows)
	}
	var starts []int
	for i := range len(lines[0]) {
		if lines[0][i] != ' ' && (i == 0 || lines[0][i-1] == ' ') {
			starts = append(starts, i)
		}
	}
	for _, line := range lines[1 : rows+1] {
		for _, i := range starts {
			if i >= len(line) || line[i] == ' ' || (i > 0 && line[i-1] != ' ') {
				t.Errorf("%s: the value at column %d of %q is not under its heading in\n%s", what, i, line, out)
				break
			}
		}
	}
}
