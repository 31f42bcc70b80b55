package netstack_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/printgate/printgate/netstack"
	"github.com/printgate/printgate/tunnel/tunneltest"
)

// serveEcho accepts on ap of s and echoes every connection; it sends each accepted
// connection's remote address on the returned channel.
func serveEcho(t *testing.T, s *netstack.Stack, ap netip.AddrPort) <-chan netip.Addr {
	t.Helper()
	ln, err := s.ListenTCP(ap)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	remotes := make(chan netip.Addr, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case remotes <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap():
			default:
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return remotes
}

// echoThrough dials ap from s and checks that 64 KiB come back intact.
func echoThrough(t *testing.T, s *netstack.Stack, ap netip.AddrPort) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := s.DialTCP(ctx, ap)
	if err != nil {
		t.Fatalf("dial %v: %v", ap, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	msg := make([]byte, 64<<10)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	errc := make(chan error, 1)
	go func() { _, err := c.Write(msg); errc <- err }()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("echo via %v: read: %v", ap, err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("echo via %v: write: %v", ap, err)
	}
	for i := range got {
		if got[i] != msg[i] {
			t.Fatalf("echo via %v: byte %d = %#x, want %#x", ap, i, got[i], msg[i])
		}
	}
}

// unreachable checks that a dial from s to ap does not connect. A relayed SYN would be
// answered within milliseconds; two seconds leave room for a loaded machine and keep the
// test short.
func unreachable(t *testing.T, s *netstack.Stack, ap netip.AddrPort) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := s.DialTCP(ctx, ap)
	if err == nil {
		c.Close()
		t.Fatalf("dial %v connected, want no route", ap)
	}
}

// TestRelayMesh runs real WireGuard devices over loopback UDP: a device homed at gateway A
// reaches a printer on gateway B through A's relay, over IPv4 and IPv6, and B reaches the
// device back; B sees the device's own address. With the relay off, or a predicate that says
// no, it does not; device to device through A is not relayed by the daemon's policy.
func TestRelayMesh(t *testing.T) {
	m := tunneltest.NewMesh(t, nil)
	m.RelayAtA()
	printer4 := netip.AddrPortFrom(m.Printer4, 80)
	printer6 := netip.AddrPortFrom(m.Printer6, 80)
	atPrinter := serveEcho(t, m.B.Stack, printer4)
	serveEcho(t, m.B.Stack, printer6)
	atDevice := serveEcho(t, m.Device.Stack, netip.AddrPortFrom(m.Device.Addrs[0], 8080))
	atNeighbour := serveEcho(t, m.Neighbour.Stack, netip.AddrPortFrom(m.Neighbour.Addrs[0], 80))

	t.Run("device to remote printer", func(t *testing.T) {
		echoThrough(t, m.Device.Stack, printer4)
		if got := <-atPrinter; got != m.Device.Addrs[0] {
			t.Errorf("printer saw remote address %v, want the device's %v", got, m.Device.Addrs[0])
		}
		echoThrough(t, m.Device.Stack, printer6)
	})
	t.Run("remote gateway to device", func(t *testing.T) {
		echoThrough(t, m.B.Stack, netip.AddrPortFrom(m.Device.Addrs[0], 8080))
		if got := <-atDevice; got != m.B.Addrs[0] {
			t.Errorf("device saw remote address %v, want gateway B's %v", got, m.B.Addrs[0])
		}
	})
	t.Run("device to device not relayed", func(t *testing.T) {
		policy := tunneltest.RelayPolicy(m.B.Addrs, []*tunneltest.Node{m.Device, m.Neighbour})
		var asked atomic.Int32
		m.A.Stack.SetRelay(func(src, dst netip.Addr) bool {
			if src == m.Device.Addrs[0] && dst == m.Neighbour.Addrs[0] {
				asked.Add(1)
			}
			return policy(src, dst)
		})
		unreachable(t, m.Device.Stack, netip.AddrPortFrom(m.Neighbour.Addrs[0], 80))
		for deadline := time.Now().Add(20 * time.Second); asked.Load() == 0; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("A's relay was never asked about the device's SYN to its neighbour")
			}
		}
		select {
		case r := <-atNeighbour:
			t.Errorf("neighbour accepted a connection from %v", r)
		default:
		}
	})
	t.Run("relay off", func(t *testing.T) {
		m.A.Stack.SetRelay(nil)
		unreachable(t, m.Device.Stack, printer4)
		m.A.Stack.SetRelay(func(src, dst netip.Addr) bool { return false })
		unreachable(t, m.Device.Stack, printer6)
		m.RelayAtA()
		echoThrough(t, m.Device.Stack, printer4)
	})
	t.Run("predicate swapped under traffic", func(t *testing.T) {
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				m.RelayAtA() // a fresh predicate each time, as the daemon's roster changes
				time.Sleep(time.Millisecond)
			}
		}()
		echoThrough(t, m.Device.Stack, printer6)
		echoThrough(t, m.B.Stack, netip.AddrPortFrom(m.Device.Addrs[0], 8080))
		close(stop)
		<-done
	})
	if st := m.A.Stack.RelayStats(); st.QueueFull != 0 || st.Expired != 0 || st.Oversize != 0 {
		t.Errorf("A's relay stats %+v: want no drops", st)
	}
	if st := m.B.Stack.RelayStats(); st != (netstack.RelayStats{}) {
		t.Errorf("B (relay off) relay stats %+v, want zero", st)
	}
}

// TestRelayLoop: two misrouted gateways that each route an address to the other, accept the
// source from each other, and relay everything pass a packet back and forth until its TTL runs
// out, and no longer: every packet that entered the loop is relayed 63 times (TTL 64), then
// dropped. (WireGuard's source check stops most loops sooner: a device's packet coming back
// to its home gateway from another gateway is dropped there.)
func TestRelayLoop(t *testing.T) {
	m := tunneltest.NewMesh(t, nil)
	loop := netip.MustParseAddr("10.98.7.7")
	// A believes both the loop address and its own first address are behind B; B believes
	// the loop address is behind A.
	m.A.Apply(t, m.Device.Peer(), m.Neighbour.Peer(), m.B.Peer(tunneltest.Host(loop), tunneltest.Host(m.A.Addrs[0])))
	m.B.Apply(t, m.Direct.Peer(), m.A.Peer(tunneltest.Host(loop)))
	all := func(src, dst netip.Addr) bool { return true }
	m.A.Stack.SetRelay(all)
	m.B.Stack.SetRelay(all)

	unreachable(t, m.A.Stack, netip.AddrPortFrom(loop, 80))
	var expired, relayed uint64
	for deadline := time.Now().Add(30 * time.Second); ; {
		a, b := m.A.Stack.RelayStats(), m.B.Stack.RelayStats()
		expired, relayed = a.Expired+b.Expired, a.Relayed+b.Relayed
		if expired > 0 && relayed == 63*expired {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s: A %+v, B %+v; want the looping SYNs expired, each after 63 relays", a, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("%d SYNs looped, relayed %d times in all, then expired", expired, relayed)
}
