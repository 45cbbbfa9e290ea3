package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/seed-3c836eab/roster/pkg/natstest"
)

// TestUserAddAsksForThePasswordWithoutEcho: user add run on a terminal asks for the
// password on stderr and does not echo it. It waited without a word, and the
// password typed stayed on the screen (and in its scrollback) — while the help says
// it is read from standard input so that it is seen nowhere. The terminal's echo is
// on again afterwards.
func TestUserAddAsksForThePasswordWithoutEcho(t *testing.T) {
	t.Parallel()
	master, tty := openPTY(t)
	file := filepath.Join(t.TempDir(), "users.yaml")
	root := newRootCmd()
	root.SetArgs([]string{"user", "add", "alice", "--users-file", file, "--bcrypt-cost", "4"})
	root.SetIn(tty)
	root.SetOut(&bytes.Buffer{})
	var errb natstest.Buffer
	root.SetErr(&errb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	// Type the password once user add reads (asked for it, or after a while).
	for range 100 {
		if strings.Contains(errb.String(), "Password for alice: ") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(errb.String(), "Password for alice: ") {
		t.Errorf("user add on a terminal: stderr %q, want it to ask for alice's password", errb.String())
	}
	if _, err := master.Write([]byte("s3cret-pw\n")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("user add: %v", err)
	}
	// What the terminal shows: the echo if any, then a marker written after it.
	if _, err := tty.Write([]byte("END\n")); err != nil {
		t.Fatal(err)
	}
	var screen []byte
	buf := make([]byte, 256)
	for !bytes.Contains(screen, []byte("END")) {
		n, err := master.Read(buf)
		if err != nil {
			t.Fatalf("reading the terminal: %v (so far %q)", err, screen)
		}
		screen = append(screen, buf[:n]...)
	}
	if bytes.Contains(screen, []byte("s3cret")) {
		t.Errorf("the terminal echoed the password: it shows %q", screen)
	}
	if st, err := getTermios(tty); err != nil || st.Lflag&syscall.ECHO == 0 {
		t.Errorf("the terminal's echo is not on again after user add (%v)", err)
	}
	data, err := os.ReadFile(file)
	if err != nil || !strings.Contains(string(data), "alice:") {
		t.Errorf("users file: %q (%v), want alice in it", data, err)
	}

	// Ctrl-C at the question leaves the echo on too.
	root = newRootCmd()
	root.SetArgs([]string{"user", "add", "bob", "--users-file", file, "--bcrypt-cost", "4"})
	root.SetIn(tty)
	var errb2 natstest.Buffer
	root.SetErr(&errb2)
	ictx, interrupt := context.WithCancelCause(ctx)
	go func() { done <- root.ExecuteContext(ictx) }()
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(errb2.String(), "Password for bob: ") {
			return fmt.Errorf("user add has not asked for bob's password: %q", errb2.String())
		}
		return nil
	})
	interrupt(signalError{os.Interrupt})
	if err := <-done; exitCode(err) != 130 {
		t.Errorf("user add interrupted at the question: got %v (exit %d), want exit 130", err, exitCode(err))
	}
	if st, err := getTermios(tty); err != nil || st.Lflag&syscall.ECHO == 0 {
		t.Errorf("the terminal's echo is not on again after user add was interrupted (%v)", err)
	}
}

// openPTY opens a pseudo-terminal: master is what a terminal emulator holds, tty the
// terminal a program reads and writes.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { _ = master.Close() })
	var unlock int32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); errno != 0 {
		t.Fatalf("unlock pty: %v", errno)
	}
	var n uint32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); errno != 0 {
		t.Fatalf("pty number: %v", errno)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tty.Close() })
	return master, tty
}

func getTermios(f *os.File) (*syscall.Termios, error) {
	var st syscall.Termios
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TCGETS, uintptr(unsafe.Pointer(&st))); errno != 0 {
		return nil, errno
	}
	return &st, nil
}
