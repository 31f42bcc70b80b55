// Package tunneltest gives tests a working WireGuard tunnel in one process: a gateway (a
// tunnel.Device over a netstack.Stack) and any number of clients (each its own device and
// stack) talking over loopback UDP.
//
// Typical use, an HTTP server inside the tunnel and a client reaching it:
//
//	gw, cl := tunneltest.NewPair(t)
//	ln, err := gw.Stack.ListenTCP(netip.AddrPortFrom(gw.Addr4, 80))
//	...
//	go http.Serve(ln, handler)
//	c, err := cl.Dial(ctx, netip.AddrPortFrom(gw.Addr4, 80)) // or cl.HTTPClient()
//
// Addressing: the gateway is 10.99.0.1 and fd00:99::1; the n-th client (from 1) is
// 10.99.0.(10+n) and fd00:99::(10+n). Every client is a peer of the gateway with exactly
// those two host routes, so on the gateway a connection's RemoteAddr is the client's
// address (WireGuard drops packets whose source is not the sender's). The gateway's UDP
// endpoint is 127.0.0.1:port; nothing leaves loopback.
//
// Everything is closed by t.Cleanup: devices first, then stacks (DESIGN: device down before
// the stack closes).
package tunneltest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/printgate/printgate/netstack"
	"github.com/printgate/printgate/tunnel"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

var (
	// GatewayAddr4 and GatewayAddr6 are the gateway's tunnel addresses.
	GatewayAddr4 = netip.MustParseAddr("10.99.0.1")
	GatewayAddr6 = netip.MustParseAddr("fd00:99::1")
)

// Option changes how NewPair or NewGateway builds the gateway.
type Option func(*options)

type options struct {
	iface     string
	logf      func(string, ...any)
	psk       bool
	keepalive time.Duration
	stackCfg  netstack.Config
}

// WithInterfaceName gives the gateway device a UAPI socket of this name (root only), so
// `wg show NAME` reads it. The caller picks a unique name.
func WithInterfaceName(name string) Option { return func(o *options) { o.iface = name } }

// WithLogf sends both devices' and stacks' verbose logs to logf (t.Logf is a good choice;
// the default discards, as wireguard-go is chatty).
func WithLogf(logf func(string, ...any)) Option { return func(o *options) { o.logf = logf } }

// WithPresharedKey gives every client a fresh preshared key.
func WithPresharedKey() Option { return func(o *options) { o.psk = true } }

// WithStackConfig sets the gateway stack's MTU and buffer sizes (Addrs and Logf are ignored).
func WithStackConfig(cfg netstack.Config) Option { return func(o *options) { o.stackCfg = cfg } }

// Gateway is the gateway side: a device and the stack under it.
type Gateway struct {
	Device *tunnel.Device
	Stack  *netstack.Stack
	// PrivateKey is the gateway's private key; PublicKey is Device.PublicKey().
	PrivateKey wgtypes.Key
	PublicKey  wgtypes.Key
	// Addr4 and Addr6 are the gateway's tunnel addresses (GatewayAddr4, GatewayAddr6).
	Addr4, Addr6 netip.Addr
	// Endpoint is the gateway's UDP endpoint on loopback.
	Endpoint netip.AddrPort

	opts options

	mu      sync.Mutex
	next    int           // the next client number
	clients []*Client     // in the gateway's peer set, in order of addition
	extra   []tunnel.Peer // peers added with AddPeer
}

// Client is one client: its own device and stack, a peer of the gateway.
type Client struct {
	Device *tunnel.Device
	Stack  *netstack.Stack
	// PrivateKey is the client's key; Peer is the gateway's entry for this client (public
	// key, preshared key, and the two host routes below).
	PrivateKey wgtypes.Key
	Peer       tunnel.Peer
	// Addr4 and Addr6 are the client's tunnel addresses.
	Addr4, Addr6 netip.Addr
}

// NewPair builds a gateway and one client connected to it. No handshake has happened yet;
// the first packet the client sends starts one.
func NewPair(t testing.TB, opts ...Option) (*Gateway, *Client) {
	t.Helper()
	gw := NewGateway(t, opts...)
	return gw, gw.AddClient(t)
}

// NewGateway builds a gateway with no peers.
func NewGateway(t testing.TB, opts ...Option) *Gateway {
	t.Helper()
	var o options
	for _, f := range opts {
		f(&o)
	}
	if o.logf == nil {
		o.logf = func(string, ...any) {}
	}
	gw := &Gateway{Addr4: GatewayAddr4, Addr6: GatewayAddr6, opts: o, next: 1}
	gw.PrivateKey = mustKey(t)
	cfg := o.stackCfg
	cfg.Addrs = []netip.Addr{gw.Addr4, gw.Addr6}
	cfg.Logf = prefixed(o.logf, "gateway: ")
	gw.Stack, gw.Device = newNode(t, cfg, tunnel.Config{
		PrivateKey:    gw.PrivateKey,
		InterfaceName: o.iface,
		Logf:          prefixed(o.logf, "gateway: "),
	})
	gw.PublicKey = gw.Device.PublicKey()
	gw.Endpoint = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(gw.Device.ListenPort()))
	return gw
}

// AddClient builds a new client and applies the gateway's peer set with it added.
func (gw *Gateway) AddClient(t testing.TB) *Client {
	t.Helper()
	gw.mu.Lock()
	n := gw.next
	gw.next++
	gw.mu.Unlock()
	if n > 240 {
		t.Fatalf("tunneltest: too many clients (%d)", n)
	}
	c := &Client{
		PrivateKey: mustKey(t),
		Addr4:      netip.AddrFrom4([4]byte{10, 99, 0, byte(10 + n)}),
		Addr6:      netip.MustParseAddr(fmt.Sprintf("fd00:99::%x", 10+n)),
	}
	c.Peer = tunnel.Peer{
		PublicKey:  c.PrivateKey.PublicKey(),
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(c.Addr4, 32), netip.PrefixFrom(c.Addr6, 128)},
	}
	var psk wgtypes.Key
	if gw.opts.psk {
		psk = mustKey(t)
		c.Peer.PresharedKey = psk
	}
	name := fmt.Sprintf("client%d: ", n)
	c.Stack, c.Device = newNode(t, netstack.Config{
		Addrs: []netip.Addr{c.Addr4, c.Addr6},
		Logf:  prefixed(gw.opts.logf, name),
	}, tunnel.Config{
		PrivateKey: c.PrivateKey,
		Logf:       prefixed(gw.opts.logf, name),
	})
	err := c.Device.Apply([]tunnel.Peer{{
		PublicKey:    gw.PublicKey,
		PresharedKey: psk,
		AllowedIPs:   []netip.Prefix{netip.PrefixFrom(gw.Addr4, 32), netip.PrefixFrom(gw.Addr6, 128)},
		Endpoint:     gw.Endpoint,
	}})
	if err != nil {
		t.Fatalf("tunneltest: client %d: %v", n, err)
	}

	gw.mu.Lock()
	defer gw.mu.Unlock()
	gw.clients = append(gw.clients, c)
	if err := gw.Device.Apply(gw.peersLocked()); err != nil {
		t.Fatalf("tunneltest: gateway: add client %d: %v", n, err)
	}
	return c
}

// RemoveClient applies the gateway's peer set without c (what revocation does at the
// device). It does not close c's connections in the gateway stack: call
// gw.Stack.CloseConns for that, as the daemon does.
func (gw *Gateway) RemoveClient(t testing.TB, c *Client) {
	t.Helper()
	gw.mu.Lock()
	defer gw.mu.Unlock()
	gw.clients = slices.DeleteFunc(gw.clients, func(x *Client) bool { return x == c })
	if err := gw.Device.Apply(gw.peersLocked()); err != nil {
		t.Fatalf("tunneltest: gateway: remove client: %v", err)
	}
}

// AddPeer adds a peer that is not a tunneltest client (for example a Debian wireguard-go
// in a network namespace) to the gateway's peer set.
func (gw *Gateway) AddPeer(t testing.TB, p tunnel.Peer) {
	t.Helper()
	gw.mu.Lock()
	defer gw.mu.Unlock()
	gw.extra = append(gw.extra, p)
	if err := gw.Device.Apply(gw.peersLocked()); err != nil {
		t.Fatalf("tunneltest: gateway: add peer: %v", err)
	}
}

// Peers returns the gateway's current peer set.
func (gw *Gateway) Peers() []tunnel.Peer {
	gw.mu.Lock()
	defer gw.mu.Unlock()
	return gw.peersLocked()
}

// peersLocked builds the gateway's peer set; gw.mu must be held.
func (gw *Gateway) peersLocked() []tunnel.Peer {
	peers := make([]tunnel.Peer, 0, len(gw.clients)+len(gw.extra))
	for _, c := range gw.clients {
		peers = append(peers, c.Peer)
	}
	return append(peers, gw.extra...)
}

// Dial opens a TCP connection from the client through the tunnel.
func (c *Client) Dial(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
	return c.Stack.DialTCP(ctx, ap)
}

// HTTPClient returns an HTTP client whose connections go through c's tunnel. URLs name
// tunnel addresses, e.g. "http://10.99.0.1/". Idle connections are closed at t.Cleanup.
func (c *Client) HTTPClient(t testing.TB) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ap, err := netip.ParseAddrPort(addr)
			if err != nil {
				return nil, fmt.Errorf("tunneltest: dial %q: want a literal tunnel address: %w", addr, err)
			}
			return c.Stack.DialTCP(ctx, ap)
		},
		ForceAttemptHTTP2: false,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// newNode builds a stack and a device on it, closed in the right order at cleanup.
func newNode(t testing.TB, scfg netstack.Config, dcfg tunnel.Config) (*netstack.Stack, *tunnel.Device) {
	t.Helper()
	st, err := netstack.New(scfg)
	if err != nil {
		t.Fatalf("tunneltest: %v", err)
	}
	dcfg.TUN = st.TUN()
	dev, err := tunnel.New(dcfg)
	if err != nil {
		st.Close()
		t.Fatalf("tunneltest: %v", err)
	}
	t.Cleanup(func() {
		dev.Close() // device first: it stops reading and writing the TUN
		st.Close()
	})
	return st, dev
}

func mustKey(t testing.TB) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatalf("tunneltest: generate key: %v", err)
	}
	return k
}

func prefixed(logf func(string, ...any), prefix string) func(string, ...any) {
	return func(format string, args ...any) { logf(prefix+format, args...) }
}
