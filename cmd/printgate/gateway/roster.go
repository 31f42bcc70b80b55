package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/netip"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/enroll"
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

// WhoIs returns the live peer on the device that owns a tunnel address: the identity of a
// request. It takes no lock.
func (g *Gateway) WhoIs(a netip.Addr) (enroll.Peer, bool) {
	v := g.view()
	i, ok := v.byAddr[a.Unmap().WithZone("")]
	if !ok || !v.peers[i].Live(g.now()) {
		return enroll.Peer{}, false
	}
	return v.peers[i], true
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
