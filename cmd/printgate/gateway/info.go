package gateway

import (
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/control"
	"github.com/printgate/printgate/mesh"
	"github.com/printgate/printgate/tunnel"
)

// viewOf is a roster peer as shown, joined with its device stats (nil: none known) at time
// now: the device's handshake when newer, its endpoint and its counters. A pending peer the
// device has seen a handshake from is shown active, as the next stats round records it.
func viewOf(p enroll.Peer, st *tunnel.PeerStats, now time.Time) enroll.PeerView {
	if st != nil {
		if st.LastHandshake.After(p.LastHandshake) {
			p.LastHandshake = st.LastHandshake
		}
		if p.State == enroll.Pending && !st.LastHandshake.IsZero() && p.Live(now) {
			p.State = enroll.Active
		}
		if st.Endpoint.IsValid() {
			p.Endpoint = st.Endpoint
		}
		p.RxBytes, p.TxBytes = st.RxBytes, st.TxBytes
	}
	return p.View(now)
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// Status returns the running gateway's status.
func (g *Gateway) Status() control.Status {
	st := baseStatus(g.gw)
	st.Running = true
	st.ListenPort = g.dev.ListenPort()
	st.Interface = g.cfg.Interface
	for _, p := range g.prs {
		pi := p.info()
		pi.Gateway = g.gw.Name
		st.Printers = append(st.Printers, pi)
	}
	st.Printers = append(st.Printers, remotePrinters(g.node.Roster(), g.gw.Name)...)
	for _, p := range g.peers(nil) {
		st.Peers[string(p.State)]++
	}
	return st
}

// OfflineStatus is the status of a state directory with no daemon running: the gateway's
// configuration, the printers (state "stopped"; with a mesh, every printer of the mesh from
// this gateway's replica, other gateways' as "remote") and the devices by state.
func OfflineStatus(reg *enroll.Registry) control.Status {
	gw := reg.Gateway()
	st := baseStatus(gw)
	r := offlineRoster(reg)
	if r == nil {
		for _, pa := range reg.PrinterAddrs() {
			st.Printers = append(st.Printers, control.PrinterInfo{
				Name: pa.Name, Address: addrString(pa.IPv4), Address6: addrString(pa.IPv6),
				URL: "http://" + addrString(pa.IPv4) + "/", State: "stopped",
			})
		}
	} else {
		for _, p := range r.Printers() {
			if p.Gateway == gw.Name {
				st.Printers = append(st.Printers, control.PrinterInfo{Name: p.Name, Address: addrString(p.IPv4), Address6: addrString(p.IPv6),
					URL: "http://" + addrString(p.IPv4) + "/", State: "stopped", Gateway: p.Gateway})
			}
		}
		st.Printers = append(st.Printers, remotePrinters(r, gw.Name)...)
	}
	for _, p := range OfflinePeers(reg) {
		st.Peers[string(p.State)]++
	}
	return st
}

// remotePrinters are the printers of the other gateways of the mesh, as status lists them
// (state "remote": their own gateway knows more).
func remotePrinters(r *mesh.Roster, self string) []control.PrinterInfo {
	var out []control.PrinterInfo
	for _, p := range r.Printers() {
		if p.Gateway == self {
			continue
		}
		out = append(out, control.PrinterInfo{Name: p.Name, Address: addrString(p.IPv4), Address6: addrString(p.IPv6),
			URL: "http://" + addrString(p.IPv4) + "/", State: "remote", Gateway: p.Gateway})
	}
	return out
}

func baseStatus(gw enroll.Gateway) control.Status {
	st := control.Status{
		PublicKey:  keyString(gw.PrivateKey.PublicKey()),
		ListenPort: gw.ListenPort,
		Endpoint:   gw.Endpoint,
		Prefix4:    prefixString(gw.Prefix4),
		Prefix6:    prefixString(gw.Prefix6),
		Printers:   []control.PrinterInfo{},
		Peers:      map[string]int{},
	}
	st.Name = gw.Name
	if gw.Prefix4.IsValid() {
		a := gw.Addr4()
		st.Addresses = append(st.Addresses, a.String())
		st.URL = "http://" + a.String() + "/"
	}
	if gw.Prefix6.IsValid() {
		st.Addresses = append(st.Addresses, gw.Addr6().String())
	}
	return st
}

func keyString(k wgtypes.Key) string {
	if k == (wgtypes.Key{}) {
		return ""
	}
	return k.String()
}

func prefixString(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

// OfflinePeers lists a state directory's peers with no daemon running (no live stats): with
// a mesh, every device of the mesh as this gateway's replica has it, as Peers lists them.
func OfflinePeers(reg *enroll.Registry) []enroll.PeerView {
	now := time.Now()
	peers := reg.Peers()
	r := offlineRoster(reg)
	if r == nil {
		out := make([]enroll.PeerView, 0, len(peers))
		for _, p := range peers {
			out = append(out, p.View(now))
		}
		return out
	}
	return meshViews(r, reg.Gateway().Name, localViews(peers, reg.Gateway().Name, nil, nil, now), nil, now)
}
