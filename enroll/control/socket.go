package control

import (
	"errors"
	"fmt"
	"net"
	"os"
)

// ListenUnix creates the control socket at path, mode 0600 from its creation, replacing a
// stale socket file (the caller holds the state directory's lock, so one there is a crashed
// daemon's). The socket file is removed when the listener closes. A client that connects
// before Serve runs waits in the listen backlog for its answer.
func ListenUnix(path string) (*net.UnixListener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control socket %s: remove stale: %w", path, err)
	}
	old := umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return ln, nil
}

// UnixPeerAllowed checks a Unix socket caller's credentials: root or this process's own user.
// For Server.Allow. Where the credentials cannot be read (platforms other than Linux, which
// run only the client side), every caller is refused.
func UnixPeerAllowed(c net.Conn) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("not a unix socket: %T", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var uid int
	var cerr error
	if err := raw.Control(func(fd uintptr) { uid, cerr = peerUID(fd) }); err != nil {
		return err
	}
	if cerr != nil {
		return cerr
	}
	if uid != 0 && uid != os.Getuid() {
		return fmt.Errorf("uid %d may not use the control socket", uid)
	}
	return nil
}
