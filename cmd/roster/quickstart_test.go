package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// quickStart returns the commands of README.md's "Quick start" by terminal: the
// ```sh blocks of that section whose first line is "# terminal N…".
func quickStart(t *testing.T) map[int][]string {
	t.Helper()
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n## Quick start\n")
	if !ok {
		t.Fatal(`README.md has no "## Quick start" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	terminals := map[int][]string{}
	sc := bufio.NewScanner(strings.NewReader(section))
	inBlock, term := false, 0
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "```sh":
			inBlock, term = true, 0
		case inBlock && line == "```":
			inBlock = false
		case inBlock && term == 0:
			var n int
			if _, err := fmt.Sscanf(line, "# terminal %d", &n); err != nil {
				t.Fatalf("a quick-start block starts with %q, not # terminal N", line)
			}
			term = n
		case inBlock && strings.TrimSpace(line) != "":
			terminals[term] = append(terminals[term], line)
		}
	}
	return terminals
}

// shell runs one README line with sh in its own process group, as a terminal
// would, with the built roster first on PATH.
func shell(line string, env []string) *exec.Cmd {
	c := exec.Command("sh", "-c", line)
	c.Env = env
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return c
}

// interrupt sends SIGINT to the command's process group (Ctrl-C) and waits for it
// and for roster, which holds its output open, to end. sh itself may die of the
// signal (it is not interactive); roster must end by itself.
func interrupt(t *testing.T, c *exec.Cmd, done <-chan error) error {
	t.Helper()
	_ = syscall.Kill(-c.Process.Pid, syscall.SIGINT)
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGINT {
				return nil
			}
		}
		return err
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		return errors.New(c.String() + " did not stop within 30s of SIGINT")
	}
}

// TestQuickStart runs README.md's quick start as written: terminal 1's make run, in
// the repository's root, on a free port and a data directory of its own (through
// ROSTER_LISTEN and ROSTER_DATA_DIR, which the roster serve it runs reads); the
// others are run by sh with the roster binary on PATH and ROSTER_SERVER pointing at
// that port. Ctrl-C ends make run as it ends make: by the signal, not with an error
// (go run exits 1 when interrupted, and make then reported "Error 1").
func TestQuickStart(t *testing.T) {
	terms := quickStart(t)
	if len(terms[1]) != 1 || terms[1][0] != "make run" {
		t.Fatalf("terminal 1: got %q, want make run", terms[1])
	}
	if len(terms[2]) != 1 || len(terms[3]) == 0 {
		t.Fatalf("want one command in terminal 2 and some in terminal 3; got %v", terms)
	}

	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "roster"), ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	env := append(os.Environ(),
		"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"ROSTER_SERVER=nats://"+addr,
		"ROSTER_LISTEN="+addr,
		"ROSTER_DATA_DIR="+t.TempDir(),
		"ROSTER_SYNC_INTERVAL=1m",
	)

	// Terminal 1, with make's own variables left out: make run is not a sub-make of
	// a make that runs these tests.
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed: the quick start's terminal 1 needs it")
	}
	var serveLog natstest.Buffer
	serve := shell(terms[1][0], slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		return strings.HasPrefix(kv, "MAKEFLAGS=") || strings.HasPrefix(kv, "MAKELEVEL=") || strings.HasPrefix(kv, "MFLAGS=")
	}))
	serve.Dir = "../.."
	serve.Stdout, serve.Stderr = &serveLog, &serveLog
	serveDone := start(t, serve)
	// make run builds roster first.
	natstest.CheckFor(t, 2*time.Minute, 20*time.Millisecond, func() error {
		if !strings.Contains(serveLog.String(), "roster listening") {
			return errors.New("serve has not started:\n" + serveLog.String())
		}
		return nil
	})
	defer func() {
		err := interrupt(t, serve, serveDone)
		if log := serveLog.String(); err != nil || !strings.Contains(log, "embedded NATS server stopped") || strings.Contains(log, "***") {
			// make marks a failed recipe with "make: *** [Makefile:N: run] Error 1".
			t.Errorf("terminal 1 after Ctrl-C: %v\n%s", err, log)
		}
	}()

	// Terminal 2.
	var listenOut, listenErr natstest.Buffer
	listen := shell(terms[2][0], env)
	listen.Stdout, listen.Stderr = &listenOut, &listenErr
	listenDone := start(t, listen)
	natstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(listenErr.String(), "listening as session") {
			return fmt.Errorf("terminal 2 is not listening yet: %q", listenErr.String())
		}
		return nil
	})

	// Terminal 3, one command after the other; each must succeed.
	var out3 strings.Builder
	for _, line := range terms[3] {
		c := shell(line, env)
		var out natstest.Buffer
		c.Stdout, c.Stderr = &out, &out
		select {
		case err := <-start(t, c):
			if err != nil {
				t.Fatalf("terminal 3: %s: %v\n%s", line, err, out.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("terminal 3: %s did not finish within 30s:\n%s", line, out.String())
		}
		out3.WriteString(out.String())
	}
	for _, want := range []string{"delivered to 1 session\n", "acquired orders/42 (exclusive, session scope) token ", "holding orders/42\n"} {
		if !strings.Contains(out3.String(), want) {
			t.Errorf("terminal 3 printed %q, want it to contain %q", out3.String(), want)
		}
	}

	// Terminal 2 printed the message; Ctrl-C ends it cleanly.
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(listenOut.String(), "message on chat/room1 from ") || !strings.Contains(listenOut.String(), "(application/octet-stream): hello\n") {
			return fmt.Errorf("terminal 2 printed %q", listenOut.String())
		}
		return nil
	})
	if err := interrupt(t, listen, listenDone); err != nil {
		t.Errorf("terminal 2 after Ctrl-C: %v\n%s", err, listenErr.String())
	}
}

func start(t *testing.T, c *exec.Cmd) <-chan error {
	t.Helper()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	t.Cleanup(func() { _ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL) })
	return done
}
