package netstack

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

var (
	far4 = netip.MustParseAddr("10.0.9.9") // not an address of any test stack
	far6 = netip.MustParseAddr("fd00::9:9")
)

// ip4 builds an IPv4 packet (protocol 253, RFC 3692 experimental) with a correct header
// checksum and n payload bytes.
func ip4(src, dst netip.Addr, ttl uint8, n int) []byte {
	p := make([]byte, ipv4MinLen+n)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[4:], 0x1234) // identification
	p[ipv4TTL] = ttl
	p[9] = 253
	copy(p[ipv4Src:], src.AsSlice())
	copy(p[ipv4Dst:], dst.AsSlice())
	for i := range n {
		p[ipv4MinLen+i] = byte(i)
	}
	header.IPv4(p).SetChecksum(^header.IPv4(p).CalculateChecksum())
	return p
}

// ip6 builds an IPv6 packet (next header 253) with n payload bytes.
func ip6(src, dst netip.Addr, hops uint8, n int) []byte {
	p := make([]byte, ipv6Len+n)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(n))
	p[6] = 253
	p[ipv6HopLimit] = hops
	copy(p[ipv6Src:], src.AsSlice())
	copy(p[ipv6Dst:], dst.AsSlice())
	for i := range n {
		p[ipv6Len+i] = byte(i)
	}
	return p
}

func ipv4ChecksumOK(p []byte) bool {
	return header.IPv4(p).IsChecksumValid()
}

func TestParseIP(t *testing.T) {
	v4 := ip4(b4, far4, 64, 10)
	v6 := ip6(b6, far6, 64, 10)
	withOptions := ip4(b4, far4, 64, 10)
	withOptions[0] = 0x46 // 24-byte header: the first 4 payload bytes are options
	for _, tc := range []struct {
		name     string
		p        []byte
		src, dst netip.Addr
		n        int
		ok       bool
	}{
		{"ipv4", v4, b4, far4, 30, true},
		{"ipv4 trailing bytes", append(bytes.Clone(v4), 0, 0, 0), b4, far4, 30, true},
		{"ipv4 options", withOptions, b4, far4, 30, true},
		{"ipv6", v6, b6, far6, 50, true},
		{"ipv6 trailing bytes", append(bytes.Clone(v6), 1), b6, far6, 50, true},
		{"empty", nil, netip.Addr{}, netip.Addr{}, 0, false},
		{"ipv4 short", v4[:19], netip.Addr{}, netip.Addr{}, 0, false},
		{"ipv4 truncated", v4[:29], netip.Addr{}, netip.Addr{}, 0, false},
		{"ipv4 ihl 4", func() []byte { p := bytes.Clone(v4); p[0] = 0x44; return p }(), netip.Addr{}, netip.Addr{}, 0, false},
		{"ipv4 ihl past total", func() []byte { p := bytes.Clone(v4); p[0] = 0x4f; return p }(), netip.Addr{}, netip.Addr{}, 0, false},
		{"ipv6 short", v6[:39], netip.Addr{}, netip.Addr{}, 0, false},
		{"ipv6 truncated", v6[:49], netip.Addr{}, netip.Addr{}, 0, false},
		{"version 5", func() []byte { p := bytes.Clone(v4); p[0] = 0x55; return p }(), netip.Addr{}, netip.Addr{}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, dst, n, ok := parseIP(tc.p)
			if ok != tc.ok || src != tc.src || dst != tc.dst || n != tc.n {
				t.Errorf("parseIP(% x) = %v, %v, %d, %v; want %v, %v, %d, %v", tc.p, src, dst, n, ok, tc.src, tc.dst, tc.n, tc.ok)
			}
		})
	}
}

// TestHop checks the TTL and hop limit decrement and that the incremental IPv4 checksum
// update equals a full recomputation for every TTL and for header words that make the
// one's-complement sum wrap.
func TestHop(t *testing.T) {
	for ttl := 2; ttl <= 255; ttl++ {
		for _, id := range []uint16{0, 0x1234, 0xffff, 0xfeff} {
			p := ip4(b4, far4, uint8(ttl), 4)
			binary.BigEndian.PutUint16(p[4:], id)
			header.IPv4(p).SetChecksum(0)
			header.IPv4(p).SetChecksum(^header.IPv4(p).CalculateChecksum())
			want := bytes.Clone(p)
			want[ipv4TTL]--
			header.IPv4(want).SetChecksum(0)
			header.IPv4(want).SetChecksum(^header.IPv4(want).CalculateChecksum())
			if !hop(p) {
				t.Fatalf("hop(ttl %d) = false, want true", ttl)
			}
			if p[ipv4TTL] != uint8(ttl-1) || !ipv4ChecksumOK(p) {
				t.Fatalf("hop(ttl %d, id %#x): ttl %d, checksum %#04x (valid %v); want ttl %d, checksum %#04x",
					ttl, id, p[ipv4TTL], header.IPv4(p).Checksum(), ipv4ChecksumOK(p), ttl-1, header.IPv4(want).Checksum())
			}
		}
	}
	for _, ttl := range []uint8{0, 1} {
		p := ip4(b4, far4, ttl, 4)
		orig := bytes.Clone(p)
		if hop(p) || !bytes.Equal(p, orig) {
			t.Errorf("hop(ttl %d) = true or changed the packet, want false and untouched", ttl)
		}
		q := ip6(b6, far6, ttl, 4)
		if hop(q) || q[ipv6HopLimit] != ttl {
			t.Errorf("hop(ipv6 hop limit %d) = true or changed it, want false and untouched", ttl)
		}
	}
	q := ip6(b6, far6, 64, 4)
	if !hop(q) || q[ipv6HopLimit] != 63 {
		t.Errorf("hop(ipv6 hop limit 64): hop limit %d, want 63", q[ipv6HopLimit])
	}
}

// relayStack is a stack at a4/a6 with the relay on, allowing what allow allows (nil: all).
func relayStack(t *testing.T, cfg Config, allow func(src, dst netip.Addr) bool) *Stack {
	t.Helper()
	cfg.Addrs = []netip.Addr{a4, a6}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if allow == nil {
		allow = func(src, dst netip.Addr) bool { return true }
	}
	s.SetRelay(allow)
	return s
}

// withOffset copies packets into buffers with offset bytes of headroom, as wireguard-go
// hands them over (its transport header sits before each packet).
func withOffset(offset int, pkts ...[]byte) [][]byte {
	bufs := make([][]byte, len(pkts))
	for i, p := range pkts {
		bufs[i] = append(make([]byte, offset), p...)
	}
	return bufs
}

// readBatch reads one batch of up to n packets with the given offset.
func readBatch(t *testing.T, s *Stack, n, offset int) [][]byte {
	t.Helper()
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, offset+2000)
	}
	sizes := make([]int, n)
	got, err := s.TUN().Read(bufs, sizes, offset)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	out := make([][]byte, got)
	for i := range got {
		out[i] = bufs[i][offset : offset+sizes[i]]
	}
	return out
}

// TestRelayBatch writes one batch mixing packets for the stack, for the relay, and for
// neither, at wireguard-go's offset, and reads the relayed ones back in a batch: TTL and hop
// limit one lower, IPv4 checksum still valid, nothing else changed, in order.
func TestRelayBatch(t *testing.T) {
	s := relayStack(t, Config{}, nil)
	const offset = 16
	relay4 := ip4(b4, far4, 64, 100)
	relay6 := ip6(b6, far6, 2, 1000)
	batch := withOffset(offset,
		ip4(b4, a4, 64, 10),  // the stack's own address
		relay4,               // relayed
		ip4(b4, far4, 1, 10), // TTL runs out: dropped
		ip4(b4, netip.MustParseAddr("224.0.0.251"), 64, 10), // multicast: to the stack
		relay6,              // relayed
		ip6(b6, a6, 64, 10), // the stack's own address
		ip6(b6, netip.MustParseAddr("::ffff:10.0.9.9"), 64, 10), // mapped: to the stack
		ip6(b6, far6, 0, 10),                     // hop limit 0: dropped
		append(ip4(b4, far4, 9, 10), 0xee, 0xee), // trailing bytes are not relayed
	)
	if n, err := s.TUN().Write(batch, offset); err != nil || n != len(batch) {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(batch))
	}
	want4 := bytes.Clone(relay4)
	want4[ipv4TTL] = 63
	header.IPv4(want4).SetChecksum(0)
	header.IPv4(want4).SetChecksum(^header.IPv4(want4).CalculateChecksum())
	want6 := bytes.Clone(relay6)
	want6[ipv6HopLimit] = 1
	wantLast := ip4(b4, far4, 8, 10) // without the trailing bytes

	var got [][]byte
	for len(got) < 3 {
		for _, p := range readBatch(t, s, 8, offset) {
			if _, dst, _, ok := parseIP(p); ok && (dst == far4 || dst == far6) {
				got = append(got, p)
			} // else: the stack's own answer (an ICMP error for protocol 253, say)
		}
	}
	for i, want := range [][]byte{want4, want6, wantLast} {
		if !bytes.Equal(got[i], want) {
			t.Errorf("relayed packet %d = % x\nwant % x", i, got[i], want)
		}
	}
	if st, want := s.RelayStats(), (RelayStats{Relayed: 3, Expired: 2}); st != want {
		t.Errorf("RelayStats() = %+v, want %+v", st, want)
	}
}

// TestRelayNotTaken: with the relay off, with a predicate that says no, and for the stack's
// own addresses (where the predicate is not even asked), nothing is relayed.
func TestRelayNotTaken(t *testing.T) {
	var asked atomic.Int32
	s := relayStack(t, Config{}, func(src, dst netip.Addr) bool {
		asked.Add(1)
		return dst == far4
	})
	own := withOffset(0, ip4(b4, a4, 64, 10), ip6(b6, a6, 64, 10))
	if _, err := s.TUN().Write(own, 0); err != nil {
		t.Fatal(err)
	}
	if asked.Load() != 0 {
		t.Errorf("predicate asked %d times about the stack's own addresses, want 0", asked.Load())
	}
	if _, err := s.TUN().Write(withOffset(0, ip6(b6, far6, 64, 10)), 0); err != nil {
		t.Fatal(err)
	}
	if st := s.RelayStats(); st.Relayed != 0 || asked.Load() != 1 {
		t.Errorf("predicate said no: relayed %d (asked %d), want 0 (asked 1)", st.Relayed, asked.Load())
	}
	s.SetRelay(nil)
	if _, err := s.TUN().Write(withOffset(0, ip4(b4, far4, 64, 10)), 0); err != nil {
		t.Fatal(err)
	}
	if st := s.RelayStats(); st.Relayed != 0 || asked.Load() != 1 {
		t.Errorf("relay off: relayed %d (asked %d), want 0 (asked 1)", st.Relayed, asked.Load())
	}
	s.SetRelay(func(src, dst netip.Addr) bool { return true })
	if _, err := s.TUN().Write(withOffset(0, ip4(b4, far4, 64, 10)), 0); err != nil {
		t.Fatal(err)
	}
	if st := s.RelayStats(); st.Relayed != 1 {
		t.Errorf("relay on again: relayed %d, want 1", st.Relayed)
	}
	if err := s.AddAddr(far4); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TUN().Write(withOffset(0, ip4(b4, far4, 64, 10)), 0); err != nil {
		t.Fatal(err)
	}
	if st := s.RelayStats(); st.Relayed != 1 {
		t.Errorf("after AddAddr(%v): relayed %d, want still 1", far4, st.Relayed)
	}
}

// TestRelayWakesRead: a Read blocked on an idle stack returns the packet the relay queues.
func TestRelayWakesRead(t *testing.T) {
	s := relayStack(t, Config{}, nil)
	got := make(chan [][]byte, 1)
	go func() { got <- readBatch(t, s, 4, 0) }()
	p := ip4(b4, far4, 64, 10)
	if _, err := s.TUN().Write(withOffset(0, p), 0); err != nil {
		t.Fatal(err)
	}
	pkts := <-got
	if len(pkts) != 1 || !bytes.Equal(pkts[0][ipv4Dst:ipv4Dst+4], far4.AsSlice()) {
		t.Errorf("Read after relaying one packet = %x, want that packet", pkts)
	}
}

// TestRelayQueueBound floods the relay with nobody reading: the queue holds exactly its
// bound, the rest is dropped and counted, no memory is allocated per packet, and the queue
// drains in order.
func TestRelayQueueBound(t *testing.T) {
	const bound = 16
	s := relayStack(t, Config{RelayQueueSize: bound}, nil)
	batch := make([][]byte, 64)
	for i := range batch {
		p := ip4(b4, far4, 64, 1200)
		binary.BigEndian.PutUint16(p[4:], uint16(i)) // identification: arrival order
		header.IPv4(p).SetChecksum(0)
		header.IPv4(p).SetChecksum(^header.IPv4(p).CalculateChecksum())
		batch[i] = p
	}
	// Each Write decrements the TTL of the batch in place; 64 Writes stay far from 1.
	write := func() {
		if _, err := s.TUN().Write(batch, 0); err != nil {
			t.Fatal(err)
		}
	}
	write()
	if st := s.RelayStats(); st.Relayed != bound || st.QueueFull != 64-bound {
		t.Fatalf("after 64 packets into a queue of %d: %+v, want %d relayed, %d dropped", bound, st, bound, 64-bound)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const writes = 50
	for range writes {
		write()
	}
	runtime.ReadMemStats(&after)
	if st := s.RelayStats(); st.Relayed != bound || st.QueueFull != (writes+1)*64-bound {
		t.Errorf("after a flood of %d packets: %+v, want %d relayed, %d dropped", (writes+1)*64, st, bound, (writes+1)*64-bound)
	}
	// A queue that grew, or an allocation per packet, would show. (The race detector's
	// sync.Pool drops items at random, so the Write's pooled GRO state is sometimes new.)
	if mallocs := after.Mallocs - before.Mallocs; mallocs > writes*64/8 {
		t.Errorf("a flood of %d packets made %d allocations, want < %d", writes*64, mallocs, writes*64/8)
	}
	var ids []int
	for len(ids) < bound {
		for _, p := range readBatch(t, s, 5, 0) {
			if _, dst, _, _ := parseIP(p); dst == far4 {
				ids = append(ids, int(binary.BigEndian.Uint16(p[4:])))
			}
		}
	}
	for i, id := range ids {
		if id != i {
			t.Fatalf("drained identifications %v, want 0..%d in order", ids, bound-1)
		}
	}
	if q := s.tun.ring.Load().queued(); q != 0 {
		t.Errorf("queue holds %d packets after draining, want 0", q)
	}
}

// TestRelayOversize: a packet larger than a slot is dropped and counted, not truncated.
func TestRelayOversize(t *testing.T) {
	s := relayStack(t, Config{}, nil)
	if _, err := s.TUN().Write(withOffset(0, ip4(b4, far4, 64, 3000)), 0); err != nil {
		t.Fatal(err)
	}
	if st := s.RelayStats(); st.Oversize != 1 || st.Relayed != 0 {
		t.Errorf("relaying a 3020-byte packet: %+v, want 1 oversize, 0 relayed", st)
	}
}

// FuzzRelayPacket feeds arbitrary bytes to the relay's packet parsing: parseIP never reads
// past the packet, and a packet it accepts survives hop with its TTL one lower, its IPv4
// checksum valid if it was, and every other byte unchanged; then the same bytes go through
// the TUN with the relay on, which must neither panic nor queue anything parseIP rejects.
func FuzzRelayPacket(f *testing.F) {
	f.Add(ip4(b4, far4, 64, 8))
	f.Add(ip4(b4, a4, 2, 0))
	f.Add(ip6(b6, far6, 64, 8))
	f.Add(ip6(b6, far6, 1, 0))
	f.Add([]byte{0x4f, 0, 0, 20})
	f.Add([]byte{})
	s, err := New(Config{Addrs: []netip.Addr{a4, a6}, RelayQueueSize: 4})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	s.SetRelay(func(src, dst netip.Addr) bool { return true })
	f.Fuzz(func(t *testing.T, p []byte) {
		src, dst, n, ok := parseIP(p)
		if !ok {
			if src.IsValid() || dst.IsValid() || n != 0 {
				t.Fatalf("parseIP rejected % x but returned %v, %v, %d", p, src, dst, n)
			}
		} else {
			if n > len(p) || n < ipv4MinLen {
				t.Fatalf("parseIP(% x) length %d, packet has %d", p, n, len(p))
			}
			q := bytes.Clone(p)
			v4 := p[0]>>4 == 4
			ttlAt := ipv6HopLimit
			if v4 {
				ttlAt = ipv4TTL
			}
			if hop(q) {
				if q[ttlAt] != p[ttlAt]-1 {
					t.Fatalf("hop: ttl %d → %d", p[ttlAt], q[ttlAt])
				}
				if v4 && ipv4ChecksumOK(p[:n]) && !ipv4ChecksumOK(q[:n]) {
					t.Fatalf("hop broke the checksum of % x: % x", p, q)
				}
				for i := range q {
					if i != ttlAt && !(v4 && (i == ipv4Checksum || i == ipv4Checksum+1)) && q[i] != p[i] {
						t.Fatalf("hop changed byte %d of % x: % x", i, p, q)
					}
				}
			} else if !bytes.Equal(p, q) || p[ttlAt] > 1 {
				t.Fatalf("hop refused ttl %d or changed the packet", p[ttlAt])
			}
		}
		if len(p) == 0 || (p[0]>>4 != 4 && p[0]>>4 != 6) {
			return // Write refuses the batch: not an IP packet
		}
		before := s.RelayStats()
		if _, err := s.TUN().Write([][]byte{bytes.Clone(p)}, 0); err != nil {
			t.Fatalf("Write(% x): %v", p, err)
		}
		if after := s.RelayStats(); after.Relayed > before.Relayed && !ok {
			t.Fatalf("relayed % x, which parseIP rejects", p)
		}
		s.tun.ring.Load().pop(make([][]byte, 4), make([]int, 4), 0) // keep the queue from filling
	})
}
