//go:build !linux

package control

import "errors"

// The gateway (the server side) runs on Linux; these keep the package building where only the
// client runs (`printgate connect` on Windows and macOS). A server here refuses every caller.

// umask does nothing here; ListenUnix's Chmod still makes the socket 0600.
func umask(m int) int { return m }

// peerUID cannot read the peer's credentials here.
func peerUID(uintptr) (int, error) {
	return 0, errors.New("peer credentials are not supported on this platform")
}
