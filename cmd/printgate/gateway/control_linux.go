package gateway

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// umask sets the process umask and returns the previous one.
func umask(m int) int { return syscall.Umask(m) }

// peerUID returns the uid of the process at the other end of the Unix socket fd.
func peerUID(fd uintptr) (int, error) {
	cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return 0, err
	}
	return int(cred.Uid), nil
}
