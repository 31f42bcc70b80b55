// Package tunnel runs the userspace WireGuard device: the gateway key, its one UDP port, peers
// applied from the roster as one validated diff, the UAPI socket for wg(8), and peer stats.
package tunnel

import (
	"errors"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Peer is the device-level view of one peer: what WireGuard needs, nothing more.
type Peer struct {
	PublicKey wgtypes.Key
	// PresharedKey is mixed into the handshake; the zero key means none.
	PresharedKey wgtypes.Key
	// AllowedIPs are the peer's own addresses (a /32 and a /128).
	AllowedIPs []netip.Prefix
	// Endpoint is an initial endpoint; the zero value means none (the peer dials us).
	Endpoint netip.AddrPort
	// PersistentKeepalive; zero means off.
	PersistentKeepalive time.Duration
}

// PeerStats is what the device knows of a peer right now.
type PeerStats struct {
	PublicKey     wgtypes.Key
	Endpoint      netip.AddrPort
	LastHandshake time.Time // zero: never
	RxBytes       int64
	TxBytes       int64
}

// Config configures a Device.
type Config struct {
	// PrivateKey is the gateway's key.
	PrivateKey wgtypes.Key
	// ListenPort is the UDP port; zero picks a free one (tests).
	ListenPort int
	// TUN is the packet device under WireGuard (a netstack.Stack's TUN).
	TUN tun.Device
	// Bind is the UDP transport; nil means wireguard-go's default host UDP bind.
	Bind conn.Bind
	// InterfaceName names the UAPI socket (/var/run/wireguard/NAME.sock) so that
	// `wg show NAME` reads the live device; empty means no UAPI socket.
	InterfaceName string
	// Logf logs at verbose level; nil discards.
	Logf func(format string, args ...any)
}

// Device is a running WireGuard device.
type Device struct{}

var errUnbuilt = errors.New("tunnel: not built yet")

// New creates the device and brings it up with no peers.
func New(cfg Config) (*Device, error) { return nil, errUnbuilt }

// Apply validates the whole peer set first, then applies only the difference to the device:
// new and changed peers are set, peers no longer present are removed. Unchanged peers keep
// their sessions. On a validation error nothing is changed.
func (d *Device) Apply(peers []Peer) error { return errUnbuilt }

// Stats returns the live stats of every peer on the device.
func (d *Device) Stats() ([]PeerStats, error) { return nil, errUnbuilt }

// ListenPort returns the UDP port the device is bound to.
func (d *Device) ListenPort() int { return 0 }

// PublicKey returns the gateway's public key.
func (d *Device) PublicKey() wgtypes.Key { return wgtypes.Key{} }

// Close takes the device down and closes the TUN under it. A second Close returns an error
// wrapping net.ErrClosed.
func (d *Device) Close() error { return errUnbuilt }
