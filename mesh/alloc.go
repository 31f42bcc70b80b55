package mesh

import (
	"fmt"
	"net/netip"
)

// The mesh address plan. Every tunnel address is the prefix base plus an offset; a holder's
// IPv4 and IPv6 addresses share the offset (10.77.0.100 pairs with fdXX:…::64). It extends
// enroll's single-gateway plan, so a gateway's state directory upgrades in place:
//
//	offset 1          the first gateway (the mesh of one)
//	offsets 2 to 10   the next gateways
//	offsets 11 to 50  printers
//	offsets 100 and up devices in enrollment order, and gateways or printers once their
//	                  range is full, from one high-water mark that never goes down
//
// Allocation happens inside Apply, from the roster alone, so every replica picks the same
// address. No address is handed out twice: devices stay as tombstones, and the addresses of
// removed gateways and printers are retired. IPv4 offsets ending in .0 or .255 are skipped.
const (
	firstGatewayOffset = 1
	lastGatewayOffset  = 10
	firstPrinterOffset = 11
	lastPrinterOffset  = 50
	firstPoolOffset    = 100
)

// checkPrefixes validates the mesh prefixes: a private IPv4 /16 to /24, and an optional
// IPv6 /48 to /112 (invalid prefix: none).
func checkPrefixes(p4, p6 netip.Prefix) error {
	if !p4.IsValid() || !p4.Addr().Is4() {
		return fmt.Errorf("ipv4 prefix %v: not an IPv4 prefix: %w", p4, ErrInvalid)
	}
	if p4 != p4.Masked() || p4.Bits() < 16 || p4.Bits() > 24 || !p4.Addr().IsPrivate() && !netip.MustParsePrefix("100.64.0.0/10").Contains(p4.Addr()) {
		return fmt.Errorf("ipv4 prefix %v: want a masked private /16 to /24: %w", p4, ErrInvalid)
	}
	if p6.IsValid() && (!p6.Addr().Is6() || p6.Addr().Is4In6() || p6 != p6.Masked() || p6.Bits() < 48 || p6.Bits() > 112) {
		return fmt.Errorf("ipv6 prefix %v: want a masked /48 to /112: %w", p6, ErrInvalid)
	}
	return nil
}

// addrs returns the addresses at offset off: IPv4, and IPv6 when the mesh has a v6 prefix.
func (r *Roster) addrs(off uint32) (netip.Addr, netip.Addr) {
	b := r.prefix4.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) + off
	a4 := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	if !r.prefix6.IsValid() {
		return a4, netip.Addr{}
	}
	b16 := r.prefix6.Addr().As16()
	carry := off
	for i := 15; i >= 0 && carry > 0; i-- {
		sum := uint32(b16[i]) + carry&0xff
		b16[i] = byte(sum)
		carry = carry>>8 + sum>>8
	}
	return a4, netip.AddrFrom16(b16)
}

// size is the number of IPv4 addresses in the mesh prefix.
func (r *Roster) size() uint32 { return 1 << (32 - r.prefix4.Bits()) }

// usable reports whether off may be handed out at all: inside the prefix, not the broadcast
// address, not ending in .0 or .255.
func (r *Roster) usable(off uint32) bool {
	if off == 0 || off >= r.size()-1 {
		return false
	}
	a4, _ := r.addrs(off)
	last := a4.As4()[3]
	return last != 0 && last != 255
}

// taken reports whether the IPv4 address at off is held or retired.
func (r *Roster) taken(off uint32) bool {
	a4, _ := r.addrs(off)
	if _, ok := r.byAddr[a4]; ok || r.retired[a4] {
		return true
	}
	for _, g := range r.gateways {
		if g.IPv4 == a4 {
			return true
		}
	}
	for _, p := range r.printers {
		if p.IPv4 == a4 {
			return true
		}
	}
	return false
}

// allocRange picks the lowest free offset in [lo, hi], or falls back to the pool. It returns
// the offset and the new pool mark (unchanged unless the pool was used).
func (r *Roster) allocRange(lo, hi uint32) (uint32, uint32, error) {
	for off := lo; off <= hi; off++ {
		if r.usable(off) && !r.taken(off) {
			return off, r.nextOffset, nil
		}
	}
	return r.allocPool()
}

// allocPool picks the next offset from the high-water mark.
func (r *Roster) allocPool() (uint32, uint32, error) {
	for off := max(r.nextOffset, firstPoolOffset); off < r.size(); off++ {
		if r.usable(off) && !r.taken(off) {
			return off, off + 1, nil
		}
	}
	return 0, r.nextOffset, fmt.Errorf("mesh prefix %v: %w", r.prefix4, ErrExhausted)
}
