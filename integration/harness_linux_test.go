//go:build linux

package integration

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// endWithTheTests makes the kernel kill c's process when this test process ends,
// however it ends: go test's -timeout panics without running any t.Cleanup, and a
// test binary killed (a CI job cancelled, Ctrl-C twice) runs none either. Strictly,
// when the thread that started c ends; Go ends a thread only when a goroutine locked
// to it by runtime.LockOSThread returns, which nothing in these tests does
// (go.dev/issue/27505).
func endWithTheTests(c *exec.Cmd) {
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// TestProcessesEndWithTheTests: a roster process that a test started ends when the
// test process ends without running its clean-ups, as at go test's -timeout or when
// the test binary is killed. Such processes ran on — a cluster's three nodes and
// up to eight service instances, on their ports, over their data directories —
// until someone killed them by hand. The test runs itself as the child that starts
// a process and is then killed.
func TestProcessesEndWithTheTests(t *testing.T) {
	if dir := os.Getenv("ROSTER_TEST_ORPHAN_DIR"); dir != "" {
		p := &proc{name: "orphan", log: filepath.Join(dir, "serve.log"),
			args: []string{"serve", "--services", "none", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data"), "--log-level", "warn"}}
		p.start(t)
		fmt.Printf("pid %d\n", p.cmd.Process.Pid)
		time.Sleep(time.Hour) // until killed
	}
	dir := t.TempDir()
	child := exec.Command(os.Args[0], "-test.run=^TestProcessesEndWithTheTests$")
	child.Env = append(os.Environ(), "ROSTER_TEST_ORPHAN_DIR="+dir, childBinEnv+"="+rosterBin)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	pid := 0
	for lines := bufio.NewScanner(out); pid == 0 && lines.Scan(); {
		_, _ = fmt.Sscanf(lines.Text(), "pid %d", &pid)
	}
	if pid == 0 {
		t.Fatal("the child test process started no roster process")
	}
	// Gone, even when this test fails: with its data directory.
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if running(pid) {
			return fmt.Errorf("roster process %d outlived the killed test process that started it", pid)
		}
		return nil
	})
}

// running reports whether process pid exists and is not a zombie: an orphan's
// reaper may be slow to collect it, or not reap at all.
func running(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if errors.Is(err, os.ErrNotExist) {
		return false
	}
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses and may hold any.
	state := strings.TrimSpace(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return !strings.HasPrefix(state, "Z") && !strings.HasPrefix(state, "X")
}
