package gateway

import (
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/tunnel"
)

// PeerInfo is one peer as `printgate peers --json` shows it: the roster's view joined with
// the device's live stats. It never holds a secret (no preshared key, no API key hash).
type PeerInfo struct {
	Name     string `json:"name"`
	Role     string `json:"role"`
	State    string `json:"state"` // pending, active, revoked or expired
	Address  string `json:"address"`
	Address6 string `json:"address6,omitempty"`
	// PublicKey is the peer's WireGuard public key (base64).
	PublicKey string     `json:"public_key"`
	OwnKey    bool       `json:"own_key"`
	Created   time.Time  `json:"created"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"` // pending peers only
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// LastHandshake is the latest handshake the device or the roster knows; nil: never.
	LastHandshake *time.Time `json:"last_handshake,omitempty"`
	// LastHandshakeAge is seconds since LastHandshake; nil: never.
	LastHandshakeAge *float64 `json:"last_handshake_age_seconds,omitempty"`
	// Endpoint is where the peer's packets last came from; empty: unknown.
	Endpoint string `json:"endpoint,omitempty"`
	RxBytes  int64  `json:"rx_bytes"`
	TxBytes  int64  `json:"tx_bytes"`
	// Clone is true when the peer's key was seen alternating between endpoints (the same
	// config on two devices).
	Clone bool `json:"clone"`
}

// PeerInfoFrom joins a roster peer with its device stats (nil: none known) at time now.
func PeerInfoFrom(p enroll.Peer, st *tunnel.PeerStats, now time.Time) PeerInfo {
	pi := PeerInfo{
		Name:      p.Name,
		Role:      string(p.Role),
		State:     string(p.State),
		Address:   addrString(p.IPv4),
		Address6:  addrString(p.IPv6),
		PublicKey: p.PublicKey.String(),
		OwnKey:    p.OwnKey,
		Created:   p.Created,
		Clone:     p.Clone,
		RxBytes:   p.RxBytes,
		TxBytes:   p.TxBytes,
	}
	if p.State == enroll.Pending && !p.ExpiresAt.IsZero() {
		t := p.ExpiresAt
		pi.ExpiresAt = &t
	}
	if !p.RevokedAt.IsZero() {
		t := p.RevokedAt
		pi.RevokedAt = &t
	}
	hs := p.LastHandshake
	if st != nil {
		if st.LastHandshake.After(hs) {
			hs = st.LastHandshake
		}
		if st.Endpoint.IsValid() {
			pi.Endpoint = st.Endpoint.String()
		}
		pi.RxBytes, pi.TxBytes = st.RxBytes, st.TxBytes
	}
	if pi.Endpoint == "" && p.Endpoint.IsValid() {
		pi.Endpoint = p.Endpoint.String()
	}
	if !hs.IsZero() {
		pi.LastHandshake = &hs
		age := now.Sub(hs).Seconds()
		if age < 0 {
			age = 0
		}
		pi.LastHandshakeAge = &age
	}
	return pi
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// Status is the gateway as `printgate status --json` shows it.
type Status struct {
	// Running is true when a daemon answered on the control socket.
	Running    bool   `json:"running"`
	PublicKey  string `json:"public_key"`
	ListenPort int    `json:"listen_port"`
	Endpoint   string `json:"endpoint,omitempty"`
	// Addresses are the gateway's own tunnel addresses (IPv4 first).
	Addresses []string `json:"addresses"`
	Prefix4   string   `json:"prefix4"`
	Prefix6   string   `json:"prefix6,omitempty"`
	// URL is the web UI's address inside the tunnel.
	URL string `json:"url"`
	// Interface is the UAPI name for `wg show`; empty: none.
	Interface string        `json:"interface,omitempty"`
	Printers  []PrinterInfo `json:"printers"`
	// Peers counts the roster by state.
	Peers map[string]int `json:"peers"`
}

// PrinterInfo is one printer in Status.
type PrinterInfo struct {
	Name     string `json:"name"`
	Address  string `json:"address"`
	Address6 string `json:"address6,omitempty"`
	// URL is the printer's OctoPrint-compatible API base inside the tunnel.
	URL   string `json:"url"`
	Port  string `json:"port,omitempty"` // serial device, "sim" for a simulator
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// Status returns the running gateway's status.
func (g *Gateway) Status() Status {
	st := baseStatus(g.gw)
	st.Running = true
	st.ListenPort = g.dev.ListenPort()
	st.Interface = g.cfg.Interface
	for _, p := range g.prs {
		st.Printers = append(st.Printers, p.info())
	}
	for _, p := range g.Peers() {
		st.Peers[p.State]++
	}
	return st
}

// OfflineStatus is the status of a state directory with no daemon running: the gateway's
// configuration, the printers the roster has addresses for (state "stopped") and the roster.
func OfflineStatus(reg *enroll.Registry) Status {
	st := baseStatus(reg.Gateway())
	for _, pa := range reg.PrinterAddrs() {
		st.Printers = append(st.Printers, PrinterInfo{
			Name: pa.Name, Address: addrString(pa.IPv4), Address6: addrString(pa.IPv6),
			URL: "http://" + addrString(pa.IPv4) + "/", State: "stopped",
		})
	}
	now := time.Now()
	for _, p := range reg.Peers() {
		st.Peers[PeerInfoFrom(p, nil, now).State]++
	}
	return st
}

func baseStatus(gw enroll.Gateway) Status {
	st := Status{
		PublicKey:  keyString(gw.PrivateKey.PublicKey()),
		ListenPort: gw.ListenPort,
		Endpoint:   gw.Endpoint,
		Prefix4:    prefixString(gw.Prefix4),
		Prefix6:    prefixString(gw.Prefix6),
		Printers:   []PrinterInfo{},
		Peers:      map[string]int{},
	}
	if gw.Prefix4.IsValid() {
		a := firstHost(gw.Prefix4)
		st.Addresses = append(st.Addresses, a.String())
		st.URL = "http://" + a.String() + "/"
	}
	if gw.Prefix6.IsValid() {
		st.Addresses = append(st.Addresses, firstHost(gw.Prefix6).String())
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

// OfflinePeers lists a state directory's peers with no daemon running (no live stats).
func OfflinePeers(reg *enroll.Registry) []PeerInfo {
	now := time.Now()
	out := []PeerInfo{}
	for _, p := range reg.Peers() {
		out = append(out, PeerInfoFrom(p, nil, now))
	}
	return out
}
