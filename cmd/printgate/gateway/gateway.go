// Package gateway is the printgate daemon: it assembles the roster, the userspace network
// stack, the WireGuard device, the printer controllers and their HTTP faces, and the control
// socket, and runs them from start to an orderly stop.
package gateway

// Life cycle (Start's order; Close undoes it in reverse, with the device closed before the
// stack as netstack requires):
//
//  1. enroll.Open: the state directory, locked; a corrupt roster fails here (fail closed)
//     then the control socket STATE/control.sock (0600) listens, not yet answering: whoever
//     meets the lock or the UDP port finds the socket and waits there for its answer
//  2. netstack.New with the gateway's tunnel addresses (printers' come in step 5)
//  3. tunnel.New: the gateway key, the listen port (the one host socket), the UAPI socket
//  4. the mesh node (mesh.go): opened on the netstack, a mesh of one bootstrapped from the
//     registry on the first start; apply the roster: devices homed here that the mesh has
//     active, the other gateways, join peers → []tunnel.Peer → Device.Apply (a diff)
//  5. printers: their addresses from the mesh (AddPrinter when new), added to the stack;
//     controllers (heaters off on the first bytes), HTTP on port 80 of each address
//  6. the control socket answers (its accept loop starts)
//  7. the stats loop: every StatsInterval, device stats → roster → pending expiry → re-apply;
//     the mesh loop: every replica change → re-apply, revoked devices' connections closed
//
// Close: controllers stop (their heaters-off path), HTTP servers shut down, control socket
// removed, mesh node closed, device closed, stack closed, roster closed.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/control"
	"github.com/printgate/printgate/mesh"
	"github.com/printgate/printgate/netstack"
	"github.com/printgate/printgate/printerd/audit"
	"github.com/printgate/printgate/tunnel"
)

// DefaultStatsInterval is how often the stats loop polls the device when Config leaves it zero.
const DefaultStatsInterval = 2 * time.Second

// DefaultInterface is the UAPI socket name `printgate run` uses: `wg show printgate0`.
const DefaultInterface = "printgate0"

// PersistentKeepalive is what the gateway sets on its side of every peer: zero, the peer
// keeps the NAT mapping open (its config carries a keepalive); the gateway never dials.
const PersistentKeepalive = 0

// Config configures a Gateway. Only StateDir is required.
type Config struct {
	// StateDir is the directory `printgate init` made.
	StateDir string
	// Interface names the UAPI socket (/var/run/wireguard/NAME.sock) for `wg show NAME`;
	// empty: no UAPI socket.
	Interface string
	// Printers are the printers to drive; each gets a tunnel address of its own.
	Printers []PrinterSpec
	// Endpoint, when set, replaces the state's HOST:PORT that configs made from now on tell
	// devices to dial. Empty keeps it; a detected (LAN) endpoint is re-detected at start, so a
	// new DHCP address reaches the next enrollment.
	Endpoint string
	// StatsInterval is the stats loop period; zero: DefaultStatsInterval.
	StatsInterval time.Duration
	// Logf is the default log: the daemon's progress and every error of every part (device,
	// printers, files, web faces, audit log), each with its cause; nil discards. Secrets are
	// never passed to it.
	Logf func(format string, args ...any)
	// Verbosef receives the verbose detail of every part (`run --verbose`); nil discards.
	Verbosef func(format string, args ...any)
	// Now is the clock; nil: time.Now.
	Now func() time.Time

	// onDeviceUp, when set (tests), runs once the WireGuard UDP port is bound.
	onDeviceUp func()
	// bind, when set (tests), is the WireGuard device's UDP transport (partitions).
	bind conn.Bind
	// onMeshRevoked, when set (tests), runs after the connections of revoked devices were
	// closed: by the mesh loop for the devices the replica shows newly revoked, and by a
	// revocation made on this gateway.
	onMeshRevoked func(names []string, closed int)
}

// Gateway is a running daemon. Its methods are safe for concurrent use.
type Gateway struct {
	cfg      Config
	logf     func(format string, args ...any)
	verbosef func(format string, args ...any)
	now      func() time.Time
	gw       enroll.Gateway
	stack    *netstack.Stack
	dev      *tunnel.Device
	audit    *audit.Log      // nil if the audit log could not be opened (logged)
	ctlLn    net.Listener    // the control socket, listening from the start
	ctl      *control.Server // answering it once the gateway is up
	ctlDone  sync.WaitGroup  // ctl.Serve
	web      *webServers
	prs      []*printer
	node     *mesh.Node // the mesh member, open from Start's step 4 to Close
	// meshNode is node for the mesh listener's filter, which runs before Open returns.
	meshNode atomic.Pointer[mesh.Node]
	join     *JoinFile // STATE/mesh/join.json, nil when there is none
	invites  invites   // pending join invitations and the join port (invite.go)

	cancel context.CancelFunc // stops the stats loop and the controllers
	wg     sync.WaitGroup     // the stats loop
	loops  sync.WaitGroup     // controllers

	// reg serializes the writes: roster changes and applying them to the device. Requests
	// never take it; they read roster.
	reg struct {
		sync.Mutex
		r       *enroll.Registry
		applied map[wgtypes.Key]enroll.DevicePeer // live peers on the device
		joins   map[wgtypes.Key]joinPeer          // one-time join peers (meshpeers.go)
	}
	// inflight are the names of enrollments between their mesh commit and their local
	// record (revokeStale leaves them alone); guarded by reg's mutex.
	inflight map[string]bool
	// unclear are enrollments that failed for want of quorum and may still commit
	// (meshwrite.go); guarded by reg's mutex.
	unclear map[string]unclearEnroll
	// endpoints caches other gateways' resolved endpoints (resolveEndpoint).
	endpoints struct {
		sync.Mutex
		m map[string]netip.AddrPort
	}
	// roster is the roster as last applied, published by every apply (publishLocked).
	roster atomic.Pointer[rosterView]
	// relay is what the relay predicate reads (relay.go), rebuilt by every apply.
	relay atomic.Pointer[relayTable]

	stats struct {
		sync.Mutex
		byKey    map[wgtypes.Key]tunnel.PeerStats
		lastTick time.Time
		// lastRevoke is the last revocation's time from request to applied (a metric).
		lastRevoke time.Duration
	}

	closeOnce sync.Once
}

// Start opens the state directory and brings the gateway up. On error nothing is left
// running and the state directory is released. A corrupt roster is returned as enroll's
// error, which names the recovery; the tunnel never comes up without a trustworthy roster.
func Start(ctx context.Context, cfg Config) (_ *Gateway, err error) {
	if cfg.StateDir == "" {
		return nil, errors.New("gateway: start: no state directory")
	}
	if cfg.StatsInterval <= 0 {
		cfg.StatsInterval = DefaultStatsInterval
	}
	g := &Gateway{cfg: cfg, logf: cfg.Logf, now: cfg.Now}
	if g.logf == nil {
		g.logf = func(string, ...any) {}
	}
	if g.now == nil {
		g.now = time.Now
	}
	g.verbosef = cfg.Verbosef
	if g.verbosef == nil {
		g.verbosef = func(string, ...any) {}
	}
	if err := checkPrinterSpecs(cfg.Printers); err != nil {
		return nil, fmt.Errorf("gateway: start: %w", err)
	}

	start := time.Now()
	// A CLI command run while no daemon served may hold the lock for a moment: wait it out.
	reg, err := enroll.OpenWith(cfg.StateDir, enroll.Options{Now: cfg.Now, Logf: g.logf, LockWait: 5 * time.Second})
	if err != nil {
		return nil, err // enroll's message names the recovery; do not bury it
	}
	g.reg.r = reg
	g.stats.byKey = map[wgtypes.Key]tunnel.PeerStats{}
	defer func() {
		if err != nil {
			g.teardown()
		}
	}()
	g.gw = reg.Gateway()
	if g.gw.PrivateKey == (wgtypes.Key{}) || !g.gw.Prefix4.IsValid() {
		return nil, fmt.Errorf("gateway: start: state %s has no gateway configuration (run `printgate init --state %s`)", cfg.StateDir, cfg.StateDir)
	}
	if err := g.updateEndpoint(cfg.Endpoint); err != nil {
		return nil, fmt.Errorf("gateway: start: %w", err)
	}
	// The socket exists before the UDP port is bound and before "ready": a CLI that meets the
	// state directory's lock finds it, and its call waits in the backlog until serve below.
	if g.ctlLn, err = control.ListenUnix(control.Path(cfg.StateDir)); err != nil {
		return nil, fmt.Errorf("gateway: start: %w", err)
	}

	if err := g.gatewayName(); err != nil {
		return nil, fmt.Errorf("gateway: start: %w", err)
	}
	addrs := g.Addrs()
	g.stack, err = netstack.New(netstack.Config{Addrs: addrs, Logf: g.verbosef})
	if err != nil {
		return nil, fmt.Errorf("gateway: start: %w", err)
	}
	g.dev, err = tunnel.New(tunnel.Config{
		PrivateKey:    g.gw.PrivateKey,
		ListenPort:    g.gw.ListenPort,
		TUN:           g.stack.TUN(),
		Bind:          cfg.bind,
		InterfaceName: cfg.Interface,
		Logf:          g.verbosef,
		Errorf:        g.logf,
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: start: %w", err)
	}
	if cfg.onDeviceUp != nil {
		cfg.onDeviceUp()
	}

	if al, err := audit.OpenOptions(audit.Path(cfg.StateDir), audit.Options{Logf: g.verbosef, Errorf: g.logf}); err != nil {
		g.logf("gateway: audit log unavailable: %v", err)
	} else {
		g.audit = al
	}

	if err := g.openMesh(ctx); err != nil {
		return nil, fmt.Errorf("gateway: start: %w", err)
	}
	g.reg.Lock()
	_, _, err = g.applyLocked() // the other gateways first: the mesh may need them for printers
	g.reg.Unlock()
	if err != nil {
		return nil, fmt.Errorf("gateway: start: %w", err)
	}
	if err := g.meshPrinters(ctx); err != nil {
		return nil, fmt.Errorf("gateway: start: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	g.cancel = cancel
	if err := g.startPrinters(runCtx); err != nil {
		return nil, fmt.Errorf("gateway: start: %w", err)
	}
	if g.web, err = g.startWeb(); err != nil {
		return nil, fmt.Errorf("gateway: start: %w", err)
	}
	g.ctl = &control.Server{Handler: control.HandlerFunc(g.handle), Allow: control.UnixPeerAllowed, Logf: g.logf}
	g.ctlDone.Add(1)
	go func() {
		defer g.ctlDone.Done()
		g.ctl.Serve(g.ctlLn)
	}()
	g.wg.Add(2)
	go g.statsLoop(runCtx)
	go g.meshLoop(runCtx)

	g.logf("gateway: up in %v: udp port %d, public key %s, tunnel %v, %d printers",
		time.Since(start).Round(time.Millisecond), g.dev.ListenPort(), g.dev.PublicKey(), g.Addrs(), len(g.prs))
	return g, nil
}

// Addrs returns the gateway's own tunnel addresses, IPv4 first: the first host addresses of
// the prefixes, or those the mesh allocated to a gateway that joined.
func (g *Gateway) Addrs() []netip.Addr {
	out := []netip.Addr{g.gw.Addr4()}
	if g.gw.Prefix6.IsValid() {
		out = append(out, g.gw.Addr6())
	}
	return out
}

// Name is the gateway's name in its mesh.
func (g *Gateway) Name() string { return g.gw.Name }

// ListenPort returns the WireGuard UDP port.
func (g *Gateway) ListenPort() int { return g.dev.ListenPort() }

// PublicKey returns the gateway's public key.
func (g *Gateway) PublicKey() wgtypes.Key { return g.dev.PublicKey() }

// Close stops the gateway: controllers turn heaters off and stop, HTTP servers shut down, the
// control socket is removed, the device is closed before the stack, and the state directory
// is released. Once closed, always closed: a second Close returns an error wrapping
// net.ErrClosed.
func (g *Gateway) Close() error {
	err := fmt.Errorf("gateway: close: %w", net.ErrClosed)
	g.closeOnce.Do(func() {
		start := time.Now()
		err = g.teardown()
		g.logf("gateway: stopped in %v", time.Since(start).Round(time.Millisecond))
	})
	return err
}

// teardown releases whatever Start made, in reverse order; it tolerates a partial start.
func (g *Gateway) teardown() error {
	var errs []error
	if g.cancel != nil {
		g.cancel()
	}
	g.wg.Wait()
	g.stopPrinters()
	if g.web != nil {
		g.web.Close()
	}
	g.releasePrinters()
	if g.ctl != nil {
		g.ctl.Close()
		g.ctlDone.Wait()
	}
	if g.ctlLn != nil {
		g.ctlLn.Close() // unlinks the socket file; closed already if it was served
	}
	g.closeInvites()
	if g.node != nil {
		if err := g.node.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if g.dev != nil {
		if err := g.dev.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if g.stack != nil {
		if err := g.stack.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if g.audit != nil {
		if err := g.audit.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	g.reg.Lock()
	if g.reg.r != nil {
		if err := g.reg.r.Close(); err != nil {
			errs = append(errs, err)
		}
		g.reg.r = nil
		g.publishLocked()
	}
	g.reg.Unlock()
	return errors.Join(errs...)
}

// applyLocked applies the roster's live set to the device and closes the connections of every
// peer that left it. It returns the peers removed. Caller holds g.reg.
func (g *Gateway) applyLocked() (gone []enroll.DevicePeer, closed int, err error) {
	live := g.reg.r.DevicePeers()
	next := make(map[wgtypes.Key]enroll.DevicePeer, len(live))
	peers := make([]tunnel.Peer, 0, len(live))
	var r *mesh.Roster
	if g.node != nil {
		r = g.node.Roster()
	}
	for _, p := range live {
		if r != nil {
			if d, ok := r.Device(p.Name); !ok || d.State != mesh.Active || d.PublicKey != mesh.Key(p.PublicKey) {
				continue // revoked in the mesh (or not there at all): not on this device
			}
		}
		next[p.PublicKey] = p
		peers = append(peers, tunnel.Peer{PublicKey: p.PublicKey, PresharedKey: p.PresharedKey, AllowedIPs: p.AllowedIPs})
	}
	if r != nil {
		peers = append(peers, g.meshPeersLocked(r, g.now(), peers)...)
	}
	if err := g.dev.Apply(peers); err != nil {
		g.publishLocked() // the roster changed even if the device did not
		return nil, 0, err
	}
	for k, p := range g.reg.applied {
		if _, ok := next[k]; !ok {
			gone = append(gone, p)
		}
	}
	g.reg.applied = next
	if r != nil {
		g.relay.Store(buildRelayTable(r, g.gw.Name, next))
	}
	g.publishLocked()
	if len(gone) > 0 {
		closed = g.closeConns(gone)
	}
	return gone, closed, nil
}

// closeConns aborts every open TCP connection whose remote address belongs to one of peers.
func (g *Gateway) closeConns(peers []enroll.DevicePeer) int {
	match := func(a netip.Addr) bool {
		for _, p := range peers {
			for _, pfx := range p.AllowedIPs {
				if pfx.Contains(a) {
					return true
				}
			}
		}
		return false
	}
	return g.stack.CloseConns(match)
}

// statsLoop polls the device, feeds the roster, expires pending peers and re-applies.
func (g *Gateway) statsLoop(ctx context.Context) {
	defer g.wg.Done()
	g.logf("gateway: stats loop every %v", g.cfg.StatsInterval)
	t := time.NewTicker(g.cfg.StatsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.tick()
			g.tickMesh(ctx)
		}
	}
}

// tick is one round of the stats loop.
func (g *Gateway) tick() {
	now := g.now()
	st, err := g.dev.Stats()
	if err != nil {
		if !errors.Is(err, net.ErrClosed) {
			g.logf("gateway: stats: %v", err)
		}
		return
	}
	byKey := make(map[wgtypes.Key]tunnel.PeerStats, len(st))
	for _, s := range st {
		byKey[s.PublicKey] = s
	}
	g.stats.Lock()
	g.stats.byKey = byKey
	g.stats.lastTick = now
	g.stats.Unlock()

	g.reg.Lock()
	defer g.reg.Unlock()
	if g.reg.r == nil {
		return
	}
	g.observeLocked(st, now)
	gone, _, err := g.applyLocked()
	if err != nil {
		g.logf("gateway: apply roster: %v", err)
		return
	}
	for _, p := range gone {
		g.logf("gateway: peer %s off the device, its connections closed", p.Name)
	}
}

// tickMesh is the stats round's mesh part, outside the registry's lock: devices homed here
// that expired (or never finished enrolling) are revoked in the mesh, and a changed endpoint
// of this gateway is announced to the mesh.
func (g *Gateway) tickMesh(ctx context.Context) {
	if g.node != nil {
		g.activatePending(ctx)
		g.revokeStale(ctx)
		g.announceEndpoint(ctx)
	}
}

// Alive reports whether the stats loop ran recently; the systemd watchdog is fed only then.
func (g *Gateway) Alive() bool {
	g.stats.Lock()
	last := g.stats.lastTick
	g.stats.Unlock()
	return last.IsZero() || g.now().Sub(last) < 5*g.cfg.StatsInterval
}

// Enroll adds a pending peer and puts it on the device at once, recorded in the audit log as
// done by the local operator (the control socket, first boot): the intent first, fsynced, and
// no enrollment when that cannot be written.
func (g *Gateway) Enroll(req enroll.Request) (*enroll.Enrollment, error) {
	in, err := g.begin(audit.ActionEnroll, map[string]string{"name": req.Name, "role": string(req.Role)})
	if err != nil {
		return nil, err
	}
	e, err := g.enroll(req)
	var p enroll.Peer
	if err == nil {
		p = e.Peer
	}
	g.end(in, err, p)
	return e, err
}

func (g *Gateway) statsFor(k wgtypes.Key) *tunnel.PeerStats {
	g.stats.Lock()
	defer g.stats.Unlock()
	if s, ok := g.stats.byKey[k]; ok {
		return &s
	}
	return nil
}

// devicePeerOf is the device view of a roster peer (for closing its connections).
func devicePeerOf(p enroll.Peer) enroll.DevicePeer {
	dp := enroll.DevicePeer{Name: p.Name, PublicKey: p.PublicKey, PresharedKey: p.PresharedKey}
	if p.IPv4.IsValid() {
		dp.AllowedIPs = append(dp.AllowedIPs, netip.PrefixFrom(p.IPv4, 32))
	}
	if p.IPv6.IsValid() {
		dp.AllowedIPs = append(dp.AllowedIPs, netip.PrefixFrom(p.IPv6, 128))
	}
	return dp
}

// updateEndpoint applies Config.Endpoint, or re-detects a detected one whose LAN address
// changed. Called by Start before anything is served.
func (g *Gateway) updateEndpoint(want string) error {
	r := g.reg.r
	switch {
	case want != "":
		ep, err := enroll.ParseEndpoint(want, g.gw.ListenPort)
		if err != nil {
			return err
		}
		if ep == g.gw.Endpoint && !g.gw.EndpointGuessed {
			return nil
		}
	case g.gw.EndpointGuessed:
		a, err := enroll.DetectLANAddr(g.gw.Prefix4, g.gw.Prefix6)
		if err != nil || netip.AddrPortFrom(a, uint16(g.gw.ListenPort)).String() == g.gw.Endpoint {
			return nil // keep what there is
		}
	default:
		return nil
	}
	gw, err := r.SetEndpoint(want)
	if err != nil {
		return err
	}
	g.logf("gateway: devices enrolled from now on dial %s (devices enrolled before keep %s in their config)", gw.Endpoint, g.gw.Endpoint)
	g.gw = gw
	return nil
}
