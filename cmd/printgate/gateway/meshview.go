package gateway

// The devices of the mesh as `printgate peers --json`, the control socket and the web API's
// device list show them: the same list, field for field, on every gateway.
//
// Two sources make one view of a device:
//   - the mesh replica: name, role, addresses, key, own key, API key role, created, home,
//     and the life cycle as far as the mesh has it (pending until the home gateway records
//     the first handshake, activated, revoked, expired);
//   - the home gateway: what only it sees (the last handshake, the endpoint, the byte
//     counters, the clone flag) and a change of state the mesh has not committed yet (a first
//     handshake just seen, a revocation or expiry in flight).
//
// A gateway asks the others for the second part (mesh.Node.Live, inside the tunnel, bounded
// by liveWait); a home gateway it cannot reach contributes nothing, and its devices show the
// replica's facts alone. A home gateway answers only for the devices where it adds
// something, so a thousand devices that never connected cost nothing on the wire.

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/mesh"
	"github.com/printgate/printgate/tunnel"
)

// liveWait bounds how long a listing waits for the other gateways' live facts.
const liveWait = time.Second

// deviceView is a device as the mesh replica alone shows it at time now.
func deviceView(d mesh.Device, now time.Time) enroll.PeerView {
	p := peerOfDevice(d)
	p.OwnKey = d.OwnKey
	switch {
	case d.Pending():
		p.State, p.ExpiresAt = enroll.Pending, d.ExpiresAt
	case d.State == mesh.Revoked && d.Expired:
		p.State, p.ExpiresAt, p.RevokedAt = enroll.Expired, d.ExpiresAt, time.Time{}
	}
	return p.View(now)
}

// mergeView completes mv, a device as the replica shows it, with hv, the same device as its
// home gateway shows it (nil: not known). The replica decides every replicated fact; a
// revocation or expiry it has committed is final. Otherwise the home gateway's state stands
// (it is ahead of the mesh: a first handshake or a revocation not yet committed), and its
// live facts are added. The handshake's age is taken at now.
func mergeView(mv enroll.PeerView, hv *enroll.PeerView, d mesh.Device, now time.Time) enroll.PeerView {
	if hv == nil || hv.PublicKey != mv.PublicKey {
		return mv
	}
	out := mv
	if d.State != mesh.Revoked {
		out.State, out.ExpiresAt, out.RevokedAt = hv.State, hv.ExpiresAt, hv.RevokedAt
	}
	out.LastHandshake, out.LastHandshakeAge = hv.LastHandshake, nil
	if hv.LastHandshake != nil {
		age := max(now.Sub(*hv.LastHandshake).Round(time.Millisecond).Seconds(), 0)
		out.LastHandshakeAge = &age
	}
	out.Endpoint, out.RxBytes, out.TxBytes, out.Clone = hv.Endpoint, hv.RxBytes, hv.TxBytes, hv.Clone
	return out
}

// adds reports whether the home gateway's view hv of a device adds anything to mv, the
// replica's: live facts, or a state the mesh has not committed yet.
func adds(mv, hv enroll.PeerView) bool {
	return hv.LastHandshake != nil || hv.Endpoint != "" || hv.RxBytes != 0 || hv.TxBytes != 0 || hv.Clone ||
		hv.State != mv.State || !sameTime(hv.ExpiresAt, mv.ExpiresAt) || !sameTime(hv.RevokedAt, mv.RevokedAt)
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

// meshViews lists every device of replica r merged with what the home gateways add: homed
// here, the local views (local, by key); homed elsewhere, live (by gateway, then name).
func meshViews(r *mesh.Roster, self string, local map[wgtypes.Key]enroll.PeerView, live map[string]map[string]enroll.PeerView, now time.Time) []enroll.PeerView {
	devs := r.Devices() // sorted by name
	out := make([]enroll.PeerView, 0, len(devs))
	for _, d := range devs {
		mv := deviceView(d, now)
		var hv *enroll.PeerView
		if d.Home == self {
			if v, ok := local[wgtypes.Key(d.PublicKey)]; ok {
				hv = &v
			}
		} else if v, ok := live[d.Home][d.Name]; ok {
			hv = &v
		}
		out = append(out, mergeView(mv, hv, d, now))
	}
	return out
}

// localViews are the registry's peers as this gateway shows them, by key, with the device's
// live numbers for those on it (stats, nil: none).
func localViews(peers []enroll.Peer, self string, onDev map[wgtypes.Key]bool, stats func(wgtypes.Key) *tunnel.PeerStats, now time.Time) map[wgtypes.Key]enroll.PeerView {
	out := make(map[wgtypes.Key]enroll.PeerView, len(peers))
	for _, p := range peers {
		var st *tunnel.PeerStats
		if stats != nil && onDev[p.PublicKey] {
			st = stats(p.PublicKey)
		}
		p.Home = self
		out[p.PublicKey] = viewOf(p, st, now)
	}
	return out
}

// Peers returns every device of the mesh, sorted by name, the same on every gateway that
// reaches the devices' home gateways: the replica's facts with each home gateway's live
// ones (this gateway's own from its device, the others' asked within liveWait).
func (g *Gateway) Peers() []enroll.PeerView {
	var live map[string]map[string]enroll.PeerView
	if r := g.node.Roster(); len(r.Gateways()) > 1 {
		ctx, cancel := context.WithTimeout(context.Background(), liveWait)
		live = decodeLive(g.node.Live(ctx), g.verbosef)
		cancel()
	}
	return g.peers(live)
}

// peers is Peers with the other gateways' live facts given (nil: none).
func (g *Gateway) peers(live map[string]map[string]enroll.PeerView) []enroll.PeerView {
	v := g.view()
	now := g.now()
	local := localViews(v.peers, g.gw.Name, v.onDev, g.statsFor, now)
	r := g.node.Roster()
	if !r.Initialized() {
		// Joined, not yet added: the registry is all there is.
		out := make([]enroll.PeerView, 0, len(v.peers))
		for _, p := range v.peers {
			out = append(out, local[p.PublicKey])
		}
		return out
	}
	return meshViews(r, g.gw.Name, local, live, now)
}

// liveView is what a home gateway tells the others of one of its devices (liveAnswer): the
// part of its view that may add to the replica's. JSON names as in enroll.PeerView.
type liveView struct {
	Name          string       `json:"name"`
	PublicKey     string       `json:"public_key"`
	State         enroll.State `json:"state"`
	ExpiresAt     *time.Time   `json:"expires_at,omitempty"`
	RevokedAt     *time.Time   `json:"revoked_at,omitempty"`
	LastHandshake *time.Time   `json:"last_handshake,omitempty"`
	Endpoint      string       `json:"endpoint,omitempty"`
	RxBytes       int64        `json:"rx_bytes,omitempty"`
	TxBytes       int64        `json:"tx_bytes,omitempty"`
	Clone         bool         `json:"clone,omitempty"`
}

// liveAnswer is this gateway's answer to another's Live call (mesh.Config.Live): its own
// devices, revoked ones included (their last handshake stays on record), where its view adds
// to the replica's.
func (g *Gateway) liveAnswer() json.RawMessage {
	r := g.node.Roster()
	v := g.view()
	now := g.now()
	local := localViews(v.peers, g.gw.Name, v.onDev, g.statsFor, now)
	out := []liveView{}
	for _, d := range r.Devices() {
		if d.Home != g.gw.Name {
			continue
		}
		hv, ok := local[wgtypes.Key(d.PublicKey)]
		if ok && adds(deviceView(d, now), hv) {
			out = append(out, liveView{Name: hv.Name, PublicKey: hv.PublicKey, State: hv.State, ExpiresAt: hv.ExpiresAt,
				RevokedAt: hv.RevokedAt, LastHandshake: hv.LastHandshake, Endpoint: hv.Endpoint, RxBytes: hv.RxBytes,
				TxBytes: hv.TxBytes, Clone: hv.Clone})
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil
	}
	return b
}

// decodeLive turns the other gateways' answers into views by gateway and device name; an
// answer that does not decode is left out (its devices show the replica's facts).
func decodeLive(answers map[string]json.RawMessage, logf func(string, ...any)) map[string]map[string]enroll.PeerView {
	out := make(map[string]map[string]enroll.PeerView, len(answers))
	for gw, raw := range answers {
		var views []liveView
		if err := json.Unmarshal(raw, &views); err != nil {
			logf("gateway: mesh: live facts from %s: %v", gw, err)
			continue
		}
		m := make(map[string]enroll.PeerView, len(views))
		for _, v := range views {
			m[v.Name] = enroll.PeerView{Name: v.Name, PublicKey: v.PublicKey, State: v.State, ExpiresAt: v.ExpiresAt,
				RevokedAt: v.RevokedAt, LastHandshake: v.LastHandshake, Endpoint: v.Endpoint, RxBytes: v.RxBytes,
				TxBytes: v.TxBytes, Clone: v.Clone}
		}
		out[gw] = m
	}
	return out
}

// activatePending tells the mesh the first handshake of every device homed here that the
// registry has active and the replica still pending, so every gateway shows it active.
// Without quorum it is tried again at the next stats round.
func (g *Gateway) activatePending(ctx context.Context) {
	r := g.node.Roster()
	type act struct {
		name string
		key  mesh.Key
		at   time.Time
	}
	var todo []act
	for _, p := range g.view().peers {
		if p.State != enroll.Active {
			continue
		}
		if d, ok := r.Device(p.Name); ok && d.Home == g.gw.Name && d.PublicKey == mesh.Key(p.PublicKey) && d.Pending() {
			todo = append(todo, act{p.Name, d.PublicKey, p.FirstHandshake})
		}
	}
	for _, a := range todo {
		actx, cancel := context.WithTimeout(ctx, meshRevokeTimeout)
		_, err := g.node.Activate(actx, a.name, a.key, a.at)
		cancel()
		if err != nil {
			g.verbosef("gateway: mesh: first handshake of %s: %v (told again at the next round)", a.name, err)
			if errors.Is(err, mesh.ErrNoQuorum) {
				return
			}
		}
	}
}
