package netstack

import (
	"context"
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
//  1. Outbound (stack → peer): gVisor writes packets into the channel endpoint's bounded queue;
//     Read blocks for the first one, then takes up to len(bufs)-1 more without blocking, so
//     one call hands wireguard-go a batch to encrypt.
//  2. Inbound (peer → stack): wireguard-go's per-peer receiver calls Write with a batch of
//     decrypted packets. They pass through gVisor's GRO, which merges consecutive segments of
//     one TCP flow, and are delivered to the stack on the caller's goroutine when the batch
//     ends. Fewer, larger segments mean fewer ACKs to encrypt and send back.
//
// Close unblocks Read, makes Read and Write return os.ErrClosed, and closes Events; it does
// not touch the gVisor stack (Stack.Close does).
type tunDevice struct {
	ep     *link
	mtu    int
	batch  int
	events chan tun.Event

	ctx       context.Context // done once closed; cancels a blocked Read
	cancel    context.CancelFunc
	closeOnce sync.Once
}

var _ tun.Device = (*tunDevice)(nil)

func newTUN(ep *link, mtu, batch int) *tunDevice {
	ctx, cancel := context.WithCancel(context.Background())
	t := &tunDevice{ep: ep, mtu: mtu, batch: batch, events: make(chan tun.Event, 1), ctx: ctx, cancel: cancel}
	t.events <- tun.EventUp
	return t
}

func (t *tunDevice) File() *os.File           { return nil }
func (t *tunDevice) Name() (string, error)    { return "printgate", nil }
func (t *tunDevice) MTU() (int, error)        { return t.mtu, nil }
func (t *tunDevice) BatchSize() int           { return t.batch }
func (t *tunDevice) Events() <-chan tun.Event { return t.events }

// Read implements tun.Device.
func (t *tunDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if t.ctx.Err() != nil {
		return 0, os.ErrClosed
	}
	pkt := t.ep.ReadContext(t.ctx)
	if pkt == nil {
		return 0, os.ErrClosed // closed, or the link endpoint went away under us
	}
	n := 0
	for pkt != nil {
		if size := pkt.Size(); size <= len(bufs[n])-offset {
			b := bufs[n][offset:]
			for _, s := range pkt.AsSlices() {
				b = b[copy(b, s):]
			}
			sizes[n] = size
			n++
		} // else: larger than the MTU the device was told about; drop it.
		pkt.DecRef()
		if n == len(bufs) {
			break
		}
		pkt = t.ep.Read()
	}
	return n, nil
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
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
		pkt.NetworkProtocolNumber = proto
		g.Enqueue(pkt)
		pkt.DecRef()
	}
	return len(bufs), nil
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
