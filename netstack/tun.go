package netstack

import (
	"context"
	"os"
	"sync"
	"syscall"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// tunDevice is the tun.Device wireguard-go sees. Packet flow:
//
//  1. Outbound (stack → peer): gVisor writes packets into the channel endpoint's bounded queue;
//     Read blocks for the first one, then takes up to len(bufs)-1 more without blocking, so
//     one call hands wireguard-go a batch to encrypt.
//  2. Inbound (peer → stack): wireguard-go's per-peer receiver calls Write with a batch of
//     decrypted packets; each is injected into the stack on the caller's goroutine.
//
// Close unblocks Read, makes Read and Write return os.ErrClosed, and closes Events; it does
// not touch the gVisor stack (Stack.Close does).
type tunDevice struct {
	ep     *channel.Endpoint
	mtu    int
	events chan tun.Event

	ctx       context.Context // done once closed; cancels a blocked Read
	cancel    context.CancelFunc
	closeOnce sync.Once
}

var _ tun.Device = (*tunDevice)(nil)

func newTUN(ep *channel.Endpoint, mtu int) *tunDevice {
	ctx, cancel := context.WithCancel(context.Background())
	t := &tunDevice{ep: ep, mtu: mtu, events: make(chan tun.Event, 1), ctx: ctx, cancel: cancel}
	t.events <- tun.EventUp
	return t
}

func (t *tunDevice) File() *os.File           { return nil }
func (t *tunDevice) Name() (string, error)    { return "printgate", nil }
func (t *tunDevice) MTU() (int, error)        { return t.mtu, nil }
func (t *tunDevice) BatchSize() int           { return BatchSize }
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
	for _, b := range bufs {
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
			return 0, syscall.EAFNOSUPPORT
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
		t.ep.InjectInbound(proto, pkt)
		pkt.DecRef()
	}
	return len(bufs), nil
}

// Close implements tun.Device. It is idempotent.
func (t *tunDevice) Close() error {
	t.closeOnce.Do(func() {
		t.cancel()
		close(t.events)
	})
	return nil
}
