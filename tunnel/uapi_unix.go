//go:build !windows

package tunnel

import (
	"net"

	"golang.zx2c4.com/wireguard/ipc"
)

// uapiListen opens the UAPI socket NAME.sock in wireguard-go's socket directory.
func uapiListen(name string) (net.Listener, error) {
	f, err := ipc.UAPIOpen(name)
	if err != nil {
		return nil, err
	}
	l, err := ipc.UAPIListen(name, f)
	f.Close() // UAPIListen holds its own descriptor
	return l, err
}
