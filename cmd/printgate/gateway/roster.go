package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/netip"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/mesh"
)

// rosterView is an immutable copy of the roster as last applied to the device. The gateway
// builds a new one on every apply (enroll, revoke, API key rotation, each stats round) and
// publishes it whole through an atomic pointer: requests (WhoIs, CheckAPIKey) and listings
// read it without taking any lock, so neither the stats round nor a write ever stalls them.
// Nothing in it is changed after publication.
type rosterView struct {
	peers   []enroll.Peer        // every peer, tombstones included, sorted by name
	onDev   map[wgtypes.Key]bool // keys on the device
	byAddr  map[netip.Addr]int   // tunnel address → index in peers, peers on the device only
	byAPIKy map[[32]byte]int     // API key hash → index in peers, peers on the device only
}

// publishLocked builds the view of the registry and the applied set and publishes it.
// Caller holds g.reg.
func (g *Gateway) publishLocked() {
	if g.reg.r == nil {
		g.roster.Store(&rosterView{})
		return
	}
	v := &rosterView{
		peers:   g.reg.r.Peers(),
		onDev:   make(map[wgtypes.Key]bool, len(g.reg.applied)),
		byAddr:  make(map[netip.Addr]int, 2*len(g.reg.applied)),
		byAPIKy: make(map[[32]byte]int, len(g.reg.applied)),
	}
	for k := range g.reg.applied {
		v.onDev[k] = true
	}
	for i, p := range v.peers {
		if !v.onDev[p.PublicKey] {
			continue
		}
		v.byAddr[p.IPv4] = i
		if p.IPv6.IsValid() {
			v.byAddr[p.IPv6] = i
		}
		if len(p.APIKeyHash) == sha256.Size {
			v.byAPIKy[[32]byte(p.APIKeyHash)] = i
		}
	}
	g.roster.Store(v)
}

// view returns the published roster view; never nil.
func (g *Gateway) view() *rosterView {
	if v := g.roster.Load(); v != nil {
		return v
	}
	return &rosterView{}
}

// WhoIs returns the device of the mesh that owns a tunnel address: the identity of a
// request. A device homed here must be live on the device and active in the mesh replica; a
// device homed elsewhere (its packets relayed by its home gateway, whose WireGuard peer here
// holds its addresses) is identified from the replica alone. It takes no lock: the replica is
// read as it is now, so a revocation applied here a moment ago is honoured already.
func (g *Gateway) WhoIs(a netip.Addr) (enroll.Peer, bool) {
	a = a.Unmap().WithZone("")
	v := g.view()
	r := g.node.Roster()
	if i, ok := v.byAddr[a]; ok {
		p := v.peers[i]
		if !p.Live(g.now()) || !meshActive(r, p) {
			return enroll.Peer{}, false
		}
		return p, true
	}
	d, ok := r.WhoIs(a)
	if !ok || d.State != mesh.Active || d.Home == g.gw.Name {
		return enroll.Peer{}, false
	}
	return peerOfDevice(d), true
}

// checkAPIKey returns the role a request from the device named peer gets with API key key:
// the key's narrowing role, or the device's. The key must be that device's (a key presented
// from another device is refused). A device homed here is checked against the registry, one
// homed elsewhere against the hash the mesh holds.
func (g *Gateway) checkAPIKey(peer, key string) (enroll.Role, bool) {
	if p, ok := g.apiKeyPeer(key); ok {
		r := g.node.Roster()
		if p.Name != peer || !meshActive(r, p) {
			return "", false
		}
		// The mesh must hold the same key: a rotation recorded in the mesh but not here
		// leaves the old key working nowhere.
		if d, _ := r.Device(p.Name); len(d.APIKeyHash) != len(p.APIKeyHash) || subtle.ConstantTimeCompare(d.APIKeyHash, p.APIKeyHash) != 1 {
			return "", false
		}
		return p.EffectiveAPIRole(), true
	}
	d, ok := g.node.Roster().Device(peer)
	if !ok || d.State != mesh.Active || d.Home == g.gw.Name {
		return "", false
	}
	h := enroll.HashAPIKey(key)
	if len(d.APIKeyHash) != len(h) || subtle.ConstantTimeCompare(d.APIKeyHash, h[:]) != 1 {
		return "", false
	}
	return peerOfDevice(d).EffectiveAPIRole(), true
}

// apiKeyPeer returns the live peer on the device whose API key is key. It takes no lock.
func (g *Gateway) apiKeyPeer(key string) (enroll.Peer, bool) {
	h := enroll.HashAPIKey(key)
	v := g.view()
	i, ok := v.byAPIKy[h]
	if !ok {
		return enroll.Peer{}, false
	}
	p := v.peers[i]
	if !p.Live(g.now()) || subtle.ConstantTimeCompare(p.APIKeyHash, h[:]) != 1 {
		return enroll.Peer{}, false
	}
	return p, true
}
