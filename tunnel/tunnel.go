// Package tunnel runs the userspace WireGuard device: the gateway key, its one UDP port, peers
// applied from the roster as one validated diff, the UAPI socket for wg(8), and peer stats.
//
// Device life cycle:
//
//	New ──▶ up ──(Apply / Stats)*──▶ Close ──▶ closed
//	                                   │
//	                                   └─ device down (UDP socket and peers stop), UAPI
//	                                      socket removed, device closed (closes the TUN)
//
// Once closed, always closed: Apply, Stats and a second Close return errors wrapping
// net.ErrClosed. The netstack under the TUN is closed by its owner after Close.
package tunnel

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Peer is the device-level view of one peer: what WireGuard needs, nothing more.
type Peer struct {
	PublicKey wgtypes.Key
	// PresharedKey is mixed into the handshake; the zero key means none.
	PresharedKey wgtypes.Key
	// AllowedIPs are the peer's own addresses (a /32 and a /128).
	AllowedIPs []netip.Prefix
	// Endpoint is an initial endpoint; the zero value means none (the peer dials us).
	Endpoint netip.AddrPort
	// PersistentKeepalive; zero means off.
	PersistentKeepalive time.Duration
}

// PeerStats is what the device knows of a peer right now.
type PeerStats struct {
	PublicKey     wgtypes.Key
	Endpoint      netip.AddrPort
	LastHandshake time.Time // zero: never
	RxBytes       int64
	TxBytes       int64
}

// Config configures a Device.
type Config struct {
	// PrivateKey is the gateway's key.
	PrivateKey wgtypes.Key
	// ListenPort is the UDP port; zero picks a free one (tests).
	ListenPort int
	// TUN is the packet device under WireGuard (a netstack.Stack's TUN).
	TUN tun.Device
	// Bind is the UDP transport; nil means wireguard-go's default host UDP bind.
	Bind conn.Bind
	// InterfaceName names the UAPI socket (/var/run/wireguard/NAME.sock) so that
	// `wg show NAME` reads the live device; empty means no UAPI socket.
	InterfaceName string
	// Logf logs verbose detail (wireguard-go's Verbosef: handshakes, keepalives, routines
	// starting and stopping); nil discards.
	Logf func(format string, args ...any)
	// Errorf logs the device's errors (wireguard-go's Errorf: a failed bind, an unreadable
	// TUN, bad packets from a known peer), each with its cause; nil: Logf.
	Errorf func(format string, args ...any)
	// Client makes this a client device (`printgate connect`): Apply validates with
	// ValidateClient, so a peer's AllowedIPs may be whole prefixes. False (a gateway) allows
	// host routes only.
	Client bool
}

// Device is a running WireGuard device.
type Device struct {
	client bool
	logf   func(format string, args ...any)
	dev    *device.Device
	pub    wgtypes.Key
	port   int
	iface  string
	uapi   net.Listener   // nil without InterfaceName
	uapiWG sync.WaitGroup // the UAPI accept loop and its connections

	uapiConns struct {
		sync.Mutex
		m      map[net.Conn]bool
		closed bool
	}

	mu struct {
		sync.Mutex
		closed bool
		// applied is the peer set last applied successfully, by key. It is what Apply diffs
		// against; nil after a failed IpcSet, which makes the next Apply reconcile fully.
		applied map[wgtypes.Key]Peer
	}
}

// New creates the device and brings it up with no peers.
func New(cfg Config) (*Device, error) {
	if cfg.TUN == nil {
		return nil, fmt.Errorf("tunnel: new device: no TUN")
	}
	if cfg.PrivateKey == (wgtypes.Key{}) {
		return nil, fmt.Errorf("tunnel: new device: zero private key")
	}
	if cfg.ListenPort < 0 || cfg.ListenPort > 65535 {
		return nil, fmt.Errorf("tunnel: new device: listen port %d out of range", cfg.ListenPort)
	}
	if cfg.InterfaceName != "" && !validInterfaceName(cfg.InterfaceName) {
		return nil, fmt.Errorf("tunnel: new device: invalid interface name %q", cfg.InterfaceName)
	}
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	errorf := cfg.Errorf
	if errorf == nil {
		errorf = logf
	}
	bind := cfg.Bind
	if bind == nil {
		bind = conn.NewDefaultBind()
	}
	d := &Device{client: cfg.Client, logf: logf, pub: cfg.PrivateKey.PublicKey(), iface: cfg.InterfaceName}
	d.mu.applied = map[wgtypes.Key]Peer{}
	logger := &device.Logger{
		Verbosef: func(format string, args ...any) { logf("wireguard: "+format, args...) },
		Errorf:   func(format string, args ...any) { errorf("wireguard: error: "+format, args...) },
	}
	d.dev = device.NewDevice(cfg.TUN, bind, logger)

	var b strings.Builder
	fmt.Fprintf(&b, "private_key=%s\n", hexKey(cfg.PrivateKey))
	fmt.Fprintf(&b, "listen_port=%d\n", cfg.ListenPort)
	if err := d.dev.IpcSet(b.String()); err != nil {
		d.dev.Close()
		return nil, fmt.Errorf("tunnel: new device: configure: %w", err)
	}
	if err := d.dev.Up(); err != nil {
		d.dev.Close()
		return nil, fmt.Errorf("tunnel: new device: up: %w", err)
	}
	port, err := d.readListenPort()
	if err != nil {
		d.dev.Close()
		return nil, fmt.Errorf("tunnel: new device: %w", err)
	}
	d.port = port
	if cfg.InterfaceName != "" {
		if err := d.listenUAPI(cfg.InterfaceName); err != nil {
			d.dev.Close()
			return nil, fmt.Errorf("tunnel: new device: uapi %s: %w", cfg.InterfaceName, err)
		}
	}
	logf("tunnel: device up, udp port %d, public key %s", d.port, d.pub)
	return d, nil
}

// validInterfaceName accepts what Linux accepts for an interface name and nothing that could
// escape the socket directory.
func validInterfaceName(name string) bool {
	if len(name) == 0 || len(name) > 15 || name == "." || name == ".." {
		return false
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
		if !ok {
			return false
		}
	}
	return true
}

func (d *Device) listenUAPI(name string) error {
	l, err := uapiListen(name)
	if err != nil {
		os.Remove(uapiPath(name))
		return err
	}
	d.uapi = l
	d.uapiWG.Add(1)
	go func() {
		defer d.uapiWG.Done()
		d.logf("tunnel: uapi %s: serving", name)
		defer d.logf("tunnel: uapi %s: stopped", name)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if !d.trackUAPIConn(c, true) {
				c.Close()
				continue
			}
			d.uapiWG.Add(1)
			go func() {
				defer d.uapiWG.Done()
				defer d.trackUAPIConn(c, false)
				d.dev.IpcHandle(c) // closes c
			}()
		}
	}()
	return nil
}

// trackUAPIConn adds or removes a UAPI client connection; adding fails once closing.
func (d *Device) trackUAPIConn(c net.Conn, add bool) bool {
	d.uapiConns.Lock()
	defer d.uapiConns.Unlock()
	if !add {
		delete(d.uapiConns.m, c)
		return true
	}
	if d.uapiConns.closed {
		return false
	}
	if d.uapiConns.m == nil {
		d.uapiConns.m = map[net.Conn]bool{}
	}
	d.uapiConns.m[c] = true
	return true
}

// closeUAPIConns closes every open UAPI client connection (a wg(8) left hanging).
func (d *Device) closeUAPIConns() {
	d.uapiConns.Lock()
	defer d.uapiConns.Unlock()
	d.uapiConns.closed = true
	for c := range d.uapiConns.m {
		c.Close()
	}
}

// uapiPath is where ipc.UAPIOpen puts the socket (wireguard-go's socketDirectory).
func uapiPath(name string) string {
	return filepath.Join("/var/run/wireguard", name+".sock")
}

// UAPIPath returns the path of the UAPI socket, or "" without InterfaceName.
func (d *Device) UAPIPath() string {
	if d.iface == "" {
		return ""
	}
	return uapiPath(d.iface)
}

func (d *Device) readListenPort() (int, error) {
	s, err := d.dev.IpcGet()
	if err != nil {
		return 0, fmt.Errorf("read listen port: %w", err)
	}
	for line := range strings.Lines(s) {
		if v, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "listen_port="); ok {
			p, err := strconv.Atoi(v)
			if err != nil || p <= 0 || p > 65535 {
				return 0, fmt.Errorf("read listen port: bad value %q", v)
			}
			return p, nil
		}
	}
	return 0, fmt.Errorf("read listen port: device has no listen port")
}

// ListenPort returns the UDP port the device is bound to.
func (d *Device) ListenPort() int { return d.port }

// PublicKey returns the gateway's public key.
func (d *Device) PublicKey() wgtypes.Key { return d.pub }

// Apply validates the whole peer set first, then applies only the difference to the device:
// new and changed peers are set, peers no longer present are removed. Unchanged peers keep
// their sessions. On a validation error nothing is changed.
//
// A removed peer's session keys are wiped by wireguard-go at once; its TCP connections in the
// stack are not: the caller closes them (netstack.Stack.CloseConns) after Apply returns.
func (d *Device) Apply(peers []Peer) error {
	if err := validate(peers, d.pub, d.client); err != nil {
		return fmt.Errorf("tunnel: apply: %w", err)
	}
	next := make(map[wgtypes.Key]Peer, len(peers))
	for _, p := range peers {
		p.AllowedIPs = slices.Clone(p.AllowedIPs) // the caller may reuse its slices
		next[p.PublicKey] = p
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mu.closed {
		return fmt.Errorf("tunnel: apply: %w", net.ErrClosed)
	}
	prev := d.mu.applied
	if prev == nil {
		// The last IpcSet failed part way: learn what the device really holds, and set
		// every wanted peer again (setting an existing peer keeps its session).
		keys, err := d.deviceKeysLocked()
		if err != nil {
			return fmt.Errorf("tunnel: apply: %w", err)
		}
		prev = make(map[wgtypes.Key]Peer, len(keys))
		for _, k := range keys {
			prev[k] = Peer{PublicKey: k} // never equal to a wanted peer, so it is set again
		}
	}
	text, n := diffUAPI(prev, next)
	if n.total() == 0 {
		return nil
	}
	if err := d.dev.IpcSet(text); err != nil {
		d.mu.applied = nil
		return fmt.Errorf("tunnel: apply: %w", err)
	}
	d.mu.applied = next
	d.logf("tunnel: applied %d peers: %d added, %d changed, %d removed", len(next), n.added, n.changed, n.removed)
	return nil
}

func (d *Device) deviceKeysLocked() ([]wgtypes.Key, error) {
	s, err := d.dev.IpcGet()
	if err != nil {
		return nil, err
	}
	st, err := ParseStats(strings.NewReader(s))
	if err != nil {
		return nil, err
	}
	keys := make([]wgtypes.Key, len(st))
	for i, p := range st {
		keys[i] = p.PublicKey
	}
	return keys, nil
}

// Stats returns the live stats of every peer on the device.
func (d *Device) Stats() ([]PeerStats, error) {
	d.mu.Lock()
	closed := d.mu.closed
	d.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("tunnel: stats: %w", net.ErrClosed)
	}
	s, err := d.dev.IpcGet()
	if err != nil {
		return nil, fmt.Errorf("tunnel: stats: %w", err)
	}
	st, err := ParseStats(strings.NewReader(s))
	if err != nil {
		return nil, fmt.Errorf("tunnel: stats: %w", err)
	}
	return st, nil
}

// Close takes the device down and closes the TUN under it. A second Close returns an error
// wrapping net.ErrClosed.
//
// Order: the device goes down first (UDP socket closed, peers stopped), then the UAPI socket
// is removed, then the device is closed, which closes the TUN (wireguard-go #134: the TUN
// must not go away under a running device).
func (d *Device) Close() error {
	d.mu.Lock()
	if d.mu.closed {
		d.mu.Unlock()
		return fmt.Errorf("tunnel: close: %w", net.ErrClosed)
	}
	d.mu.closed = true
	d.mu.Unlock()

	err := d.dev.Down()
	if d.uapi != nil {
		d.uapi.Close()
		d.closeUAPIConns()
		d.uapiWG.Wait()
		if rerr := os.Remove(uapiPath(d.iface)); rerr != nil && !os.IsNotExist(rerr) && err == nil {
			err = rerr
		}
	}
	d.dev.Close()
	<-d.dev.Wait()
	d.logf("tunnel: device closed")
	if err != nil {
		return fmt.Errorf("tunnel: close: %w", err)
	}
	return nil
}
