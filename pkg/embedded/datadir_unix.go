//go:build unix

package embedded

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDataDir takes an exclusive lock on dir for this server. nats-server keeps no
// lock on its store, so a second server given the same dir (a second roster serve on
// another port) ran JetStream over the same files, each with its own view of them.
// The lock is flock(2) on a file in dir: the kernel drops it when the process ends,
// however it ends, so a crash never leaves the dir locked.
func lockDataDir(dir string) (release func(), err error) {
	name := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data dir lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data dir %s is in use by another running server; each server needs a data dir of its own", dir)
		}
		return nil, fmt.Errorf("data dir lock %s: %w", name, err)
	}
	return func() { f.Close() }, nil
}
