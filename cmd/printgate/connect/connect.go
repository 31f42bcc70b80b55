// Package connect joins a laptop to the mesh without admin rights: a userspace WireGuard
// device on a netstack (no TUN, no root), with loopback HTTP and TCP forwards and a SOCKS5
// proxy that reach printers by name and nothing outside the tunnel.
//
// Life cycle (call order):
//
//	Start ──▶ (Status / Resolve / Dial)* ──▶ Close
//
// Start brings up the stack and the device, applies the config's peers, then opens every
// listener (forwards, SOCKS) and serves them. Close, in order: listeners closed, every open
// client connection closed, serving goroutines waited for, device down, stack closed. A second
// Close returns an error wrapping net.ErrClosed.
package connect

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/netstack"
	"github.com/printgate/printgate/tunnel"
)

// Config configures a Client. The zero value of each field is documented.
type Config struct {
	// Device is the parsed wg-quick config. Required.
	Device enroll.DeviceConfig
	// Forwards are the local ports into the tunnel; none is fine (SOCKS only, or neither).
	Forwards []Forward
	// SOCKS is where the SOCKS5 proxy listens; the zero value means no proxy.
	SOCKS netip.AddrPort
	// Resolver resolves the peers' endpoint host names; nil means net.DefaultResolver.
	Resolver *net.Resolver
	// Logf logs what the user should see: a forward or SOCKS request that failed, and why;
	// nil discards.
	Logf func(format string, args ...any)
	// Verbosef logs the device's, the stack's and the listeners' detail; nil discards.
	Verbosef func(format string, args ...any)
}

// Client is a running connection to the mesh.
type Client struct {
	logf    func(format string, args ...any)
	verbose func(format string, args ...any)
	stack   *netstack.Stack
	dev     *tunnel.Device
	allowed []netip.Prefix // the union of the peers' AllowedIPs: all Dial ever reaches
	gateway netip.Addr     // where printer names are resolved
	names   *resolver
	http    *http.Transport // to the printers, for the HTTP forwards

	fwds  []*forwarder
	socks *socksServer
	wg    sync.WaitGroup // serving goroutines

	mu struct {
		sync.Mutex
		closed bool
	}
}

// Start brings the client up. ctx bounds the start only (endpoint name resolution).
func Start(ctx context.Context, cfg Config) (*Client, error) {
	dc := cfg.Device
	if len(dc.Addresses) == 0 || len(dc.Peers) == 0 {
		return nil, errors.New("connect: config has no address or no peer")
	}
	discard := func(string, ...any) {}
	logf, verbose := cfg.Logf, cfg.Verbosef
	if logf == nil {
		logf = discard
	}
	if verbose == nil {
		verbose = discard
	}
	peers, err := devicePeers(ctx, cfg.Resolver, dc.Peers)
	if err != nil {
		return nil, err
	}
	c := &Client{logf: logf, verbose: verbose}
	for _, p := range peers {
		c.allowed = append(c.allowed, p.AllowedIPs...)
	}
	c.gateway, err = gatewayAddr(c.allowed, dc.DNS)
	if err != nil {
		return nil, err
	}

	addrs := make([]netip.Addr, 0, len(dc.Addresses))
	for _, p := range dc.Addresses {
		addrs = append(addrs, p.Addr())
	}
	c.stack, err = netstack.New(netstack.Config{
		Addrs: addrs,
		MTU:   dc.MTU,
		// A laptop can afford more than a Pi: room for a fast upload's window.
		TCPReceiveBuffer: 4 << 20,
		TCPSendBuffer:    4 << 20,
		Logf:             verbose,
	})
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	c.dev, err = tunnel.New(tunnel.Config{
		PrivateKey: dc.PrivateKey,
		ListenPort: dc.ListenPort,
		TUN:        c.stack.TUN(),
		Client:     true,
		Logf:       verbose,
	})
	if err != nil {
		c.stack.Close()
		return nil, fmt.Errorf("connect: %w", err)
	}
	if err := c.dev.Apply(peers); err != nil {
		c.shutdown()
		return nil, fmt.Errorf("connect: %w", err)
	}
	c.http = &http.Transport{
		DialContext:         c.dialHTTP,
		DisableCompression:  true, // pass the printer's bytes through as they are
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     90 * time.Second,
	}
	c.names = newResolver(c)

	for _, f := range cfg.Forwards {
		fw, err := c.listenForward(f)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.fwds = append(c.fwds, fw)
	}
	if cfg.SOCKS.IsValid() {
		s, err := c.listenSOCKS(cfg.SOCKS)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.socks = s
	}
	for _, fw := range c.fwds {
		c.serve("forward "+fw.f.String(), fw.serve)
	}
	if c.socks != nil {
		c.serve("socks "+c.socks.ln.Addr().String(), c.socks.serve)
	}
	return c, nil
}

// devicePeers turns the config's peers into device peers, resolving endpoint names.
func devicePeers(ctx context.Context, r *net.Resolver, in []enroll.ConfigPeer) ([]tunnel.Peer, error) {
	if r == nil {
		r = net.DefaultResolver
	}
	out := make([]tunnel.Peer, 0, len(in))
	for _, p := range in {
		tp := tunnel.Peer{
			PublicKey:           p.PublicKey,
			PresharedKey:        p.PresharedKey,
			AllowedIPs:          slices.Clone(p.AllowedIPs),
			PersistentKeepalive: time.Duration(p.PersistentKeepalive) * time.Second,
		}
		if p.Endpoint != "" {
			rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			ep, err := tunnel.ResolveEndpoint(rctx, r, p.Endpoint)
			cancel()
			if err != nil {
				return nil, fmt.Errorf("connect: %w", err)
			}
			tp.Endpoint = ep
		}
		out = append(out, tp)
	}
	return out, nil
}

// gatewayAddr is the gateway's tunnel address: the config's first DNS server inside the
// tunnel (a gateway that named itself there), else the first host of the first IPv4 route (the
// gateway takes the first host address of its prefix), else of the first IPv6 route.
func gatewayAddr(allowed []netip.Prefix, dns []netip.Addr) (netip.Addr, error) {
	for _, a := range dns {
		for _, p := range allowed {
			if p.Contains(a.Unmap()) {
				return a.Unmap(), nil
			}
		}
	}
	for _, want4 := range []bool{true, false} {
		for _, p := range allowed {
			if p.Addr().Is4() != want4 || p.IsSingleIP() || p.Bits() == 0 {
				continue
			}
			return p.Masked().Addr().Next(), nil
		}
	}
	return netip.Addr{}, errors.New("connect: the config routes no mesh prefix (AllowedIPs), so there is no gateway to ask for printers")
}

// serve runs fn in a goroutine that Close waits for.
func (c *Client) serve(what string, fn func()) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.verbose("connect: %s: serving", what)
		defer c.verbose("connect: %s: stopped", what)
		fn()
	}()
}

// Allowed reports whether a is inside the config's AllowedIPs: the only addresses the client
// dials.
func (c *Client) Allowed(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range c.allowed {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Gateway returns the gateway's tunnel address (where printer names are resolved).
func (c *Client) Gateway() netip.Addr { return c.gateway }

// Dial opens a TCP connection inside the tunnel to a tunnel address the config allows.
func (c *Client) Dial(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if !c.Allowed(ap.Addr()) {
		return nil, &NotAllowedError{Addr: ap.Addr()}
	}
	return c.stack.DialTCP(ctx, ap)
}

// NotAllowedError is a destination outside the config's AllowedIPs.
type NotAllowedError struct{ Addr netip.Addr }

func (e *NotAllowedError) Error() string {
	return fmt.Sprintf("%v is not a tunnel address of this config (AllowedIPs)", e.Addr)
}

// dialHTTP is the HTTP transport's dialer: literal tunnel addresses only (the forwards
// resolve names before the request is made).
func (c *Client) dialHTTP(ctx context.Context, network, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %q: not a tunnel address", addr)
	}
	return c.Dial(ctx, ap)
}

// Close ends everything: listeners, connections, the device and the stack.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		return fmt.Errorf("connect: close: %w", net.ErrClosed)
	}
	c.mu.closed = true
	c.mu.Unlock()
	for _, fw := range c.fwds {
		fw.close()
	}
	if c.socks != nil {
		c.socks.close()
	}
	c.wg.Wait()
	if c.http != nil {
		c.http.CloseIdleConnections()
	}
	c.shutdown()
	return nil
}

// shutdown takes the device down, then the stack (the device reads the stack's TUN).
func (c *Client) shutdown() {
	c.dev.Close()
	c.stack.Close()
}
