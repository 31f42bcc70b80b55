package gateway

// The relay predicate (mesh-wiring "Relay"): the netstack's hairpin sends a packet that is
// not for this stack back out through WireGuard when the predicate allows it, and WireGuard's
// AllowedIPs pick the gateway that owns the destination. This gateway allows exactly:
//
//	a device homed here (on the device, active in the mesh) → a printer or gateway address
//	of another gateway (the request), and
//	a printer or gateway address of another gateway → a device homed here (the reply).
//
// Device to device is never relayed, nor anything between two other gateways, so a relaying
// gateway adds no path the mesh did not have. What the device may do at the printer is the
// printer's own gateway's business: it identifies the device from its replica.

import (
	"net/netip"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/mesh"
)

// relayTable is one immutable snapshot of what the predicate needs, rebuilt on every apply.
type relayTable struct {
	local  map[netip.Addr]bool // addresses of the devices homed here that are on the device
	remote map[netip.Addr]bool // addresses of other gateways and their printers
}

// buildRelayTable makes the table from the replica r and the devices homed here that are on
// the WireGuard device (applied).
func buildRelayTable(r *mesh.Roster, self string, applied map[wgtypes.Key]enroll.DevicePeer) *relayTable {
	t := &relayTable{local: map[netip.Addr]bool{}, remote: map[netip.Addr]bool{}}
	for _, p := range applied {
		for _, pfx := range p.AllowedIPs {
			t.local[pfx.Addr()] = true
		}
	}
	for _, gw := range r.Gateways() {
		if gw.Name == self {
			continue
		}
		for _, a := range []netip.Addr{gw.IPv4, gw.IPv6} {
			if a.IsValid() {
				t.remote[a] = true
			}
		}
	}
	for _, p := range r.Printers() {
		if p.Gateway == self {
			continue
		}
		if _, ok := r.Gateway(p.Gateway); !ok {
			continue
		}
		for _, a := range []netip.Addr{p.IPv4, p.IPv6} {
			if a.IsValid() {
				t.remote[a] = true
			}
		}
	}
	return t
}

// allow is the relay predicate on the table: see the file comment.
func (t *relayTable) allow(src, dst netip.Addr) bool {
	if t == nil {
		return false
	}
	return t.local[src] && t.remote[dst] || t.remote[src] && t.local[dst]
}

// relayAllow is the predicate given to the netstack once: it reads the latest table.
func (g *Gateway) relayAllow(src, dst netip.Addr) bool {
	return g.relay.Load().allow(src.Unmap(), dst.Unmap())
}
