package enroll

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Address plan. Every tunnel address is the prefix base plus an offset, and the IPv4 and IPv6
// address of one holder share the offset (10.77.0.100 pairs with fdXX:XXXX:XXXX::64):
//
//	offset 1             the gateway (DESIGN.md: the first host address of each prefix)
//	offsets 11 to 50     printers, in the order they were first named, kept for good
//	offsets 100 and up   devices, in enrollment order, never handed out twice
//
// Offsets whose IPv4 form ends in .0 or .255 are skipped, so no device gets an address that
// looks like a network or broadcast address to a confused router or person.
const (
	gatewayOffset      = 1
	firstPrinterOffset = 11
	lastPrinterOffset  = 50
	firstDeviceOffset  = 100
)

// DefaultPrefix4 is the IPv4 mesh prefix when init is given none. 10.77.0.0/22 sits far from
// the ranges home routers, ISPs' boxes and other VPNs hand out (192.168.0-1.x, 10.0.0-1.x,
// 172.16-17.x, Docker's 172.17+, Tailscale's 100.64/10, WireGuard guides' 10.0.0.x/10.8.0.x), so
// the split-tunnel route on a phone does not shadow its LAN. A /22 holds the gateway, 40
// printers and about 900 device enrollments over the gateway's life (addresses are never
// reused); pass a /21 or wider at init for more.
var DefaultPrefix4 = netip.MustParsePrefix("10.77.0.0/22")

// errExhausted is returned when a range has no address left.
var errExhausted = errors.New("address space exhausted")

// checkPrefix4 validates an IPv4 mesh prefix: masked, private, /16 to /24.
func checkPrefix4(p netip.Prefix) error {
	if !p.IsValid() || !p.Addr().Is4() {
		return fmt.Errorf("ipv4 prefix %v: not an IPv4 prefix: %w", p, ErrInvalid)
	}
	if p != p.Masked() {
		return fmt.Errorf("ipv4 prefix %v: host bits set (did you mean %v?): %w", p, p.Masked(), ErrInvalid)
	}
	if p.Bits() < 16 || p.Bits() > 24 {
		return fmt.Errorf("ipv4 prefix %v: want a /16 to /24: %w", p, ErrInvalid)
	}
	private := false
	for _, r := range []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"} {
		if netip.MustParsePrefix(r).Contains(p.Addr()) {
			private = true
		}
	}
	if !private {
		return fmt.Errorf("ipv4 prefix %v: want a private range (10/8, 172.16/12, 192.168/16, 100.64/10): %w", p, ErrInvalid)
	}
	return nil
}

// checkPrefix6 validates an IPv6 mesh prefix: masked, /48 to /112, not IPv4-mapped.
func checkPrefix6(p netip.Prefix) error {
	if !p.IsValid() || !p.Addr().Is6() || p.Addr().Is4In6() {
		return fmt.Errorf("ipv6 prefix %v: not an IPv6 prefix: %w", p, ErrInvalid)
	}
	if p != p.Masked() {
		return fmt.Errorf("ipv6 prefix %v: host bits set (did you mean %v?): %w", p, p.Masked(), ErrInvalid)
	}
	if p.Bits() < 48 || p.Bits() > 112 {
		return fmt.Errorf("ipv6 prefix %v: want a /48 to /112 (a /64 is usual): %w", p, ErrInvalid)
	}
	return nil
}

// NewULAPrefix returns a random RFC 4193 unique local /64: fd00::/8, a 40-bit global ID
// from crypto/rand (§3.2.2 allows any random source of good quality), subnet ID 0.
func NewULAPrefix() (netip.Prefix, error) {
	var a [16]byte
	a[0] = 0xfd
	if _, err := rand.Read(a[1:6]); err != nil {
		return netip.Prefix{}, fmt.Errorf("ula global id: %w", err)
	}
	return netip.PrefixFrom(netip.AddrFrom16(a), 64), nil
}

// offsetAddr4 is the IPv4 address at offset off in p.
func offsetAddr4(p netip.Prefix, off uint32) netip.Addr {
	b := p.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += off
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// offsetAddr6 is the IPv6 address at offset off in p (off fits in the low 16 bits the checked
// prefixes leave free).
func offsetAddr6(p netip.Prefix, off uint32) netip.Addr {
	b := p.Addr().As16()
	carry := off
	for i := 15; i >= 0 && carry > 0; i-- {
		sum := uint32(b[i]) + carry&0xff
		b[i] = byte(sum)
		carry = carry>>8 + sum>>8
	}
	return netip.AddrFrom16(b)
}

// addrOffset4 is a's offset in p, ok false when a is outside p.
func addrOffset4(p netip.Prefix, a netip.Addr) (uint32, bool) {
	if !a.Is4() || !p.Contains(a) {
		return 0, false
	}
	x, y := p.Addr().As4(), a.As4()
	return (uint32(y[0])<<24 | uint32(y[1])<<16 | uint32(y[2])<<8 | uint32(y[3])) -
		(uint32(x[0])<<24 | uint32(x[1])<<16 | uint32(x[2])<<8 | uint32(x[3])), true
}

// size4 is the number of addresses in p.
func size4(p netip.Prefix) uint32 { return 1 << (32 - p.Bits()) }

// usableDevice reports whether a device may hold offset off in p.
func usableDevice(p netip.Prefix, off uint32) bool {
	if off < firstDeviceOffset || off >= size4(p)-1 {
		return false
	}
	last := offsetAddr4(p, off).As4()[3]
	return last != 0 && last != 255
}

// Addr4 is the gateway's IPv4 tunnel address: Address4 when the mesh allocated one, else
// the first host address of Prefix4.
func (g Gateway) Addr4() netip.Addr {
	if g.Address4.IsValid() {
		return g.Address4
	}
	return offsetAddr4(g.Prefix4, gatewayOffset)
}

// Addr6 is the gateway's IPv6 tunnel address: Address6 when the mesh allocated one, else
// the first host address of Prefix6.
func (g Gateway) Addr6() netip.Addr {
	if g.Address6.IsValid() {
		return g.Address6
	}
	return offsetAddr6(g.Prefix6, gatewayOffset)
}

// checkGatewayAddrs checks a joined gateway's allocated addresses: both set or neither,
// inside the prefixes at one offset, below the device range's start or anywhere a mesh may
// put a gateway (offsets 1 and up, never .0 or .255).
func checkGatewayAddrs(p4, p6 netip.Prefix, a4, a6 netip.Addr) error {
	if !a4.IsValid() && !a6.IsValid() {
		return nil
	}
	off, ok := addrOffset4(p4, a4)
	if !ok || off == 0 || off >= size4(p4)-1 {
		return fmt.Errorf("gateway address %v: not a host address of %v: %w", a4, p4, ErrInvalid)
	}
	if last := a4.As4()[3]; last == 0 || last == 255 {
		return fmt.Errorf("gateway address %v: ends in .0 or .255: %w", a4, ErrInvalid)
	}
	if a6 != offsetAddr6(p6, off) {
		return fmt.Errorf("gateway address %v does not pair with %v (want %v): %w", a6, a4, offsetAddr6(p6, off), ErrInvalid)
	}
	return nil
}

// PublicKey is the gateway's public key (not secret: every device config carries it).
func (g Gateway) PublicKey() wgtypes.Key { return g.PrivateKey.PublicKey() }
