package enroll

import (
	"errors"
	"os"

	"golang.org/x/sys/windows"
)

// errLockHeld is flockExclusive's answer when another process holds the lock.
var errLockHeld = errors.New("lock held by another process")

// flockExclusive locks the first byte of f exclusively without waiting (LockFileEx). The
// gateway does not run on Windows; this keeps the package building for `printgate connect`.
func flockExclusive(f *os.File) error {
	var ol windows.Overlapped
	err := windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ol)
	if errors.Is(err, windows.ERROR_LOCK_VIOLATION) {
		return errLockHeld
	}
	return err
}

// funlock releases the lock flockExclusive took.
func funlock(f *os.File) {
	var ol windows.Overlapped
	windows.UnlockFileEx(windows.Handle(f.Fd()), 0, 1, 0, &ol)
}
