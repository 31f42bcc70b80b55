package gateway

// The gateway as a member of its mesh (docs/mesh.md, /work/mesh-wiring.md). Every gateway
// runs a mesh.Node: a single gateway is a mesh of one. Start's mesh steps, after the stack and
// the device are up:
//
//  1. openMesh: mesh.Open on STATE/mesh with its listener on GATEWAYADDR4:7100 in the
//     netstack (filtered: only gateway addresses get through) and its dial on the netstack;
//     nothing of it is on a host socket
//  2. a state directory without a mesh and without STATE/mesh/join.json bootstraps a mesh of
//     one that imports the registry (upgrade in place: every device, key, address, API key
//     hash and printer kept); with join.json the node waits to be added by a member
//  3. the WireGuard device gets the other gateways as peers (replica, else join.json)
//  4. printers: taken from the replica when they are this gateway's, else AddPrinter
//  5. meshLoop: every change of the replica (mesh.Node.Changed) re-applies the device,
//     tombstones revoked devices homed here, and closes the connections of every device that
//     became revoked; devices homed here that the mesh has active without a live local
//     record are revoked in the mesh (an enrollment that never finished, an expired QR)
//
// Deviations from /work/mesh-wiring.md, and why:
//   - enroll.Gateway keeps its methods Addr4() and Addr6() (the effective addresses, defaulting
//     to the first hosts); the persisted fields are named Address4 and Address6, since Go
//     cannot have a field and a method of one name. enroll.InitOptions has Addr4 and Addr6
//     (and PrivateKey, for a joining gateway that registers its key before its state exists).
//   - The mesh port's filter admits the addresses of other gateways' printers as well as their
//     own: a connection a gateway opens may leave from any address of its stack, and those
//     sources are authenticated by that gateway's WireGuard peer all the same.
//   - The roster-change hook is mesh.Node.Changed() <-chan struct{} (of the two shapes offered).
//
// Who knows what: the mesh replica decides whether a device exists and is active anywhere;
// the local registry holds what only the home gateway needs (PSK, pending TTL, handshakes).
// A device is served here iff the replica shows it active and, when it is homed here, the
// registry shows it live too.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/statefile"
	"github.com/printgate/printgate/mesh"
)

// MeshPort is the TCP port of the mesh node (raft, forwarded writes, status pings) on the
// gateway's tunnel address, inside the netstack only.
const MeshPort = 7100

// MeshDir is the mesh node's directory inside the state directory.
const MeshDir = "mesh"

// FileJoin is STATE/mesh/join.json, written by `printgate init --join`: the members known at
// join time. Its presence means "joined: wait to be added, never bootstrap".
const FileJoin = "join.json"

// GatewayKeepalive is the persistent keepalive between gateways: both sides keep their NAT
// mappings open, so raft's heartbeats never wait for a handshake.
const GatewayKeepalive = 25 * time.Second

// meshPrinterWait bounds how long Start waits for the mesh to take a new printer (an election
// after a restart takes a few seconds).
const meshPrinterWait = 30 * time.Second

// meshRevokeTimeout bounds the commit part of a revocation; it is applied here at once and
// committed later by the node itself when the bound passes.
const meshRevokeTimeout = 2 * time.Second

// JoinFile is STATE/mesh/join.json.
type JoinFile struct {
	// Name is this gateway's name in the mesh.
	Name string `json:"name"`
	// Gateways are the members known at join time: the WireGuard peers until the replica
	// lists gateways.
	Gateways []mesh.Gateway `json:"gateways"`
}

// ReadJoinFile reads STATE/mesh/join.json; nil and no error when there is none.
func ReadJoinFile(stateDir string) (*JoinFile, error) {
	path := filepath.Join(stateDir, MeshDir, FileJoin)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var jf JoinFile
	if err := enroll.DecodeStrict(b, &jf); err != nil {
		return nil, fmt.Errorf("%s is corrupt: %w", path, err)
	}
	return &jf, nil
}

// WriteJoinFile writes STATE/mesh/join.json crash-safe (mode 0600, STATE/mesh made 0700).
func WriteJoinFile(stateDir string, jf JoinFile) error {
	dir := filepath.Join(stateDir, MeshDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write join file: %w", err)
	}
	b, err := json.MarshalIndent(jf, "", "\t")
	if err != nil {
		return fmt.Errorf("write join file: %w", err)
	}
	return statefile.Write(filepath.Join(dir, FileJoin), append(b, '\n'), 0o600)
}

// gatewayName names the gateway at its first start in the mesh era: the host name,
// sanitized, saved in the state.
func (g *Gateway) gatewayName() error {
	if g.gw.Name != "" {
		return nil
	}
	host, _ := os.Hostname()
	gw, err := g.reg.r.SetName(enroll.SanitizeName(host))
	if err != nil {
		return err
	}
	g.logf("gateway: named %s in the mesh (from the host name; `printgate init --name` chooses one)", gw.Name)
	g.gw = gw
	return nil
}

// openMesh opens the mesh node on the netstack, bootstrapping a mesh of one from the
// registry when the state directory has none.
func (g *Gateway) openMesh(ctx context.Context) error {
	jf, err := ReadJoinFile(g.cfg.StateDir)
	if err != nil {
		return err
	}
	g.join = jf
	ap := netip.AddrPortFrom(g.gw.Addr4(), MeshPort)
	ln, err := g.stack.ListenTCP(ap)
	if err != nil {
		return fmt.Errorf("mesh: %w", err)
	}
	node, err := mesh.Open(mesh.Config{
		ID:        g.gw.Name,
		Dir:       filepath.Join(g.cfg.StateDir, MeshDir),
		Listener:  &gatewayListener{Listener: ln, allow: g.isGatewayAddr, logf: g.verbosef},
		Advertise: ap.String(),
		Dial:      g.meshDial,
		Logf:      g.verbosef,
		Live:      g.liveAnswer,
	})
	if err != nil {
		return err
	}
	g.node = node
	g.meshNode.Store(node)
	g.stack.SetRelay(g.relayAllow) // reads g.relay, set by every apply; nothing until the first
	r := node.Roster()
	switch {
	case r.Initialized():
		g.logf("gateway: mesh member %s: %d gateways, %d devices, %d printers", g.gw.Name, len(r.Gateways()), len(r.Devices()), len(r.Printers()))
	case jf != nil:
		g.logf("gateway: joined as %s: waiting to be added by %d member(s)", g.gw.Name, len(jf.Gateways))
	case len(node.Status().Servers) > 1:
		// A member whose replica file is missing: raft knows the mesh and catches up.
		g.logf("gateway: mesh member %s: no copy of the roster yet, catching up from the mesh", g.gw.Name)
	default:
		init := importRegistry(g.reg.r, g.gw, g.logf)
		if _, err := node.Bootstrap(ctx, init); err != nil {
			if errors.Is(err, mesh.ErrExists) && node.Roster().Initialized() {
				break // raft replayed its own bootstrap meanwhile
			}
			return fmt.Errorf("mesh: make this gateway a mesh of one: %w", err)
		}
		g.logf("gateway: upgraded to a mesh of one (%s): %d devices and %d printers kept with their addresses and keys",
			g.gw.Name, len(init.Devices), len(init.Printers))
	}
	return nil
}

// importRegistry is the init command of a mesh of one made from a single gateway's
// registry: devices (pending with their TTL, expired as revoked and marked so), printers, the
// high-water mark.
// A name enrolled again after a revocation has older tombstones: they come along under the
// name NAME.N (when free), so their keys stay revoked in the mesh.
func importRegistry(reg *enroll.Registry, gw enroll.Gateway, logf func(string, ...any)) mesh.InitCmd {
	init := mesh.InitCmd{Prefix4: gw.Prefix4, Prefix6: gw.Prefix6,
		Gateway:    mesh.AddGatewayCmd{Name: gw.Name, PublicKey: mesh.Key(gw.PublicKey()), Endpoint: gw.Endpoint},
		NextOffset: reg.NextDeviceOffset()}
	peers := reg.Peers() // sorted by name, then creation: the newest of a name last
	keep := map[string]int{}
	for i, p := range peers {
		if j, ok := keep[p.Name]; !ok || peers[j].State != enroll.Pending && peers[j].State != enroll.Active {
			keep[p.Name] = i // the live one, else the newest
		}
	}
	taken := map[string]bool{}
	for _, p := range peers {
		taken[p.Name] = true
	}
	for i, p := range peers {
		d := mesh.Device{Name: p.Name, Role: mesh.Role(p.Role), State: mesh.Active, PublicKey: mesh.Key(p.PublicKey),
			IPv4: p.IPv4, IPv6: p.IPv6, APIKeyHash: p.APIKeyHash, APIKeyRole: mesh.Role(p.APIKeyRole), Created: p.Created}
		d.OwnKey = p.OwnKey
		switch p.State {
		case enroll.Pending:
			d.ExpiresAt = p.ExpiresAt
		case enroll.Revoked:
			d.State, d.RevokedAt = mesh.Revoked, p.RevokedAt
		case enroll.Expired:
			d.State, d.RevokedAt, d.ExpiresAt, d.Expired = mesh.Revoked, p.ExpiresAt, p.ExpiresAt, true
		}
		if keep[p.Name] != i {
			alt := ""
			for n := 1; n < 100 && alt == ""; n++ {
				suffix := fmt.Sprintf(".%d", n)
				cand := p.Name[:min(len(p.Name), enroll.MaxNameLen-len(suffix))] + suffix
				if !taken[cand] {
					alt = cand
				}
			}
			if alt == "" {
				logf("gateway: upgrade: an older tombstone of %s has no free name; its address stays retired, its key is not carried", p.Name)
				continue
			}
			taken[alt] = true
			d.Name = alt
		}
		init.Devices = append(init.Devices, d)
	}
	for _, pa := range reg.PrinterAddrs() {
		init.Printers = append(init.Printers, mesh.Printer{Name: pa.Name, IPv4: pa.IPv4, IPv6: pa.IPv6})
	}
	return init
}

// gatewayListener passes on only connections from gateway addresses: the mesh engine trusts
// whoever reaches its listener, and WireGuard has authenticated the source address (a
// gateway's peer AllowedIPs hold its own addresses, its printers' and its devices').
type gatewayListener struct {
	net.Listener
	allow func(netip.Addr) bool
	logf  func(string, ...any)
}

func (l *gatewayListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		var a netip.Addr
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			a = ta.AddrPort().Addr().Unmap()
		}
		if l.allow(a) {
			return c, nil
		}
		l.logf("gateway: mesh port: connection from %v refused: not a gateway of the mesh", a)
		c.Close()
	}
}

// isGatewayAddr reports whether a is an address of a gateway of the mesh (replica or
// join.json) or of one of its printers (a gateway's connections may leave from either).
func (g *Gateway) isGatewayAddr(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	if n := g.meshNode.Load(); n != nil {
		r := n.Roster()
		for _, gw := range r.Gateways() {
			if gw.IPv4 == a || gw.IPv6 == a {
				return true
			}
		}
		if p, ok := r.PrinterAt(a); ok {
			_, isGW := r.Gateway(p.Gateway)
			return isGW
		}
	}
	if g.join != nil {
		for _, gw := range g.join.Gateways {
			if gw.IPv4 == a || gw.IPv6 == a {
				return true
			}
		}
	}
	return false
}

// meshDial is the node's dial: TCP from the netstack, so through WireGuard to the gateway.
func (g *Gateway) meshDial(ctx context.Context, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("mesh dial %q: not a tunnel ADDRESS:PORT", addr)
	}
	// From the gateway's own address, the one every other gateway's WireGuard peer for this
	// one allows from the start (the stack alone may pick a printer's address).
	from := g.gw.Addr4()
	if ap.Addr().Is6() {
		from = g.gw.Addr6()
	}
	if !from.IsValid() {
		return g.stack.DialTCP(ctx, ap)
	}
	return g.stack.DialTCPFrom(ctx, from, ap)
}

// meshRoster is the replica as Roster shows it (local revocations included).
func (g *Gateway) meshRoster() *mesh.Roster { return g.node.Roster() }

// meshActive reports whether the replica has the device p active with p's key.
func meshActive(r *mesh.Roster, p enroll.Peer) bool {
	d, ok := r.Device(p.Name)
	return ok && d.State == mesh.Active && d.PublicKey == mesh.Key(p.PublicKey)
}

// peerOfDevice is a device homed on another gateway as this gateway's code sees a peer.
func peerOfDevice(d mesh.Device) enroll.Peer {
	p := enroll.Peer{Name: d.Name, Role: enroll.Role(d.Role), State: enroll.Active, PublicKey: wgtypes.Key(d.PublicKey),
		IPv4: d.IPv4, IPv6: d.IPv6, APIKeyHash: d.APIKeyHash, APIKeyRole: enroll.Role(d.APIKeyRole), Created: d.Created,
		Home: d.Home}
	if d.State == mesh.Revoked {
		p.State, p.RevokedAt = enroll.Revoked, d.RevokedAt
	}
	return p
}

// meshError maps the mesh's errors onto enroll's, keeping the message: no quorum is
// ErrUnavailable (503 on the web API), taken or revoked names ErrExists, and so on.
func meshError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, mesh.ErrNoQuorum):
		return fmt.Errorf("%w; is a majority of the mesh's gateways running? (%w)", err, enroll.ErrUnavailable)
	case errors.Is(err, mesh.ErrExists), errors.Is(err, mesh.ErrRevoked):
		return fmt.Errorf("%w (%w)", err, enroll.ErrExists)
	case errors.Is(err, mesh.ErrInvalid):
		return fmt.Errorf("%w (%w)", err, enroll.ErrInvalid)
	case errors.Is(err, mesh.ErrNotFound):
		return fmt.Errorf("%w (%w)", err, enroll.ErrNotFound)
	}
	return err
}
