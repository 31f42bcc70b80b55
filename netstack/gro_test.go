package netstack

import (
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

type countingDispatcher struct{ n int }

func (d *countingDispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {
	d.n++
}
func (d *countingDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// tcp4 builds a checksummed IPv4 TCP segment (ACK only, so GRO may hold it) with payload n.
func tcp4(srcPort uint16, seq uint32, n int) []byte {
	src := tcpip.AddrFrom4([4]byte{10, 0, 0, 2})
	dst := tcpip.AddrFrom4([4]byte{10, 0, 0, 1})
	b := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize+n)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src, DstAddr: dst})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(b[header.IPv4MinimumSize:])
	tcp.Encode(&header.TCPFields{SrcPort: srcPort, DstPort: 80, SeqNum: seq, AckNum: 1, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagAck, WindowSize: 1000})
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(tcp)))
	xsum = checksum.Checksum(tcp[header.TCPMinimumSize:], xsum)
	tcp.SetChecksum(^tcp.CalculateChecksum(xsum))
	return b
}

// TestWriteDeliversWholeBatch: every packet of a Write reaches the stack before Write
// returns, even when GRO holds many flows in one bucket (gro.Flush alone leaves all but the
// first packet of a bucket behind); consecutive segments of one flow are merged.
func TestWriteDeliversWholeBatch(t *testing.T) {
	l := newLink(16, 1420)
	d := &countingDispatcher{}
	l.Attach(d)
	dev := newTUN(l, 1420, 64)
	defer dev.Close()

	var batch [][]byte
	for port := range uint16(40) {
		batch = append(batch, tcp4(1000+port, 1, 100))
	}
	if _, err := dev.Write(batch, 0); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if d.n != len(batch) {
		t.Errorf("Write of %d flows delivered %d packets, want %d", len(batch), d.n, len(batch))
	}

	d.n = 0
	batch = batch[:0]
	for i := range uint32(10) {
		batch = append(batch, tcp4(2000, 1+i*100, 100))
	}
	if _, err := dev.Write(batch, 0); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if d.n != 1 {
		t.Errorf("Write of 10 consecutive segments delivered %d packets, want 1 (merged by GRO)", d.n)
	}
}
