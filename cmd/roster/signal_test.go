package main

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestSecondSignalEndsTheProcess: the first SIGTERM starts a stop, which may wait for
// services to drain; a second one ends the process at once. The test runs itself as
// the process: the child stands for a roster whose stop never ends.
func TestSecondSignalEndsTheProcess(t *testing.T) {
	if os.Getenv("ROSTER_TEST_SIGNAL_CHILD") == "1" {
		ctx, stop := stopOnSignal()
		defer stop()
		os.Stdout.WriteString("ready\n")
		<-ctx.Done()
		os.Stdout.WriteString("stopping\n")
		time.Sleep(time.Minute) // a stop that hangs
		os.Exit(3)
	}
	c := exec.Command(os.Args[0], "-test.run=^TestSecondSignalEndsTheProcess$")
	c.Env = append(os.Environ(), "ROSTER_TEST_SIGNAL_CHILD=1")
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Process.Kill() })
	lines := bufio.NewScanner(out)
	expect := func(want string) {
		t.Helper()
		for lines.Scan() {
			if lines.Text() == want {
				return
			}
		}
		t.Fatalf("the child ended before printing %q", want)
	}
	expect("ready")
	if err := c.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	expect("stopping")
	// The handler is let go just after the context ends: a signal sent in between is
	// still caught, so send again until one is not.
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for {
		_ = c.Process.Signal(syscall.SIGTERM)
		select {
		case <-tick.C:
			continue
		case <-deadline:
			t.Fatal("a second SIGTERM did not end the process")
		case err := <-done:
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("the child ended with %v, want death by SIGTERM", err)
			}
			if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
				t.Fatalf("the child ended with %v, want death by SIGTERM", err)
			}
			return
		}
	}
}

// TestHangupStopsAsTermDoes: SIGHUP (the terminal of a roster serve or listen closed,
// or a reload meant for another daemon) stops roster as SIGTERM does: services drain,
// a session the command opened is closed, and a command it cut short exits 129. It
// had its default effect: the process died at once, in the middle of whatever it
// was doing, without a line in its log.
func TestHangupStopsAsTermDoes(t *testing.T) {
	if os.Getenv("ROSTER_TEST_SIGNAL_CHILD") == "1" {
		waitForStopSignal()
	}
	said, err := signalChild(t, exec.Command(os.Args[0], "-test.run=^TestHangupStopsAsTermDoes$"), syscall.SIGHUP)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 129 || said != "interrupted (SIGHUP)" {
		t.Fatalf("the child said %q and ended with %v, want \"interrupted (SIGHUP)\" and exit status 129", said, err)
	}
}

// TestHangupIgnoredAtStartStaysIgnored: roster started with SIGHUP ignored (nohup
// roster serve &, or a supervisor that ignores it) keeps running when its terminal
// closes, as the one who started it asked. Go's signal.Notify undoes that ignoring,
// and since roster asked for SIGHUP to stop it as SIGTERM does, a serve started under
// nohup stopped when its terminal closed. Here the child ignores SIGHUP from its
// start (sh's trap "" HUP, kept across exec), is sent SIGHUP and then SIGTERM, and
// must report the SIGTERM.
func TestHangupIgnoredAtStartStaysIgnored(t *testing.T) {
	if os.Getenv("ROSTER_TEST_SIGNAL_CHILD") == "1" {
		waitForStopSignal()
	}
	// Both pending at once, the lower-numbered SIGHUP is seen first.
	said, err := signalChild(t, exec.Command("sh", "-c", `trap "" HUP; exec "$0" "$@"`, os.Args[0], "-test.run=^TestHangupIgnoredAtStartStaysIgnored$"),
		syscall.SIGHUP, syscall.SIGTERM)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 143 || said != "interrupted (SIGTERM)" {
		t.Fatalf("the child said %q and ended with %v, want \"interrupted (SIGTERM)\" and exit status 143: SIGHUP, ignored at its start, must stay ignored", said, err)
	}
}

// waitForStopSignal is the child's part of a signal test: it says it is ready,
// waits for stopOnSignal to stop it, says why and exits with the code roster would.
func waitForStopSignal() {
	ctx, stop := stopOnSignal()
	defer stop()
	os.Stdout.WriteString("ready\n")
	<-ctx.Done()
	err := context.Cause(ctx)
	os.Stdout.WriteString(err.Error() + "\n")
	os.Exit(exitCode(err))
}

// signalChild starts c, a run of this test binary whose test calls
// waitForStopSignal, sends it sigs once it is ready, and returns what it said
// stopped it and how it ended.
func signalChild(t *testing.T, c *exec.Cmd, sigs ...syscall.Signal) (string, error) {
	t.Helper()
	c.Env = append(os.Environ(), "ROSTER_TEST_SIGNAL_CHILD=1")
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Process.Kill() })
	lines := bufio.NewScanner(out)
	if !lines.Scan() || lines.Text() != "ready" {
		t.Fatalf("the child did not start: %q", lines.Text())
	}
	for _, sig := range sigs {
		if err := c.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
	}
	var said string
	if lines.Scan() {
		said = lines.Text()
	}
	return said, c.Wait()
}
