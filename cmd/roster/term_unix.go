//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package main

import (
	"errors"
	"os"
	"syscall"
	"unsafe"
)

// echoOff turns off the echo of the terminal f, for a password typed on it, and
// returns the function that turns it on again. It returns errNotTerminal when f is
// not a terminal (a pipe, a file, /dev/null).
func echoOff(f *os.File) (restore func(), err error) {
	conn, err := f.SyscallConn()
	if err != nil {
		return nil, errNotTerminal
	}
	var old syscall.Termios
	var errno syscall.Errno
	if err := conn.Control(func(fd uintptr) { errno = ioctl(fd, ioctlGetTermios, &old) }); err != nil || errno != 0 {
		return nil, errNotTerminal
	}
	quiet := old
	quiet.Lflag &^= syscall.ECHO
	quiet.Lflag |= syscall.ICANON | syscall.ISIG // a line, and Ctrl-C still interrupts
	if err := conn.Control(func(fd uintptr) { errno = ioctl(fd, ioctlSetTermios, &quiet) }); err != nil || errno != 0 {
		return nil, errors.Join(err, errno)
	}
	return func() { _ = conn.Control(func(fd uintptr) { ioctl(fd, ioctlSetTermios, &old) }) }, nil
}

func ioctl(fd, req uintptr, t *syscall.Termios) syscall.Errno {
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, req, uintptr(unsafe.Pointer(t)))
	return errno
}
