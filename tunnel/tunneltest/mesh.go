package tunneltest

import (
	"context"
	"net/netip"
	"runtime/pprof"
	"testing"

	"github.com/printgate/printgate/netstack"
	"github.com/printgate/printgate/tunnel"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Node is one WireGuard device over its own netstack, on loopback UDP: a gateway or a device
// of a mesh that a test wires by hand with Peer and Apply.
type Node struct {
	Name       string
	Device     *tunnel.Device
	Stack      *netstack.Stack
	PrivateKey wgtypes.Key
	// Addrs are the node's own addresses, as given to NewNode.
	Addrs []netip.Addr
	// Endpoint is the node's UDP endpoint on loopback.
	Endpoint netip.AddrPort
}

// NewNode builds a node owning addrs. client makes its device a client device (peers'
// AllowedIPs may be whole prefixes, as in a device's config); a gateway takes host routes
// only. The node has no peers until Apply. logf may be nil.
func NewNode(t testing.TB, name string, client bool, logf func(string, ...any), addrs ...netip.Addr) *Node {
	t.Helper()
	if logf == nil {
		logf = func(string, ...any) {}
	}
	n := &Node{Name: name, PrivateKey: mustKey(t), Addrs: addrs}
	n.labeled(func() {
		n.Stack, n.Device = newNode(t, netstack.Config{Addrs: addrs, Logf: prefixed(logf, name+": ")}, tunnel.Config{
			PrivateKey: n.PrivateKey,
			Client:     client,
			Logf:       prefixed(logf, name+": "),
		})
	})
	n.Endpoint = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(n.Device.ListenPort()))
	return n
}

// Peer is n as a peer of another node: n's key and endpoint, and AllowedIPs = n's own
// addresses as host routes, then extra (prefixes as given).
func (n *Node) Peer(extra ...netip.Prefix) tunnel.Peer {
	p := tunnel.Peer{PublicKey: n.PrivateKey.PublicKey(), Endpoint: n.Endpoint}
	for _, a := range n.Addrs {
		p.AllowedIPs = append(p.AllowedIPs, netip.PrefixFrom(a, a.BitLen()))
	}
	p.AllowedIPs = append(p.AllowedIPs, extra...)
	return p
}

// Apply sets n's peers.
func (n *Node) Apply(t testing.TB, peers ...tunnel.Peer) {
	t.Helper()
	var err error
	n.labeled(func() { err = n.Device.Apply(peers) }) // Apply starts the peers' goroutines
	if err != nil {
		t.Fatalf("tunneltest: %s: %v", n.Name, err)
	}
}

// labeled runs f with the pprof label node=NAME, which the goroutines it starts inherit: the
// device's and the stack's, so a CPU profile splits by node (go tool pprof -tagfocus
// node=gatewayA).
func (n *Node) labeled(f func()) {
	pprof.Do(context.Background(), pprof.Labels("node", n.Name), func(context.Context) { f() })
}

// Host returns a's host route (/32 or /128).
func Host(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// Mesh is two gateways and three devices wired as DESIGN.md "The mesh" wires them: each
// device has one peer, its home gateway, with AllowedIPs = the whole mesh prefix; each
// gateway has its own devices as peers (host routes) and the other gateway as a peer whose
// AllowedIPs hold that gateway's addresses, its printer's, and its devices'.
//
//	Device (10.98.0.11)  ─┐                              ┌─ Printer (10.98.1.2, on B's stack)
//	Neighbour (10.98.0.12)┴─ A (10.98.0.1) ══ B (10.98.1.1) ─ Direct (10.98.1.11)
//
// Each node has an IPv6 address too (fd00:98::… and fd00:98:1::…). NewMesh does not turn a
// relay on: tests do, on A (and on B for replies to B's devices from A's side), for example
// with RelayPolicy.
type Mesh struct {
	A, B                      *Node
	Device, Neighbour, Direct *Node // homed at A, at A, at B
	// Printer4 and Printer6 are the printer's addresses on B's stack.
	Printer4, Printer6 netip.Addr
}

// NewMesh builds and wires a Mesh. No handshake has happened yet. logf may be nil.
func NewMesh(t testing.TB, logf func(string, ...any)) *Mesh {
	t.Helper()
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	prefixes := []netip.Prefix{netip.MustParsePrefix("10.98.0.0/16"), netip.MustParsePrefix("fd00:98::/32")}
	m := &Mesh{Printer4: a("10.98.1.2"), Printer6: a("fd00:98:1::2")}
	m.A = NewNode(t, "gatewayA", false, logf, a("10.98.0.1"), a("fd00:98::1"))
	m.B = NewNode(t, "gatewayB", false, logf, a("10.98.1.1"), a("fd00:98:1::1"), m.Printer4, m.Printer6)
	m.Device = NewNode(t, "device", true, logf, a("10.98.0.11"), a("fd00:98::11"))
	m.Neighbour = NewNode(t, "neighbour", true, logf, a("10.98.0.12"), a("fd00:98::12"))
	m.Direct = NewNode(t, "direct", true, logf, a("10.98.1.11"), a("fd00:98:1::11"))

	home := func(gw *Node) tunnel.Peer {
		p := gw.Peer()
		p.AllowedIPs = prefixes
		return p
	}
	m.Device.Apply(t, home(m.A))
	m.Neighbour.Apply(t, home(m.A))
	m.Direct.Apply(t, home(m.B))
	var homedAtA, homedAtB []netip.Prefix
	for _, d := range []*Node{m.Device, m.Neighbour} {
		for _, x := range d.Addrs {
			homedAtA = append(homedAtA, Host(x))
		}
	}
	for _, x := range m.Direct.Addrs {
		homedAtB = append(homedAtB, Host(x))
	}
	m.A.Apply(t, m.Device.Peer(), m.Neighbour.Peer(), m.B.Peer(homedAtB...))
	m.B.Apply(t, m.Direct.Peer(), m.A.Peer(homedAtA...))
	return m
}

// RelayPolicy is the daemon's relay predicate for gateway home (mesh-wiring.md): allow iff dst
// is an address of another gateway (the gateway or one of its printers), or src is such an
// address and dst is a device homed here. Device-to-device is never relayed.
func RelayPolicy(remote []netip.Addr, homed []*Node) func(src, dst netip.Addr) bool {
	far := map[netip.Addr]bool{}
	for _, x := range remote {
		far[x] = true
	}
	local := map[netip.Addr]bool{}
	for _, d := range homed {
		for _, x := range d.Addrs {
			local[x] = true
		}
	}
	return func(src, dst netip.Addr) bool { return far[dst] || (far[src] && local[dst]) }
}

// RelayAtA turns on A's relay with the daemon's policy: B's addresses (its own and its
// printer's) are remote; Device and Neighbour are homed at A.
func (m *Mesh) RelayAtA() {
	m.A.Stack.SetRelay(RelayPolicy(m.B.Addrs, []*Node{m.Device, m.Neighbour}))
}
