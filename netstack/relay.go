package netstack

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
)

// The relay is a hairpin in front of the stack (DESIGN.md "The mesh", relay path). A packet
// wireguard-go writes to the TUN (decrypted from a peer) whose destination is not one of the
// stack's addresses, and which the relay predicate allows, never enters gVisor: its TTL or hop
// limit is decremented and it is queued to the TUN's read side, where wireguard-go reads it as
// an outbound packet and sends it to the peer whose AllowedIPs hold the destination (another
// gateway). The queue is a fixed ring of packet slots, allocated once when the relay is first
// turned on; a packet that finds it full is dropped, as a router drops on a full queue.

// RelayStats counts what the relay did since the stack was created.
type RelayStats struct {
	// Relayed is the number of packets queued back out through WireGuard.
	Relayed uint64
	// QueueFull counts packets dropped because the relay queue was full.
	QueueFull uint64
	// Expired counts packets dropped because their TTL or hop limit ran out (no ICMP is sent).
	Expired uint64
	// Oversize counts packets dropped because they were larger than a relay slot
	// (max(MTU, 1500) bytes) or than the buffer wireguard-go read them into.
	Oversize uint64
}

// SetRelay turns the relay on with the predicate allow, or off with nil. While it is on, a
// packet from a peer whose destination dst is a unicast address the stack does not own, and
// for which allow(src, dst) is true, goes back out through WireGuard instead of into the
// stack; every other packet reaches the stack as before (which drops what is not its own).
// src has passed WireGuard's check against the sending peer's AllowedIPs, so it is the
// sender's own address (or one its peer may speak for, such as another gateway's device).
//
// allow runs on wireguard-go's receive goroutines, once per packet: it must be fast, safe for
// concurrent use and must not block. SetRelay may be called at any time, from any goroutine;
// the new predicate applies from the next packet on.
func (s *Stack) SetRelay(allow func(src, dst netip.Addr) bool) {
	s.tun.setRelay(allow)
}

// RelayStats returns the relay's counters.
func (s *Stack) RelayStats() RelayStats {
	r := &s.tun.relayStats
	return RelayStats{
		Relayed:   r.relayed.Load(),
		QueueFull: r.full.Load(),
		Expired:   r.expired.Load(),
		Oversize:  r.oversize.Load(),
	}
}

// relayCounters are the live counters behind RelayStats.
type relayCounters struct {
	relayed, full, expired, oversize atomic.Uint64
}

// relayFunc is the predicate SetRelay stores.
type relayFunc func(src, dst netip.Addr) bool

// ring is the bounded relay queue: len(sizes) slots of slot bytes each in one allocation,
// used first-in first-out.
type ring struct {
	slot int

	mu    sync.Mutex
	buf   []byte // len(sizes) * slot bytes
	sizes []int  // packet length in each slot
	head  int    // the oldest queued packet
	n     int    // queued packets
}

func newRing(slots, slot int) *ring {
	return &ring{slot: slot, buf: make([]byte, slots*slot), sizes: make([]int, slots)}
}

// push copies p into the next free slot; false when the ring is full.
func (r *ring) push(p []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == len(r.sizes) {
		return false
	}
	i := (r.head + r.n) % len(r.sizes)
	r.sizes[i] = copy(r.buf[i*r.slot:(i+1)*r.slot], p)
	r.n++
	return true
}

// pop copies queued packets into bufs[i][offset:], oldest first, until bufs or the ring
// runs out; it returns how many bufs it filled and how many packets it dropped because they
// did not fit their buffer.
func (r *ring) pop(bufs [][]byte, sizes []int, offset int) (n, dropped int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for n < len(bufs) && r.n > 0 {
		i := r.head
		size := r.sizes[i]
		r.head = (r.head + 1) % len(r.sizes)
		r.n--
		if size > len(bufs[n])-offset {
			dropped++
			continue
		}
		copy(bufs[n][offset:], r.buf[i*r.slot:i*r.slot+size])
		sizes[n] = size
		n++
	}
	return n, dropped
}

// queued returns the number of packets in the ring.
func (r *ring) queued() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// IP header offsets (RFC 791, RFC 8200).
const (
	ipv4MinLen   = 20
	ipv4TTL      = 8
	ipv4Checksum = 10
	ipv4Src      = 12
	ipv4Dst      = 16
	ipv6Len      = 40
	ipv6HopLimit = 7
	ipv6Src      = 8
	ipv6Dst      = 24
)

// parseIP returns a packet's source and destination addresses and its length by its own
// header, or ok false when p is not an IPv4 or IPv6 packet with a well-formed header (the
// length is never more than len(p)). p comes from a peer: it is checked, never trusted.
func parseIP(p []byte) (src, dst netip.Addr, n int, ok bool) {
	if len(p) == 0 {
		return src, dst, 0, false
	}
	switch p[0] >> 4 {
	case 4:
		if len(p) < ipv4MinLen {
			return src, dst, 0, false
		}
		ihl := int(p[0]&0x0f) * 4
		n = int(binary.BigEndian.Uint16(p[2:4]))
		if ihl < ipv4MinLen || n < ihl || n > len(p) {
			return src, dst, 0, false
		}
		src = netip.AddrFrom4([4]byte(p[ipv4Src : ipv4Src+4]))
		dst = netip.AddrFrom4([4]byte(p[ipv4Dst : ipv4Dst+4]))
		return src, dst, n, true
	case 6:
		if len(p) < ipv6Len {
			return src, dst, 0, false
		}
		n = ipv6Len + int(binary.BigEndian.Uint16(p[4:6]))
		if n > len(p) {
			return src, dst, 0, false
		}
		src = netip.AddrFrom16([16]byte(p[ipv6Src : ipv6Src+16]))
		dst = netip.AddrFrom16([16]byte(p[ipv6Dst : ipv6Dst+16]))
		return src, dst, n, true
	}
	return src, dst, 0, false
}

// hop does what a router does to a packet it forwards: it decrements the TTL (IPv4) or hop
// limit (IPv6) and, for IPv4, updates the header checksum incrementally (RFC 1624, eqn. 3),
// so a header whose checksum was right stays right. It returns false, leaving p untouched,
// when the packet must not be forwarded: the TTL would reach zero. p must have passed parseIP.
func hop(p []byte) bool {
	if p[0]>>4 == 6 {
		if p[ipv6HopLimit] <= 1 {
			return false
		}
		p[ipv6HopLimit]--
		return true
	}
	if p[ipv4TTL] <= 1 {
		return false
	}
	// The TTL is the high byte of the 16-bit word it shares with the protocol.
	old := binary.BigEndian.Uint16(p[ipv4TTL:])
	p[ipv4TTL]--
	sum := uint32(^binary.BigEndian.Uint16(p[ipv4Checksum:])) + uint32(^old) + uint32(binary.BigEndian.Uint16(p[ipv4TTL:]))
	sum = sum&0xffff + sum>>16
	sum = sum&0xffff + sum>>16
	binary.BigEndian.PutUint16(p[ipv4Checksum:], ^uint16(sum))
	return true
}

// relaySlot is the size of one relay queue slot for a stack of this MTU: at least 1500, so a
// device whose tunnel MTU is Ethernet's is relayed too.
func relaySlot(mtu int) int { return max(mtu, 1500) }
