package tunneltest

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/netstack"
	"github.com/printgate/printgate/tunnel"
)

// WireGuard message sizes (whitepaper §5.4), for tests that craft datagrams.
const (
	SizeInitiation = 148
	SizeResponse   = 92
	SizeCookie     = 64
	SizeTransport  = 32 // header + empty AEAD tag
)

// WithMAC1 fills msg's mac1 field (the 16 bytes before the last 16) as a sender that knows the
// responder's public key pub would: BLAKE2s-128 keyed with HASH("mac1----" || pub); mac2 is
// zeroed (no cookie). It modifies and returns msg.
func WithMAC1(msg []byte, pub wgtypes.Key) []byte {
	h, _ := blake2s.New256(nil)
	h.Write([]byte("mac1----"))
	h.Write(pub[:])
	m, _ := blake2s.New128(h.Sum(nil))
	off := len(msg) - 32
	m.Write(msg[:off])
	copy(msg[off:off+16], m.Sum(nil))
	clear(msg[off+16:])
	return msg
}

// CaptureInitiation returns a real handshake initiation for the responder key gw, made by a
// wireguard-go device whose own key nobody knows and caught on a loopback socket instead of
// being delivered. Replaying it tests how a gateway treats a stranger's genuine handshake.
func CaptureInitiation(t testing.TB, gw wgtypes.Key) []byte {
	t.Helper()
	capture, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Close()
	st, err := netstack.New(netstack.Config{Addrs: []netip.Addr{netip.MustParseAddr("10.99.0.200")}})
	if err != nil {
		t.Fatal(err)
	}
	k, _ := wgtypes.GeneratePrivateKey()
	d, err := tunnel.New(tunnel.Config{PrivateKey: k, TUN: st.TUN()})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	defer func() { d.Close(); st.Close() }()
	err = d.Apply([]tunnel.Peer{{
		PublicKey:  gw,
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.0.1/32")},
		Endpoint:   capture.LocalAddr().(*net.UDPAddr).AddrPort(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	// A dial towards the responder makes the device initiate.
	ctx, cancel := context.WithCancel(context.Background())
	dialed := make(chan struct{})
	go func() {
		defer close(dialed)
		if c, err := st.DialTCP(ctx, netip.MustParseAddrPort("10.99.0.1:80")); err == nil {
			c.Close()
		}
	}()
	defer func() { cancel(); <-dialed }()
	buf := make([]byte, 2048)
	capture.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		n, _, err := capture.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("capture initiation: %v", err)
		}
		if n == SizeInitiation && buf[0] == 1 {
			return append([]byte(nil), buf[:n]...)
		}
	}
}
