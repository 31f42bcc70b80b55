package netstack

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

var (
	a4 = netip.MustParseAddr("10.0.0.1")
	a6 = netip.MustParseAddr("fd00::1")
	b4 = netip.MustParseAddr("10.0.0.2")
	b6 = netip.MustParseAddr("fd00::2")
)

func newStack(t *testing.T, addrs ...netip.Addr) *Stack {
	t.Helper()
	s, err := New(Config{Addrs: addrs, Logf: t.Logf})
	if err != nil {
		t.Fatalf("New(%v): %v", addrs, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// wire connects two stacks' TUNs back to back (no WireGuard), the way the device would.
// It stops when either TUN closes; cleanup closes both TUNs and waits.
func wire(t *testing.T, x, y *Stack) {
	t.Helper()
	var wg sync.WaitGroup
	pump := func(from, to tun.Device) {
		defer wg.Done()
		bufs := make([][]byte, from.BatchSize())
		for i := range bufs {
			bufs[i] = make([]byte, 65535)
		}
		sizes := make([]int, len(bufs))
		for {
			n, err := from.Read(bufs, sizes, 0)
			if err != nil {
				return
			}
			out := make([][]byte, n)
			for i := range n {
				out[i] = bufs[i][:sizes[i]]
			}
			if _, err := to.Write(out, 0); err != nil {
				return
			}
		}
	}
	wg.Add(2)
	go pump(x.TUN(), y.TUN())
	go pump(y.TUN(), x.TUN())
	t.Cleanup(func() {
		x.TUN().Close()
		y.TUN().Close()
		wg.Wait()
	})
}

func TestNewConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero", Config{}, true},
		{"addrs", Config{Addrs: []netip.Addr{a4, a6}}, true},
		{"mtu too small", Config{MTU: 576}, false},
		{"mtu too big", Config{MTU: 70000}, false},
		{"tiny buffers", Config{TCPReceiveBuffer: 100}, false},
		{"relay queue", Config{RelayQueueSize: 8}, true},
		{"negative relay queue", Config{RelayQueueSize: -1}, false},
		{"unspecified addr", Config{Addrs: []netip.Addr{netip.IPv4Unspecified()}}, false},
		{"invalid addr", Config{Addrs: []netip.Addr{{}}}, false},
		{"duplicate addr", Config{Addrs: []netip.Addr{a4, a4}}, false},
		{"mapped addr", Config{Addrs: []netip.Addr{netip.MustParseAddr("::ffff:10.0.0.1")}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.cfg)
			if (err == nil) != tc.ok {
				t.Fatalf("New(%+v) error = %v, want ok=%v", tc.cfg, err, tc.ok)
			}
			if s != nil {
				s.Close()
			}
		})
	}
}

// TestTuning checks what the stack was told: SACK on, RACK off, reno, bounded buffers.
func TestTuning(t *testing.T) {
	s, err := New(Config{TCPReceiveBuffer: 300 << 10, TCPSendBuffer: 200 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var sack tcpip.TCPSACKEnabled
	var rec tcpip.TCPRecovery
	var cc tcpip.CongestionControlOption
	var rcv tcpip.TCPReceiveBufferSizeRangeOption
	var snd tcpip.TCPSendBufferSizeRangeOption
	for _, o := range []tcpip.GettableTransportProtocolOption{&sack, &rec, &cc, &rcv, &snd} {
		if err := s.stack.TransportProtocolOption(tcp.ProtocolNumber, o); err != nil {
			t.Fatalf("TransportProtocolOption(%T): %v", o, err)
		}
	}
	if !sack {
		t.Errorf("SACK = %v, want true", sack)
	}
	if rec != 0 {
		t.Errorf("TCPRecovery = %v, want 0 (RACK off)", rec)
	}
	if cc != "reno" {
		t.Errorf("congestion control = %q, want reno", cc)
	}
	if rcv.Max != 300<<10 || snd.Max != 200<<10 {
		t.Errorf("buffer max = %d/%d, want %d/%d", rcv.Max, snd.Max, 300<<10, 200<<10)
	}
	d, _ := New(Config{})
	defer d.Close()
	d.stack.TransportProtocolOption(tcp.ProtocolNumber, &rcv)
	d.stack.TransportProtocolOption(tcp.ProtocolNumber, &snd)
	if rcv.Max != DefaultTCPReceiveBuffer || snd.Max != DefaultTCPSendBuffer {
		t.Errorf("default buffer max = %d/%d, want %d/%d", rcv.Max, snd.Max, DefaultTCPReceiveBuffer, DefaultTCPSendBuffer)
	}
}

func TestListenOwnAddressesOnly(t *testing.T) {
	s := newStack(t, a4, a6)
	extra := netip.MustParseAddr("10.0.0.9")
	for _, tc := range []struct {
		ap netip.AddrPort
		ok bool
	}{
		{netip.AddrPortFrom(a4, 80), true},
		{netip.AddrPortFrom(a6, 80), true},
		{netip.AddrPortFrom(b4, 80), false},
		{netip.AddrPortFrom(netip.IPv4Unspecified(), 80), false},
		{netip.AddrPortFrom(netip.IPv6Unspecified(), 80), false},
		{netip.AddrPortFrom(extra, 80), false},
		{netip.AddrPort{}, false},
	} {
		l, err := s.ListenTCP(tc.ap)
		if (err == nil) != tc.ok {
			t.Errorf("ListenTCP(%v) error = %v, want ok=%v", tc.ap, err, tc.ok)
		}
		if l != nil {
			l.Close()
		}
	}
	if err := s.AddAddr(extra); err != nil {
		t.Fatalf("AddAddr(%v): %v", extra, err)
	}
	l, err := s.ListenTCP(netip.AddrPortFrom(extra, 80))
	if err != nil {
		t.Fatalf("ListenTCP(%v) after AddAddr: %v", extra, err)
	}
	l.Close()
}

// echo serves an echo server on ap and returns the accepted connections as they arrive.
func echo(t *testing.T, s *Stack, ap netip.AddrPort) <-chan net.Conn {
	t.Helper()
	l, err := s.ListenTCP(ap)
	if err != nil {
		t.Fatalf("ListenTCP(%v): %v", ap, err)
	}
	accepted := make(chan net.Conn, 16)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		for {
			select {
			case c := <-accepted:
				c.Close()
				continue
			default:
			}
			break
		}
		wg.Wait()
	})
	return accepted
}

func roundTrip(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return errors.New("echo mismatch")
	}
	return nil
}

func dial(t *testing.T, s *Stack, ap netip.AddrPort) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := s.DialTCP(ctx, ap)
	if err != nil {
		t.Fatalf("DialTCP(%v): %v", ap, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestCloseConns is revocation at the stack: connections from the matched address are reset
// (Reads on both ends fail), others survive, listeners keep accepting.
func TestCloseConns(t *testing.T) {
	srv := newStack(t, a4, a6)
	cli := newStack(t, b4, b6)
	wire(t, srv, cli)
	acc4 := echo(t, srv, netip.AddrPortFrom(a4, 80))
	acc6 := echo(t, srv, netip.AddrPortFrom(a6, 80))

	c4 := dial(t, cli, netip.AddrPortFrom(a4, 80))
	c6 := dial(t, cli, netip.AddrPortFrom(a6, 80))
	for _, c := range []net.Conn{c4, c6} {
		if err := roundTrip(c, "hello"); err != nil {
			t.Fatalf("echo over %v: %v", c.RemoteAddr(), err)
		}
	}
	s4, s6 := <-acc4, <-acc6

	if n := srv.CloseConns(func(netip.Addr) bool { return false }); n != 0 {
		t.Errorf("CloseConns(none) = %d, want 0", n)
	}
	if n := srv.CloseConns(func(a netip.Addr) bool { return a == b6 }); n != 1 {
		t.Errorf("CloseConns(%v) = %d, want 1", b6, n)
	}
	// The server's side of the matched connection fails at once.
	s6.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := s6.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("server Read on aborted conn = %v, want a non-timeout error", err)
	}
	// The client got the RST.
	c6.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c6.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("client Read on reset conn = %v, want a non-timeout error", err)
	}
	// The other connection and the listener are untouched.
	if err := roundTrip(c4, "still here"); err != nil {
		t.Errorf("echo on unmatched conn: %v", err)
	}
	_ = s4
	c := dial(t, cli, netip.AddrPortFrom(a6, 80))
	if err := roundTrip(c, "again"); err != nil {
		t.Errorf("echo on new conn after CloseConns: %v", err)
	}
	if n := srv.CloseConns(func(a netip.Addr) bool { return a == b4 || a == b6 }); n != 2 {
		t.Errorf("CloseConns(all of client) = %d, want 2", n)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestCloseTwice(t *testing.T) {
	s, err := New(Config{Addrs: []netip.Addr{a4}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := s.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
	if _, err := s.ListenTCP(netip.AddrPortFrom(a4, 80)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ListenTCP after Close = %v, want net.ErrClosed", err)
	}
	if err := s.AddAddr(b4); !errors.Is(err, net.ErrClosed) {
		t.Errorf("AddAddr after Close = %v, want net.ErrClosed", err)
	}
}

// TestTUNClose: a Read blocked on the TUN returns os.ErrClosed when the TUN closes, and so
// do later Reads and Writes; Events is closed after delivering EventUp.
func TestTUNClose(t *testing.T) {
	s := newStack(t, a4)
	dev := s.TUN()
	if ev := <-dev.Events(); ev != tun.EventUp {
		t.Errorf("first event = %v, want EventUp", ev)
	}
	done := make(chan error, 1)
	go func() {
		_, err := dev.Read([][]byte{make([]byte, 2000)}, []int{0}, 0)
		done <- err
	}()
	dev.Close()
	if err := <-done; !errors.Is(err, os.ErrClosed) {
		t.Errorf("blocked Read after Close = %v, want os.ErrClosed", err)
	}
	if _, err := dev.Write([][]byte{{0x45}}, 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write after Close = %v, want os.ErrClosed", err)
	}
	if _, ok := <-dev.Events(); ok {
		t.Errorf("Events still open after Close")
	}
	if err := dev.Close(); err != nil {
		t.Errorf("second TUN Close = %v, want nil", err)
	}
}

// TestNoGoroutineLeak runs two stacks with traffic and checks every goroutine ends.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("traffic", func(t *testing.T) {
		srv := newStack(t, a4, a6)
		cli := newStack(t, b4, b6)
		wire(t, srv, cli)
		echo(t, srv, netip.AddrPortFrom(a4, 80))
		for range 3 {
			c := dial(t, cli, netip.AddrPortFrom(a4, 80))
			if err := roundTrip(c, "leak?"); err != nil {
				t.Fatal(err)
			}
		}
	})
	waitGoroutines(t, before)
}

func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines = %d, want <= %d\n%s", runtime.NumGoroutine(), want, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
