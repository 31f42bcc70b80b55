package gateway

// What the mesh replica drives on this gateway: the WireGuard peers for the other gateways,
// one-time join peers, and the reaction to every roster change (revocation everywhere).

import (
	"context"
	"net"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/mesh"
	"github.com/printgate/printgate/tunnel"
)

// joinPeer is a one-time WireGuard peer for a gateway joining with a token: its one-time
// key, the one /32 it may use, and when it dies. It survives every re-apply until removed or
// expired.
type joinPeer struct {
	key   wgtypes.Key
	addr  netip.Addr
	until time.Time
}

// addJoinPeer puts a one-time join peer on the device until until (or removeJoinPeer): the
// hook of `mesh invite` (helper join). Re-applies at once.
func (g *Gateway) addJoinPeer(key wgtypes.Key, addr netip.Addr, until time.Time) error {
	g.reg.Lock()
	defer g.reg.Unlock()
	if g.reg.r == nil {
		return net.ErrClosed
	}
	if g.reg.joins == nil {
		g.reg.joins = map[wgtypes.Key]joinPeer{}
	}
	g.reg.joins[key] = joinPeer{key: key, addr: addr, until: until}
	_, _, err := g.applyLocked()
	return err
}

// isJoinAddr reports whether a is the address of a one-time join peer still alive: the only
// sources the join port (7101) accepts.
func (g *Gateway) isJoinAddr(a netip.Addr) bool {
	g.reg.Lock()
	defer g.reg.Unlock()
	now := g.now()
	for _, jp := range g.reg.joins {
		if jp.addr == a.Unmap() && now.Before(jp.until) {
			return true
		}
	}
	return false
}

// removeJoinPeer takes a one-time join peer off the device and closes its connections.
func (g *Gateway) removeJoinPeer(key wgtypes.Key) error {
	g.reg.Lock()
	defer g.reg.Unlock()
	jp, ok := g.reg.joins[key]
	if !ok || g.reg.r == nil {
		return nil
	}
	delete(g.reg.joins, key)
	_, _, err := g.applyLocked()
	g.stack.CloseConns(func(a netip.Addr) bool { return a == jp.addr })
	return err
}

// meshPeersLocked returns the WireGuard peers the mesh asks for besides devices homed here
// (local): every other gateway (AllowedIPs: its addresses, its printers', and those of the
// active devices homed there) and the one-time join peers still alive. An address is given
// to one peer only (the first claim wins, local devices first), so one inconsistent record
// can never make the whole device configuration invalid. Caller holds g.reg.
func (g *Gateway) meshPeersLocked(r *mesh.Roster, now time.Time, local []tunnel.Peer) []tunnel.Peer {
	var out []tunnel.Peer
	claimed := map[netip.Addr]bool{}
	keys := map[wgtypes.Key]bool{}
	for _, p := range local {
		keys[p.PublicKey] = true
		for _, pfx := range p.AllowedIPs {
			claimed[pfx.Addr()] = true
		}
	}
	gws := r.Gateways()
	if !r.Initialized() && g.join != nil {
		gws = g.join.Gateways
	}
	allowed := map[string][]netip.Prefix{}
	add := func(gw string, a4, a6 netip.Addr) {
		for _, a := range []netip.Addr{a4, a6} {
			if a.IsValid() && !claimed[a] {
				claimed[a] = true
				allowed[gw] = append(allowed[gw], netip.PrefixFrom(a, a.BitLen()))
			}
		}
	}
	for _, gw := range gws {
		add(gw.Name, gw.IPv4, gw.IPv6)
	}
	for _, p := range r.Printers() {
		if _, ok := allowed[p.Gateway]; ok {
			add(p.Gateway, p.IPv4, p.IPv6)
		}
	}
	for _, d := range r.Devices() {
		if _, ok := allowed[d.Home]; ok && d.State == mesh.Active {
			add(d.Home, d.IPv4, d.IPv6)
		}
	}
	for _, gw := range gws {
		k := wgtypes.Key(gw.PublicKey)
		if gw.Name == g.gw.Name || k == g.gw.PublicKey() || keys[k] || len(allowed[gw.Name]) == 0 {
			continue
		}
		keys[k] = true
		out = append(out, tunnel.Peer{PublicKey: k, AllowedIPs: allowed[gw.Name],
			Endpoint: g.resolveEndpoint(gw.Endpoint), PersistentKeepalive: GatewayKeepalive})
	}
	for k, jp := range g.reg.joins {
		if !now.Before(jp.until) {
			delete(g.reg.joins, k)
			g.stack.CloseConns(func(a netip.Addr) bool { return a == jp.addr })
			continue
		}
		if claimed[jp.addr] || keys[jp.key] {
			g.logf("gateway: join peer at %v: its address or key is taken; not put on the device", jp.addr)
			continue
		}
		claimed[jp.addr], keys[jp.key] = true, true
		out = append(out, tunnel.Peer{PublicKey: jp.key, AllowedIPs: []netip.Prefix{netip.PrefixFrom(jp.addr, 32)}})
	}
	return out
}

// resolveEndpoint turns a gateway's HOST:PORT into an address, once per name (a DNS name is
// looked up with a short bound and remembered; an unresolvable one gives no endpoint, and
// that gateway's keepalives reach us instead).
func (g *Gateway) resolveEndpoint(ep string) netip.AddrPort {
	if ap, err := netip.ParseAddrPort(ep); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	g.endpoints.Lock()
	defer g.endpoints.Unlock()
	if ap, ok := g.endpoints.m[ep]; ok {
		return ap
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ap, err := tunnel.ResolveEndpoint(ctx, nil, ep)
	if err != nil {
		g.logf("gateway: mesh: gateway endpoint %s: %v", ep, err)
		return netip.AddrPort{}
	}
	if g.endpoints.m == nil {
		g.endpoints.m = map[string]netip.AddrPort{}
	}
	g.endpoints.m[ep] = ap
	return ap
}

// meshLoop follows the replica: after every change (and once at start) syncMesh. Owned by
// the Gateway (g.wg); exits when ctx ends.
func (g *Gateway) meshLoop(ctx context.Context) {
	defer g.wg.Done()
	var prev *mesh.Roster
	for {
		ch := g.node.Changed() // before reading: a change after the read closes it
		r := g.node.Roster()
		g.syncMesh(prev, r)
		prev = r
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

// syncMesh brings the gateway in line with roster r (prev: the roster last synced, nil at
// start): devices revoked since prev are tombstoned here if homed here, the device is
// re-applied (their peers, the gateways' AllowedIPs), and their open connections closed.
func (g *Gateway) syncMesh(prev, r *mesh.Roster) {
	start := time.Now()
	var revoked []mesh.Device
	for _, d := range r.Devices() {
		if d.State != mesh.Revoked {
			continue
		}
		if prev != nil {
			if pd, ok := prev.Device(d.Name); ok && pd.State == mesh.Revoked {
				continue
			}
		}
		revoked = append(revoked, d)
	}
	g.reg.Lock()
	if g.reg.r == nil {
		g.reg.Unlock()
		return
	}
	for _, d := range revoked {
		if d.Home != g.gw.Name {
			continue
		}
		if p, ok := g.reg.r.Peer(d.Name); ok && p.PublicKey == wgtypes.Key(d.PublicKey) {
			if _, err := g.reg.r.Revoke(d.Name); err != nil {
				g.logf("gateway: mesh revoked %s; the local record: %v", d.Name, err)
			}
		}
	}
	if _, _, err := g.applyLocked(); err != nil {
		g.logf("gateway: apply after a mesh change: %v", err)
	}
	g.reg.Unlock()
	if len(revoked) == 0 {
		return
	}
	addrs := map[netip.Addr]bool{}
	for _, d := range revoked {
		addrs[d.IPv4] = true
		if d.IPv6.IsValid() {
			addrs[d.IPv6] = true
		}
	}
	n := g.stack.CloseConns(func(a netip.Addr) bool { return addrs[a] })
	names := make([]string, len(revoked))
	for i, d := range revoked {
		names[i] = d.Name
	}
	if g.cfg.onMeshRevoked != nil {
		g.cfg.onMeshRevoked(names, n)
	}
	if prev != nil {
		logf := g.verbosef // a revocation made here was logged by revoke
		if n > 0 {
			logf = g.logf
		}
		logf("gateway: mesh: %v revoked: off this gateway in %v, %d connections closed", names, time.Since(start).Round(time.Microsecond), n)
	}
}

// revokeStale revokes in the mesh every device homed here that the mesh has active but the
// registry has not live: an enrollment whose local record was never written (revoked), or a
// pending enrollment whose TTL passed (expired). Enrollments in flight are left alone.
func (g *Gateway) revokeStale(ctx context.Context) {
	r := g.node.Roster()
	g.reg.Lock()
	if g.reg.r == nil {
		g.reg.Unlock()
		return
	}
	live := map[string]wgtypes.Key{}
	for _, p := range g.reg.r.DevicePeers() { // the live ones: pending within their TTL, active
		live[p.Name] = p.PublicKey
	}
	expired := map[wgtypes.Key]bool{}
	for _, p := range g.view().peers {
		if p.State == enroll.Expired {
			expired[p.PublicKey] = true
		}
	}
	now := g.now()
	for name, u := range g.unclear {
		if !now.Before(u.until) {
			u.sec.Forget()
			delete(g.unclear, name)
		}
	}
	var stale []string
	var lapsed []mesh.Device
	for _, name := range r.HomedAt(g.gw.Name) {
		d, _ := r.Device(name)
		if g.inflight[name] || g.unclear[name].sec != nil {
			continue
		}
		if k, ok := live[name]; !ok || k != wgtypes.Key(d.PublicKey) {
			if expired[wgtypes.Key(d.PublicKey)] && d.Pending() {
				lapsed = append(lapsed, d)
			} else {
				stale = append(stale, name)
			}
		}
	}
	g.reg.Unlock()
	for _, d := range lapsed {
		// Its QR timed out: off this gateway already, so nothing else can reach it; every
		// gateway shows it expired once this commits (and by its TTL until then).
		ectx, cancel := context.WithTimeout(ctx, meshRevokeTimeout)
		_, err := g.node.Expire(ectx, d.Name, d.PublicKey)
		cancel()
		if err != nil {
			g.verbosef("gateway: mesh: expiry of %s: %v (told again at the next round)", d.Name, err)
			continue
		}
		g.verbosef("gateway: mesh: %s recorded expired in the mesh (its expiry was logged here)", d.Name)
	}
	for _, name := range stale {
		rctx, cancel := context.WithTimeout(ctx, meshRevokeTimeout)
		committed, err := g.node.Revoke(rctx, name)
		cancel()
		if err != nil {
			g.logf("gateway: mesh: revoke %s (homed here, no live local record) in the mesh: %v", name, err)
			continue
		}
		g.logf("gateway: mesh: %s revoked in the mesh too (homed here, no live local record: its QR timed out or its enrollment never finished; committed %v)", name, committed)
	}
}

// announceEndpoint tells the mesh this gateway's endpoint when the replica has another one
// (`run --endpoint`, a re-detected LAN address): the other gateways dial it from then on.
// Without quorum it is tried again at the next stats round.
func (g *Gateway) announceEndpoint(ctx context.Context) {
	self, ok := g.node.Roster().Gateway(g.gw.Name)
	if !ok || self.Endpoint == g.gw.Endpoint || self.PublicKey != mesh.Key(g.gw.PublicKey()) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, meshRevokeTimeout)
	defer cancel()
	if _, err := g.node.AddGateway(ctx, mesh.AddGatewayCmd{Name: g.gw.Name, PublicKey: self.PublicKey, Endpoint: g.gw.Endpoint}); err != nil {
		g.verbosef("gateway: mesh: announce endpoint %s: %v", g.gw.Endpoint, err)
		return
	}
	g.logf("gateway: mesh: this gateway's endpoint is now %s for the other gateways", g.gw.Endpoint)
}
