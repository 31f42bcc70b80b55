// Package netstack is the userspace TCP/IP stack (gVisor) under the WireGuard device; it is the
// only package in printgate that imports gVisor, and it offers a net-shaped API.
//
// A Stack has one NIC. Its link end is a bounded packet queue that wireguard-go reads and writes
// through TUN(); the stack itself owns only the tunnel addresses it was given. With SetRelay, a
// gateway of a mesh hands packets for other gateways' addresses back to WireGuard in front of
// the stack (relay.go). Nothing here opens a host socket.
//
// Life cycle (call order):
//
//	New ──▶ AddAddr / ListenTCP / DialTCP / CloseConns / SetRelay ... ──▶ [WireGuard device Close] ──▶ Close
//
// Close the WireGuard device (which closes TUN) before Close: the device's goroutines read and
// write the TUN until the device is down (wireguard-go #134).
package netstack

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// Tuning defaults, sized for a Raspberry Pi (1 GiB RAM on a Pi 3/4, 512 MiB on a Zero 2 W).
//
// The buffers bound each TCP connection. A 1 MiB receive window covers the bandwidth-delay
// product of a LAN upload at 50 MB/s with 20 ms of queueing, or a WAN phone at 80 Mbit/s and
// 100 ms RTT; more only adds memory (Tailscale's 8/6 MiB targets 10 Gbit/s servers). gVisor
// auto-tunes each receive buffer from DefaultTCPReceiveBuffer/4 up to the bound, so idle and
// slow connections stay small. With ten busy connections the stack holds at most ~15 MiB.
const (
	// DefaultMTU is the tunnel MTU when Config.MTU is zero.
	DefaultMTU = 1420
	// DefaultTCPReceiveBuffer bounds each connection's receive buffer (bytes).
	DefaultTCPReceiveBuffer = 1 << 20
	// DefaultTCPSendBuffer bounds each connection's send buffer (bytes).
	DefaultTCPSendBuffer = 512 << 10
	// DefaultQueueSize is the number of outbound packets the link queue holds before the
	// stack sees "no buffer space" (and TCP backs off). 512 packets of 1420 bytes is 0.7 MiB:
	// enough to absorb a burst while wireguard-go encrypts, small enough to keep latency and
	// RSS low. See BenchmarkTUNTuning in tunnel/ and bench/throughput/RESULTS.md.
	DefaultQueueSize = 512
	// DefaultBatchSize is the most packets handed to wireguard-go per TUN Read.
	DefaultBatchSize = 64
)

const nicID tcpip.NICID = 1

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
	// QueueSize is the outbound packet queue length; zero means DefaultQueueSize.
	QueueSize int
	// BatchSize is the most packets per TUN Read; zero means DefaultBatchSize.
	BatchSize int
	// RelayQueueSize is the relay queue length in packets (see SetRelay); zero means
	// DefaultQueueSize. Its max(MTU, 1500)-byte slots are allocated when the relay is first
	// turned on: 0.7 MiB at the defaults.
	RelayQueueSize int
	// Logf logs verbose detail; nil discards. The stack has no error log: every error is
	// returned to its caller.
	Logf func(format string, args ...any)
}

// Stack is a gVisor network stack exposed to wireguard-go as a tun.Device.
type Stack struct {
	logf  func(format string, args ...any)
	mtu   int
	ep    *link
	stack *stack.Stack
	tun   *tunDevice

	mu struct {
		sync.Mutex
		addrs  map[netip.Addr]bool
		closed bool
	}
}

// New creates a stack with RACK off, reno congestion control and bounded buffers.
func New(cfg Config) (*Stack, error) {
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	if mtu < 1280 || mtu > 65535 {
		return nil, fmt.Errorf("netstack: mtu %d out of range [1280, 65535]", mtu)
	}
	rcv, snd := cfg.TCPReceiveBuffer, cfg.TCPSendBuffer
	if rcv == 0 {
		rcv = DefaultTCPReceiveBuffer
	}
	if snd == 0 {
		snd = DefaultTCPSendBuffer
	}
	if rcv < tcp.MinBufferSize || snd < tcp.MinBufferSize {
		return nil, fmt.Errorf("netstack: tcp buffers %d/%d below minimum %d", rcv, snd, tcp.MinBufferSize)
	}
	queue, batch := cfg.QueueSize, cfg.BatchSize
	if queue == 0 {
		queue = DefaultQueueSize
	}
	if batch == 0 {
		batch = DefaultBatchSize
	}
	relayQueue := cfg.RelayQueueSize
	if relayQueue == 0 {
		relayQueue = DefaultQueueSize
	}
	if queue < 1 || batch < 1 || batch > 1024 || relayQueue < 1 {
		return nil, fmt.Errorf("netstack: queue size %d, batch size %d or relay queue size %d out of range", queue, batch, relayQueue)
	}
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}

	st := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		HandleLocal:        true,
	})
	s := &Stack{logf: logf, mtu: mtu, stack: st, ep: newLink(queue, uint32(mtu))}
	s.mu.addrs = map[netip.Addr]bool{}
	if err := s.tune(rcv, snd); err != nil {
		st.Destroy()
		return nil, err
	}
	if err := st.CreateNIC(nicID, s.ep); err != nil {
		st.Destroy()
		return nil, fmt.Errorf("netstack: create nic: %v", err)
	}
	// The stack answers only for its own addresses; everything else leaves through the tunnel,
	// where WireGuard's allowed IPs decide. Forwarding stays off (the gVisor default).
	st.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	s.tun = newTUN(s.ep, mtu, batch)
	s.tun.ringSlots = relayQueue
	for _, a := range cfg.Addrs {
		if err := s.AddAddr(a); err != nil {
			st.Destroy()
			return nil, err
		}
	}
	return s, nil
}

// timeWaitTimeout is how long a connection closed here first stays in TIME_WAIT.
const timeWaitTimeout = 5 * time.Second

// tune sets the TCP options Tailscale found necessary for gVisor behind WireGuard.
func (s *Stack) tune(rcv, snd int) error {
	sack := tcpip.TCPSACKEnabled(true)
	// RACK on top of SACK performs badly in gVisor (tailscale 83808029d); plain SACK recovery.
	recovery := tcpip.TCPRecovery(0)
	// Cubic in gVisor can overflow (gvisor#11632); reno is predictable.
	cc := tcpip.CongestionControlOption("reno")
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	rcvRange := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: max(rcv/4, tcp.MinBufferSize), Max: rcv}
	sndRange := tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: max(snd/4, tcp.MinBufferSize), Max: snd}
	// A connection this side closes first waits in TIME_WAIT with its whole endpoint kept:
	// 60 s by default, so a flood of refused connections (issue 15: 13,414 from one device)
	// would hold thousands. Inside the tunnel, where segments are neither duplicated nor long
	// delayed by the path, 5 s is ample.
	timeWait := tcpip.TCPTimeWaitTimeoutOption(timeWaitTimeout)
	opts := []struct {
		name string
		opt  tcpip.SettableTransportProtocolOption
	}{
		{"sack", &sack},
		{"recovery", &recovery},
		{"congestion control", &cc},
		{"moderate receive buffer", &moderate},
		{"receive buffer", &rcvRange},
		{"send buffer", &sndRange},
		{"time-wait timeout", &timeWait},
	}
	for _, o := range opts {
		if err := s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, o.opt); err != nil {
			return fmt.Errorf("netstack: set tcp %s: %v", o.name, err)
		}
	}
	return nil
}

// TUN returns the device end that wireguard-go reads and writes packets through.
// Closing it (the WireGuard device does) stops packet flow; the stack stays until Close.
func (s *Stack) TUN() tun.Device { return s.tun }

// Addrs returns the stack's own addresses.
func (s *Stack) Addrs() []netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]netip.Addr, 0, len(s.mu.addrs))
	for a := range s.mu.addrs {
		out = append(out, a)
	}
	return out
}

// AddAddr adds an address of this stack (a printer's tunnel address).
func (s *Stack) AddAddr(a netip.Addr) error {
	if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.Is4In6() || a.Zone() != "" {
		return fmt.Errorf("netstack: add address %v: not a unicast address", a)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return fmt.Errorf("netstack: add address %v: %w", a, net.ErrClosed)
	}
	if s.mu.addrs[a] {
		return fmt.Errorf("netstack: add address %v: already present", a)
	}
	pa := tcpip.ProtocolAddress{
		Protocol:          protocolOf(a),
		AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix(),
	}
	if err := s.stack.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
		return fmt.Errorf("netstack: add address %v: %v", a, err)
	}
	s.mu.addrs[a] = true
	s.tun.setLocal(s.mu.addrs)
	s.logf("netstack: address %v added", a)
	return nil
}

func (s *Stack) owns(a netip.Addr) (ok bool, closed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.addrs[a], s.mu.closed
}

func (s *Stack) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.closed
}

// ListenTCP listens on one of the stack's addresses. Any other address, including the
// unspecified one, is an error: a listener is always bound to a tunnel address.
func (s *Stack) ListenTCP(ap netip.AddrPort) (net.Listener, error) {
	ok, closed := s.owns(ap.Addr())
	if closed {
		return nil, fmt.Errorf("netstack: listen %v: %w", ap, net.ErrClosed)
	}
	if !ok {
		return nil, fmt.Errorf("netstack: listen %v: not an address of this stack", ap)
	}
	l, err := gonet.ListenTCP(s.stack, fullAddr(ap), protocolOf(ap.Addr()))
	if err != nil {
		return nil, fmt.Errorf("netstack: listen %v: %w", ap, err)
	}
	return l, nil
}

// DialTCP opens a TCP connection from the stack (used by clients in tests).
func (s *Stack) DialTCP(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
	return s.DialTCPFrom(ctx, netip.Addr{}, ap)
}

// DialTCPFrom is DialTCP from the local address from (one of the stack's own); the zero
// address lets the stack choose. The stack's choice prefers the local address sharing the
// longest prefix with the destination, so a gateway holding 10.77.0.1 and a printer's
// 10.77.0.11 would dial 10.77.0.8 from 10.77.0.11: a peer that accepts the gateway's own
// address only (another gateway, before it knows this one's printers) then drops the SYN.
func (s *Stack) DialTCPFrom(ctx context.Context, from netip.Addr, ap netip.AddrPort) (net.Conn, error) {
	if s.isClosed() {
		return nil, fmt.Errorf("netstack: dial %v: %w", ap, net.ErrClosed)
	}
	if !ap.IsValid() || ap.Port() == 0 {
		return nil, fmt.Errorf("netstack: dial %v: invalid address", ap)
	}
	var c net.Conn
	var err error
	if from.IsValid() {
		if from.Is4() != ap.Addr().Is4() {
			return nil, fmt.Errorf("netstack: dial %v from %v: address families differ", ap, from)
		}
		local := fullAddr(netip.AddrPortFrom(from, 0))
		c, err = gonet.DialTCPWithBind(ctx, s.stack, local, fullAddr(ap), protocolOf(ap.Addr()))
	} else {
		c, err = gonet.DialContextTCP(ctx, s.stack, fullAddr(ap), protocolOf(ap.Addr()))
	}
	if err != nil {
		return nil, fmt.Errorf("netstack: dial %v: %w", ap, err)
	}
	return c, nil
}

// CloseConns aborts every TCP connection whose remote address matches, with a RST, and
// returns how many it closed. Revocation calls it with the revoked peer's addresses.
//
// It walks the stack's own endpoint table, so it sees connections whether or not they were
// accepted yet (a connection still in a listener's backlog is aborted too). Listeners are
// never touched. A Read or Write on an aborted connection returns an error.
func (s *Stack) CloseConns(match func(remote netip.Addr) bool) int {
	if s.isClosed() {
		return 0
	}
	n := 0
	for _, te := range s.stack.RegisteredEndpoints() {
		ep, ok := te.(*tcp.Endpoint)
		if !ok {
			continue
		}
		id := ep.Info().(*stack.TransportEndpointInfo).ID
		if id.RemotePort == 0 || id.RemoteAddress.Len() == 0 {
			continue // a listener or an unconnected endpoint
		}
		remote, ok := netip.AddrFromSlice(id.RemoteAddress.AsSlice())
		if !ok || !match(remote.Unmap()) {
			continue
		}
		switch ep.EndpointState() {
		case tcp.StateClose, tcp.StateError, tcp.StateTimeWait:
			continue
		}
		ep.Abort()
		n++
	}
	if n > 0 {
		s.logf("netstack: aborted %d connections", n)
	}
	return n
}

// Close shuts the stack down. Close the WireGuard device first. A second Close returns an
// error wrapping net.ErrClosed.
func (s *Stack) Close() error {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return fmt.Errorf("netstack: close: %w", net.ErrClosed)
	}
	s.mu.closed = true
	s.mu.Unlock()

	s.tun.Close() // no-op when the device closed it already
	s.stack.Close()
	s.stack.Wait() // removes the NIC, which closes the link endpoint
	s.ep.Close()
	s.logf("netstack: closed")
	return nil
}

func protocolOf(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() || a.Is4In6() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

func fullAddr(ap netip.AddrPort) tcpip.FullAddress {
	a := ap.Addr().Unmap()
	return tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(a.AsSlice()), Port: ap.Port()}
}
