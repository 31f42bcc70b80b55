package tunnel_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/printgate/printgate/netstack"
	"github.com/printgate/printgate/tunnel"
	"github.com/printgate/printgate/tunnel/tunneltest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// echo serves an echo server on the gateway's IPv4 address and port; accepted connections
// arrive on the returned channel.
func echo(t *testing.T, gw *tunneltest.Gateway, port uint16) <-chan net.Conn {
	t.Helper()
	ln, err := gw.Stack.ListenTCP(netip.AddrPortFrom(gw.Addr4, port))
	if err != nil {
		t.Fatalf("ListenTCP: %v", err)
	}
	accepted := make(chan net.Conn, 16)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			select {
			case accepted <- c:
			default:
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return accepted
}

func dial(t testing.TB, cl *tunneltest.Client, ap netip.AddrPort) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := cl.Dial(ctx, ap)
	if err != nil {
		t.Fatalf("Dial(%v): %v", ap, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func roundTrip(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(20 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo = %q, want %q", buf, msg)
	}
	return nil
}

func statsOf(t *testing.T, d *tunnel.Device, k wgtypes.Key) (tunnel.PeerStats, bool) {
	t.Helper()
	st, err := d.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	for _, s := range st {
		if s.PublicKey == k {
			return s, true
		}
	}
	return tunnel.PeerStats{}, false
}

// TestStatsHandshake: after traffic, Stats reports the client with a recent handshake, its
// loopback endpoint, and bytes both ways.
func TestStatsHandshake(t *testing.T) {
	gw, cl := tunneltest.NewPair(t)
	echo(t, gw, 7)
	if s, ok := statsOf(t, gw.Device, cl.Peer.PublicKey); !ok || !s.LastHandshake.IsZero() {
		t.Fatalf("Stats before traffic = %+v, %v; want the peer with no handshake", s, ok)
	}
	start := time.Now()
	if err := roundTrip(dial(t, cl, netip.AddrPortFrom(gw.Addr4, 7)), "ping"); err != nil {
		t.Fatal(err)
	}
	s, ok := statsOf(t, gw.Device, cl.Peer.PublicKey)
	if !ok {
		t.Fatalf("Stats has no peer %s", cl.Peer.PublicKey)
	}
	if s.LastHandshake.Before(start.Add(-time.Second)) || s.LastHandshake.After(time.Now().Add(time.Second)) {
		t.Errorf("LastHandshake = %v, want between %v and now", s.LastHandshake, start)
	}
	if s.RxBytes == 0 || s.TxBytes == 0 {
		t.Errorf("Rx/TxBytes = %d/%d, want both > 0", s.RxBytes, s.TxBytes)
	}
	if !s.Endpoint.Addr().IsLoopback() {
		t.Errorf("Endpoint = %v, want a loopback address", s.Endpoint)
	}
}

// TestApplyKeepsSessions: adding a peer, and changing another, leaves an existing peer's
// session alone: same handshake time, its open TCP connection keeps working.
func TestApplyKeepsSessions(t *testing.T) {
	gw, cl := tunneltest.NewPair(t)
	echo(t, gw, 7)
	c := dial(t, cl, netip.AddrPortFrom(gw.Addr4, 7))
	if err := roundTrip(c, "before"); err != nil {
		t.Fatal(err)
	}
	s0, _ := statsOf(t, gw.Device, cl.Peer.PublicKey)
	if s0.LastHandshake.IsZero() {
		t.Fatalf("no handshake after traffic")
	}

	cl2 := gw.AddClient(t) // Apply with a new peer
	if err := roundTrip(dial(t, cl2, netip.AddrPortFrom(gw.Addr4, 7)), "second"); err != nil {
		t.Fatalf("second client: %v", err)
	}
	peers := gw.Peers() // Apply with the second peer changed
	peers[1].PersistentKeepalive = 25 * time.Second
	if err := gw.Device.Apply(peers); err != nil {
		t.Fatalf("Apply(changed keepalive): %v", err)
	}

	if err := roundTrip(c, "after"); err != nil {
		t.Errorf("old connection after Apply: %v", err)
	}
	s1, ok := statsOf(t, gw.Device, cl.Peer.PublicKey)
	if !ok || !s1.LastHandshake.Equal(s0.LastHandshake) {
		t.Errorf("LastHandshake after Apply = %v (present %v), want unchanged %v", s1.LastHandshake, ok, s0.LastHandshake)
	}
}

// TestApplyInvalidChangesNothing: a peer set that fails validation leaves the device as it
// was, and a valid Apply after it works.
func TestApplyInvalidChangesNothing(t *testing.T) {
	gw, cl := tunneltest.NewPair(t)
	echo(t, gw, 7)
	c := dial(t, cl, netip.AddrPortFrom(gw.Addr4, 7))
	if err := roundTrip(c, "x"); err != nil {
		t.Fatal(err)
	}
	newKey, _ := wgtypes.GeneratePrivateKey()
	for _, tc := range []struct {
		name  string
		peers []tunnel.Peer
	}{
		{"duplicate key", []tunnel.Peer{cl.Peer, cl.Peer}},
		{"new peer steals address", []tunnel.Peer{cl.Peer, {PublicKey: newKey.PublicKey(), AllowedIPs: cl.Peer.AllowedIPs[:1]}}},
		{"subnet", []tunnel.Peer{{PublicKey: cl.Peer.PublicKey, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}}}},
		{"empty key with others removed", []tunnel.Peer{{AllowedIPs: cl.Peer.AllowedIPs}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := gw.Device.Apply(tc.peers); err == nil {
				t.Fatalf("Apply(%s) = nil, want error", tc.name)
			}
			st, err := gw.Device.Stats()
			if err != nil || len(st) != 1 || st[0].PublicKey != cl.Peer.PublicKey {
				t.Fatalf("Stats after bad Apply = %+v, %v; want only %s", st, err, cl.Peer.PublicKey)
			}
			if err := roundTrip(c, "still"); err != nil {
				t.Errorf("connection after bad Apply: %v", err)
			}
		})
	}
}

// TestRevocation is invariant 5 at the device: Apply without the peer removes it, CloseConns
// aborts its open connection in the stack, and new dials from it fail. Other peers go on.
func TestRevocation(t *testing.T) {
	gw, cl := tunneltest.NewPair(t)
	other := gw.AddClient(t)
	accepted := echo(t, gw, 7)
	c := dial(t, cl, netip.AddrPortFrom(gw.Addr4, 7))
	if err := roundTrip(c, "mine"); err != nil {
		t.Fatal(err)
	}
	server := <-accepted
	oc := dial(t, other, netip.AddrPortFrom(gw.Addr4, 7))
	if err := roundTrip(oc, "other"); err != nil {
		t.Fatal(err)
	}

	gw.RemoveClient(t, cl)
	if _, ok := statsOf(t, gw.Device, cl.Peer.PublicKey); ok {
		t.Errorf("revoked peer still on the device")
	}
	revoked := func(a netip.Addr) bool { return a == cl.Addr4 || a == cl.Addr6 }
	if n := gw.Stack.CloseConns(revoked); n != 1 {
		t.Errorf("CloseConns(revoked) = %d, want 1", n)
	}
	server.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := server.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("Read on the revoked peer's connection = %v, want a non-timeout error", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if nc, err := cl.Dial(ctx, netip.AddrPortFrom(gw.Addr4, 7)); err == nil {
		nc.Close()
		t.Errorf("Dial from revoked peer succeeded")
	}
	if err := roundTrip(oc, "other still"); err != nil {
		t.Errorf("other peer after revocation: %v", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestDeviceLifecycle: Close is once-only (a second Close, Apply and Stats wrap
// net.ErrClosed) and every goroutine of a device pair with traffic ends.
func TestDeviceLifecycle(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("pair", func(t *testing.T) {
		gw, cl := tunneltest.NewPair(t)
		echo(t, gw, 7)
		if err := roundTrip(dial(t, cl, netip.AddrPortFrom(gw.Addr4, 7)), "hi"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("close twice", func(t *testing.T) {
		st, err := netstack.New(netstack.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		k, _ := wgtypes.GeneratePrivateKey()
		d, err := tunnel.New(tunnel.Config{PrivateKey: k, TUN: st.TUN()})
		if err != nil {
			t.Fatal(err)
		}
		if d.ListenPort() == 0 || d.PublicKey() != k.PublicKey() {
			t.Errorf("ListenPort, PublicKey = %d, %v; want a port and %v", d.ListenPort(), d.PublicKey(), k.PublicKey())
		}
		if err := d.Close(); err != nil {
			t.Fatalf("first Close: %v", err)
		}
		if err := d.Close(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("second Close = %v, want net.ErrClosed", err)
		}
		if err := d.Apply(nil); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Apply after Close = %v, want net.ErrClosed", err)
		}
		if _, err := d.Stats(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Stats after Close = %v, want net.ErrClosed", err)
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines = %d, want <= %d\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNewConfig(t *testing.T) {
	st, err := netstack.New(netstack.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	k, _ := wgtypes.GeneratePrivateKey()
	for _, tc := range []struct {
		name string
		cfg  tunnel.Config
	}{
		{"no tun", tunnel.Config{PrivateKey: k}},
		{"zero key", tunnel.Config{TUN: st.TUN()}},
		{"bad port", tunnel.Config{PrivateKey: k, TUN: st.TUN(), ListenPort: 70000}},
		{"bad name", tunnel.Config{PrivateKey: k, TUN: st.TUN(), InterfaceName: "../etc/x"}},
		{"long name", tunnel.Config{PrivateKey: k, TUN: st.TUN(), InterfaceName: "abcdefghijklmnop"}},
	} {
		if d, err := tunnel.New(tc.cfg); err == nil {
			d.Close()
			t.Errorf("New(%s) = nil error, want error", tc.name)
		}
	}
}

// TestUAPIWgShow: with InterfaceName set, Debian's wg(8) reads the live device over the
// UAPI socket and sees the peer with a handshake; Close removes the socket.
func TestUAPIWgShow(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the UAPI socket lives in /var/run/wireguard")
	}
	wg, err := exec.LookPath("wg")
	if err != nil {
		t.Skip("needs Debian's wg (apt-get install wireguard-tools)")
	}
	name := fmt.Sprintf("pgt%d", time.Now().UnixNano()%1_000_000_000)
	gw, cl := tunneltest.NewPair(t, tunneltest.WithInterfaceName(name))
	echo(t, gw, 7)
	if err := roundTrip(dial(t, cl, netip.AddrPortFrom(gw.Addr4, 7)), "hi"); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(wg, "show", name, "dump").CombinedOutput()
	if err != nil {
		t.Fatalf("wg show %s dump: %v\n%s", name, err, out)
	}
	var found bool
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) == 8 && f[0] == cl.Peer.PublicKey.String() {
			found = true
			if f[4] == "0" {
				t.Errorf("wg show: latest handshake 0 for %s, want non-zero\n%s", f[0], out)
			}
		}
	}
	if !found {
		t.Errorf("wg show %s dump has no peer %s:\n%s", name, cl.Peer.PublicKey, out)
	}
	path := gw.Device.UAPIPath()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("UAPI socket: %v", err)
	}
	if err := gw.Device.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("UAPI socket after Close: stat = %v, want not exist", err)
	}
}
