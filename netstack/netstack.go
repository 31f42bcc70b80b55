// Package netstack is the userspace TCP/IP stack (gVisor) under the WireGuard device; it is the
// only package in printgate that imports gVisor, and it offers a net-shaped API.
package netstack

import (
	"context"
	"errors"
	"net"
	"net/netip"

	"golang.zx2c4.com/wireguard/tun"
)

// Config configures a Stack. The zero value of each field is documented.
type Config struct {
	// Addrs are the stack's own addresses: the gateway's first, then one per printer.
	// More can be added later with AddAddr.
	Addrs []netip.Addr
	// MTU is the tunnel MTU; zero means 1420 (what wg-quick uses over IPv6 paths).
	MTU int
	// TCPReceiveBuffer and TCPSendBuffer bound each connection's buffers in bytes; zero means
	// the package defaults (documented with the constants), sized for a Raspberry Pi.
	TCPReceiveBuffer int
	TCPSendBuffer    int
	// Logf logs at verbose level; nil discards.
	Logf func(format string, args ...any)
}

// Stack is a gVisor network stack exposed to wireguard-go as a tun.Device.
type Stack struct{}

var errUnbuilt = errors.New("netstack: not built yet")

// New creates a stack with RACK off, reno congestion control and bounded buffers.
func New(cfg Config) (*Stack, error) { return nil, errUnbuilt }

// TUN returns the device end that wireguard-go reads and writes packets through.
func (s *Stack) TUN() tun.Device { return nil }

// AddAddr adds an address of this stack (a printer's tunnel address).
func (s *Stack) AddAddr(a netip.Addr) error { return errUnbuilt }

// ListenTCP listens on one of the stack's addresses.
func (s *Stack) ListenTCP(ap netip.AddrPort) (net.Listener, error) { return nil, errUnbuilt }

// DialTCP opens a TCP connection from the stack (used by clients in tests).
func (s *Stack) DialTCP(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
	return nil, errUnbuilt
}

// CloseConns aborts every TCP connection whose remote address matches, with a RST, and
// returns how many it closed. Revocation calls it with the revoked peer's addresses.
func (s *Stack) CloseConns(match func(remote netip.Addr) bool) int { return 0 }

// Close shuts the stack down. Close the WireGuard device first. A second Close returns an
// error wrapping net.ErrClosed.
func (s *Stack) Close() error { return errUnbuilt }
