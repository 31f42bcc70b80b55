package tunnel_test

import (
	"crypto/rand"
	"encoding/binary"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/printgate/printgate/tunnel/tunneltest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// TestSilence is invariant 2: 10,000 random and malformed datagrams, among them real and
// crafted handshake initiations from keys the gateway does not know, get zero bytes back,
// the gateway's heap stays flat, and its real peer still works afterwards.
func TestSilence(t *testing.T) {
	gw, cl := tunneltest.NewPair(t)
	echo(t, gw, 7)
	conn := dial(t, cl, netip.AddrPortFrom(gw.Addr4, 7))
	if err := roundTrip(conn, "before"); err != nil {
		t.Fatal(err)
	}

	// Real initiations: one with a valid mac1 for the gateway from an unknown key, one made
	// for another responder (mac1 invalid here).
	other, _ := wgtypes.GeneratePrivateKey()
	realUnknown := tunneltest.CaptureInitiation(t, gw.PublicKey)
	realOther := tunneltest.CaptureInitiation(t, other.PublicKey())

	sock, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(gw.Endpoint))
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	rnd := mrand.New(mrand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		rand.Read(b)
		return b
	}
	typed := func(typ byte, n int) []byte {
		b := random(n)
		b[0], b[1], b[2], b[3] = typ, 0, 0, 0
		return b
	}
	// junk has no valid mac1 for the gateway: no reply is allowed even under load.
	junk := func(i int) []byte {
		switch i % 16 {
		case 0, 1, 2:
			return random(rnd.IntN(1500))
		case 3:
			return nil // empty datagram
		case 4, 5:
			return typed(1, tunneltest.SizeInitiation) // random mac1
		case 6:
			return typed(1, tunneltest.SizeInitiation-1+2*rnd.IntN(2)) // wrong length
		case 7:
			return typed(2, tunneltest.SizeResponse)
		case 8:
			return typed(3, tunneltest.SizeCookie)
		case 9, 10, 11:
			b := typed(4, tunneltest.SizeTransport+rnd.IntN(1400)) // unknown receiver index
			binary.LittleEndian.PutUint64(b[8:], rnd.Uint64())
			return b
		case 12:
			return typed(byte(5+rnd.IntN(250)), 4+rnd.IntN(200))
		case 13, 14:
			return realOther
		default:
			return append(typed(1, tunneltest.SizeInitiation), random(1+rnd.IntN(64))...)
		}
	}
	// signedMsg carries a valid mac1: made by someone who knows the gateway's public key (it
	// is in every QR), but from a key the gateway does not know.
	signedMsg := func(i int) []byte {
		switch i % 4 {
		case 0:
			return realUnknown
		case 1:
			b := append([]byte(nil), realUnknown...) // a flipped bit in the encrypted static key
			b[8+32+rnd.IntN(48)] ^= 1 << rnd.IntN(8)
			return tunneltest.WithMAC1(b, gw.PublicKey)
		case 2:
			return tunneltest.WithMAC1(typed(1, tunneltest.SizeInitiation), gw.PublicKey)
		default:
			return tunneltest.WithMAC1(typed(2, tunneltest.SizeResponse), gw.PublicKey)
		}
	}
	// signedIdx holds the sender index of every signed message sent: a cookie reply names the
	// message it answers by that index.
	signedIdx := map[uint32]bool{}
	signed := func(i int) []byte {
		b := signedMsg(i)
		signedIdx[binary.LittleEndian.Uint32(b[4:8])] = true
		return b
	}

	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	// settled is the live heap once wireguard-go has worked through its queues: the least of
	// a few readings a quarter second apart. Each datagram still queued holds a 64 KiB buffer,
	// and on a loaded machine a few dozen can still be waiting when the flood ends.
	settled := func() uint64 {
		m := heap()
		for range 4 {
			time.Sleep(250 * time.Millisecond)
			m = min(m, heap())
		}
		return m
	}
	before := settled()

	reply := make([]byte, 2048)
	// checkSilent listens for wait. The one answer WireGuard allows is a 64-byte cookie reply
	// to a message with a valid mac1 while the gateway is under handshake load (whitepaper
	// §5.3; a loaded machine reaches the threshold even with the signed messages paced): it
	// must name one of the signed messages. Anything else, and any answer to junk, fails.
	cookies := 0
	checkSilent := func(wait time.Duration) {
		t.Helper()
		sock.SetReadDeadline(time.Now().Add(wait))
		for {
			n, err := sock.Read(reply)
			if err != nil && isTimeout(err) {
				return
			}
			if err == nil && n == tunneltest.SizeCookie && reply[0] == 3 && signedIdx[binary.LittleEndian.Uint32(reply[4:8])] {
				cookies++
				continue
			}
			t.Fatalf("gateway answered: %d bytes %x, err %v; want silence", n, reply[:n], err)
		}
	}
	send := func(b []byte) {
		t.Helper()
		if _, err := sock.Write(b); err != nil {
			t.Fatalf("send datagram: %v", err)
		}
	}
	// First the signed ones, paced: a few at a time, then listen. wireguard-go answers a
	// valid-mac1 handshake message with a cookie reply when it is under load (handshake queue
	// at 128 or more), which is correct protocol behaviour (whitepaper §5.3); pacing keeps the
	// queue short on a quiet machine, and checkSilent tells such a reply from a breach.
	const signedCount, junkCount = 1_000, 9_000
	const total = signedCount + junkCount
	flood := func() {
		t.Helper()
		for i := range signedCount {
			send(signed(i))
			if i%5 == 4 {
				checkSilent(10 * time.Millisecond)
			}
		}
		// Then the junk, as fast as the socket takes it; every 500, listen a moment.
		for i := range junkCount {
			send(junk(i))
			if i%500 == 499 {
				checkSilent(time.Millisecond)
			}
		}
		checkSilent(time.Second)
	}

	// The first flood may warm wireguard-go's buffer pools; floods after it must leave the
	// live heap where the first left it: strangers' packets create no state. Four more floods
	// are 40,000 datagrams, so state of even 64 bytes per datagram would add 2.5 MB, above
	// the 2 MiB allowed for noise (the GC's own bookkeeping, timers).
	flood()
	warm := settled()
	const bound = 8 << 20
	if warm > before+bound {
		t.Errorf("heap in use grew from %d to %d bytes (> %d) after %d junk datagrams", before, warm, bound, total)
	}
	const more = 4
	for range more {
		flood()
	}
	after := settled()
	const flat = 2 << 20
	if after > warm+flat {
		t.Errorf("heap in use grew from %d to %d bytes (> %d) over %d more floods of %d datagrams: junk accumulates state", warm, after, flat, more, total)
	}
	t.Logf("heap in use: before %d, after one flood %d, after %d more %d bytes", before, warm, more, after)
	t.Logf("cookie replies to valid-mac1 messages under load: %d, of %d signed messages", cookies, (1+more)*signedCount)

	if err := roundTrip(conn, "after"); err != nil {
		t.Errorf("real peer after the flood: %v", err)
	}
	if st, _ := gw.Device.Stats(); len(st) != 1 {
		t.Errorf("gateway peers after the flood = %d, want 1", len(st))
	}
}
