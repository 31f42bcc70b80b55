//go:build unix

package enroll

import (
	"errors"
	"os"
	"syscall"
)

// errLockHeld is flockExclusive's answer when another process holds the lock.
var errLockHeld = errors.New("lock held by another process")

// flockExclusive takes an exclusive flock(2) on f without waiting.
func flockExclusive(f *os.File) error {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return errLockHeld
	}
	return err
}

// funlock releases the lock flockExclusive took.
func funlock(f *os.File) { syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }
