//go:build !linux

package gateway

import "errors"

// The gateway runs on Linux; these keep the package building for the other platforms
// `printgate connect` runs on. The control socket then refuses every caller (fail closed).

// umask does nothing here; listenControl's Chmod still makes the socket 0600.
func umask(m int) int { return m }

// peerUID cannot read the peer's credentials here.
func peerUID(fd uintptr) (int, error) {
	return 0, errors.New("peer credentials not supported on this platform")
}
