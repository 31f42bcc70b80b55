package tunnel

import (
	"errors"
	"net"
)

// uapiListen is not offered on Windows: only the gateway names a UAPI socket, and the gateway
// runs on Linux. `printgate connect` (which runs on Windows) never asks for one.
func uapiListen(name string) (net.Listener, error) {
	return nil, errors.New("uapi socket not supported on windows")
}
