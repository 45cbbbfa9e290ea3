//go:build !(linux || darwin || dragonfly || freebsd || netbsd || openbsd)

package main

import "os"

// echoOff cannot tell a terminal here: a password is read as from a pipe.
func echoOff(*os.File) (restore func(), err error) { return nil, errNotTerminal }
