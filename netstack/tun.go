package netstack

import (
	"context"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
)

// tunDevice is the tun.Device wireguard-go sees. Packet flow:
//
//  1. Outbound (stack → peer): gVisor writes packets into the channel endpoint's bounded queue
//     and, once the relay is on, the relay queues packets into its ring (relay.go); either
//     wakes Read, which takes what both hold without blocking, up to len(bufs), so one call
//     hands wireguard-go a batch to encrypt. When both are busy each gets at least half.
//  2. Inbound (peer → stack): wireguard-go's per-peer receiver calls Write with a batch of
//     decrypted packets. A packet the relay takes goes to the ring (3); the rest pass through
//     gVisor's GRO, which merges consecutive segments of one TCP flow, and are delivered to
//     the stack on the caller's goroutine when the batch ends. Fewer, larger segments mean
//     fewer ACKs to encrypt and send back.
//  3. Relay (peer → peer): a packet for an address the stack does not own, which the relay
//     predicate allows, has its TTL decremented and is copied into the ring; Read hands it
//     back to wireguard-go, whose AllowedIPs send it on to the peer that owns the address.
//
// Close unblocks Read, makes Read and Write return os.ErrClosed, and closes Events; it does
// not touch the gVisor stack (Stack.Close does).
type tunDevice struct {
	ep     *link
	mtu    int
	batch  int
	events chan tun.Event
	wake   chan struct{} // one token: the link queue or the ring has packets for Read

	// local is the stack's own addresses, replaced whole by setLocal (copy on write).
	local atomic.Pointer[map[netip.Addr]bool]
	// allow is the relay predicate; nil while the relay is off.
	allow atomic.Pointer[relayFunc]
	// ring is the relay queue, created when the relay is first turned on, never removed.
	ring       atomic.Pointer[ring]
	ringSlots  int
	ringMu     sync.Mutex // serializes setRelay
	relayStats relayCounters

	ctx       context.Context // done once closed; cancels a blocked Read
	cancel    context.CancelFunc
	closeOnce sync.Once
}

var _ tun.Device = (*tunDevice)(nil)

func newTUN(ep *link, mtu, batch int) *tunDevice {
	ctx, cancel := context.WithCancel(context.Background())
	t := &tunDevice{
		ep: ep, mtu: mtu, batch: batch,
		events: make(chan tun.Event, 1), wake: make(chan struct{}, 1),
		ringSlots: DefaultQueueSize,
		ctx:       ctx, cancel: cancel,
	}
	t.local.Store(new(map[netip.Addr]bool))
	ep.AddNotify(t)
	t.events <- tun.EventUp
	return t
}

func (t *tunDevice) File() *os.File           { return nil }
func (t *tunDevice) Name() (string, error)    { return "printgate", nil }
func (t *tunDevice) MTU() (int, error)        { return t.mtu, nil }
func (t *tunDevice) BatchSize() int           { return t.batch }
func (t *tunDevice) Events() <-chan tun.Event { return t.events }

// WriteNotify implements channel.Notification: gVisor queued an outbound packet.
func (t *tunDevice) WriteNotify() { t.wakeReader() }

func (t *tunDevice) wakeReader() {
	select {
	case t.wake <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// setLocal replaces the set of the stack's own addresses.
func (t *tunDevice) setLocal(addrs map[netip.Addr]bool) {
	m := make(map[netip.Addr]bool, len(addrs))
	for a := range addrs {
		m[a] = true
	}
	t.local.Store(&m)
}

func (t *tunDevice) setRelay(allow func(src, dst netip.Addr) bool) {
	t.ringMu.Lock()
	defer t.ringMu.Unlock()
	if allow == nil {
		t.allow.Store(nil)
		return
	}
	if t.ring.Load() == nil {
		t.ring.Store(newRing(t.ringSlots, relaySlot(t.mtu)))
	}
	f := relayFunc(allow)
	t.allow.Store(&f)
}

// Read implements tun.Device.
func (t *tunDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		if t.ctx.Err() != nil {
			return 0, os.ErrClosed
		}
		if n := t.fill(bufs, sizes, offset); n > 0 {
			return n, nil
		}
		select {
		case <-t.wake:
		case <-t.ctx.Done():
			return 0, os.ErrClosed
		}
	}
}

// fill takes queued packets without blocking: up to half the batch from the relay ring, then
// the stack's own, then the relay's again.
func (t *tunDevice) fill(bufs [][]byte, sizes []int, offset int) int {
	r := t.ring.Load()
	n := 0
	if r != nil {
		n = t.popRelay(r, bufs[:(len(bufs)+1)/2], sizes, offset)
	}
	n += t.readStack(bufs[n:], sizes[n:], offset)
	if r != nil && n < len(bufs) {
		n += t.popRelay(r, bufs[n:], sizes[n:], offset)
	}
	return n
}

func (t *tunDevice) popRelay(r *ring, bufs [][]byte, sizes []int, offset int) int {
	n, dropped := r.pop(bufs, sizes, offset)
	if dropped > 0 {
		t.relayStats.oversize.Add(uint64(dropped))
	}
	return n
}

// readStack copies packets from gVisor's outbound queue into bufs.
func (t *tunDevice) readStack(bufs [][]byte, sizes []int, offset int) int {
	n := 0
	for n < len(bufs) {
		pkt := t.ep.Read()
		if pkt == nil {
			break
		}
		if size := pkt.Size(); size <= len(bufs[n])-offset {
			b := bufs[n][offset:]
			for _, s := range pkt.AsSlices() {
				b = b[copy(b, s):]
			}
			sizes[n] = size
			n++
		} // else: larger than the MTU the device was told about; drop it.
		pkt.DecRef()
	}
	return n
}

// Write implements tun.Device.
func (t *tunDevice) Write(bufs [][]byte, offset int) (int, error) {
	if t.ctx.Err() != nil {
		return 0, os.ErrClosed
	}
	d := t.ep.dispatcher()
	if d == nil {
		return 0, os.ErrClosed
	}
	var allow relayFunc
	var local map[netip.Addr]bool
	if f := t.allow.Load(); f != nil {
		allow, local = *f, *t.local.Load()
	}
	relayed := false
	g := groPool.Get().(*gro.GRO)
	g.Dispatcher = d
	defer func() {
		// gro.GRO.Flush delivers only the first packet of each bucket (it resets the list
		// entry it is iterating over), so flush until every bucket is empty: each call takes
		// at least one packet from each non-empty bucket, and a bucket holds at most
		// groBucketSize (8) packets.
		for range groBucketSize {
			g.Flush()
		}
		g.Dispatcher = nil
		groPool.Put(g)
		if relayed {
			t.wakeReader()
		}
	}()
	for i, b := range bufs {
		p := b[offset:]
		if len(p) == 0 {
			continue
		}
		var proto = header.IPv4ProtocolNumber
		switch p[0] >> 4 {
		case 4:
		case 6:
			proto = header.IPv6ProtocolNumber
		default:
			return i, syscall.EAFNOSUPPORT
		}
		if allow != nil {
			if taken, queued := t.relay(p, allow, local); taken {
				relayed = relayed || queued
				continue
			}
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
		pkt.NetworkProtocolNumber = proto
		g.Enqueue(pkt)
		pkt.DecRef()
	}
	return len(bufs), nil
}

// relay takes p if it is to be relayed. taken is false, p left alone, when p is for the stack
// (its destination is one of local, or not a unicast address, or allow says no); otherwise p
// was queued for wireguard-go (queued) or dropped: expired, too big, or the queue was full.
func (t *tunDevice) relay(p []byte, allow relayFunc, local map[netip.Addr]bool) (taken, queued bool) {
	src, dst, n, ok := parseIP(p)
	if !ok || local[dst] || !dst.IsGlobalUnicast() || dst.Is4In6() || !allow(src, dst) {
		return false, false
	}
	r := t.ring.Load()
	switch {
	case n > r.slot:
		t.relayStats.oversize.Add(1)
	case !hop(p):
		t.relayStats.expired.Add(1)
	case !r.push(p[:n]):
		t.relayStats.full.Add(1)
	default:
		t.relayStats.relayed.Add(1)
		return true, true
	}
	return true, false
}

// groBucketSize is gvisor.dev/gvisor/pkg/tcpip/stack/gro's groBucketSize.
const groBucketSize = 8

// groPool holds GRO state for concurrent Writes (one per peer receiver).
var groPool = sync.Pool{New: func() any {
	g := new(gro.GRO)
	g.Init(true)
	return g
}}

// link is the stack's link endpoint: the channel endpoint's bounded outbound queue, plus
// the stack's dispatcher kept for the GRO on the inbound path.
type link struct {
	*channel.Endpoint
	disp atomic.Pointer[stack.NetworkDispatcher]
}

func newLink(size int, mtu uint32) *link {
	l := &link{Endpoint: channel.New(size, mtu, "")}
	// GRO merges segments without fixing checksums, so the NIC must not check them again.
	// GRO itself verifies the IP and TCP checksums of every TCP packet it sees before merging;
	// anything else arrived under WireGuard's Poly1305 tag, a far stronger integrity check
	// than the Internet checksum.
	l.LinkEPCapabilities = stack.CapabilityRXChecksumOffload
	return l
}

// Attach implements stack.LinkEndpoint.
func (l *link) Attach(d stack.NetworkDispatcher) {
	l.Endpoint.Attach(d)
	if d == nil {
		l.disp.Store(nil)
		return
	}
	l.disp.Store(&d)
}

func (l *link) dispatcher() stack.NetworkDispatcher {
	if d := l.disp.Load(); d != nil {
		return *d
	}
	return nil
}

// Close implements tun.Device. It is idempotent.
func (t *tunDevice) Close() error {
	t.closeOnce.Do(func() {
		t.cancel()
		close(t.events)
	})
	return nil
}
