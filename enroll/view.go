package enroll

import (
	"encoding/json"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// PeerView is a peer as people, scripts and the web UI see it: `printgate peers --json`, the
// control socket and the web API's device list all carry this one type, so they share one set
// of JSON names. It never holds a secret: no preshared key, no API key, no API key hash. The
// state file's record (diskPeer) is a different type, so a change to one never leaks into the
// other.
type PeerView struct {
	Name     string `json:"name"`
	Role     Role   `json:"role"`
	State    State  `json:"state"` // pending, active, revoked or expired
	Address  string `json:"address"`
	Address6 string `json:"address6,omitempty"`
	// PublicKey is the peer's WireGuard public key (base64).
	PublicKey string `json:"public_key"`
	// OwnKey is true when the device brought its own key (--pubkey).
	OwnKey bool `json:"own_key"`
	// HasAPIKey is true when the peer holds an API key; APIKeyRole narrows it (empty: Role).
	HasAPIKey  bool      `json:"has_api_key"`
	APIKeyRole Role      `json:"api_key_role,omitempty"`
	Created    time.Time `json:"created"`
	// ExpiresAt is when a pending peer dies unused; nil for every other state.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// LastHandshake is the latest handshake known; nil: never.
	LastHandshake *time.Time `json:"last_handshake,omitempty"`
	// LastHandshakeAge is seconds since LastHandshake at the time of the view; nil: never.
	LastHandshakeAge *float64 `json:"last_handshake_age_seconds,omitempty"`
	// Endpoint is where the peer's packets last came from; empty: unknown.
	Endpoint string `json:"endpoint,omitempty"`
	RxBytes  int64  `json:"rx_bytes"`
	TxBytes  int64  `json:"tx_bytes"`
	// Clone is true when the peer's key was seen alternating between endpoints (the same
	// config on two devices).
	Clone bool `json:"clone"`
	// Gateway is the device's home gateway in a mesh (the one peer of its config); empty
	// outside a mesh.
	Gateway string `json:"gateway,omitempty"`
}

// View is p as shown at time now: its state at now (a pending peer past its expiry is
// expired) and the age of its last handshake. A zero now leaves the state as recorded and
// the age out.
func (p Peer) View(now time.Time) PeerView {
	v := PeerView{
		Name: p.Name, Role: p.Role, State: p.State,
		Address: addrText(p.IPv4), Address6: addrText(p.IPv6),
		PublicKey: p.PublicKey.String(), OwnKey: p.OwnKey,
		HasAPIKey: len(p.APIKeyHash) > 0, APIKeyRole: p.APIKeyRole,
		Created: p.Created, RxBytes: p.RxBytes, TxBytes: p.TxBytes, Clone: p.Clone, Gateway: p.Home,
	}
	if !now.IsZero() {
		v.State = p.StateAt(now)
	}
	if v.State == Pending && !p.ExpiresAt.IsZero() {
		v.ExpiresAt = timePtr(p.ExpiresAt)
	}
	if !p.RevokedAt.IsZero() {
		v.RevokedAt = timePtr(p.RevokedAt)
	}
	if !p.LastHandshake.IsZero() {
		v.LastHandshake = timePtr(p.LastHandshake)
		if !now.IsZero() {
			age := max(now.Sub(p.LastHandshake).Round(time.Millisecond).Seconds(), 0)
			v.LastHandshakeAge = &age
		}
	}
	if p.Endpoint.IsValid() {
		v.Endpoint = p.Endpoint.String()
	}
	return v
}

func timePtr(t time.Time) *time.Time { return &t }

func addrText(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// MarshalJSON encodes p as its PeerView (without an age): a Peer marshalled by mistake shows
// what `peers --json` shows and never a secret.
func (p Peer) MarshalJSON() ([]byte, error) { return json.Marshal(p.View(time.Time{})) }

// UnmarshalJSON decodes a PeerView back into the fields it carries (PresharedKey and
// APIKeyHash stay zero: they are never in it).
func (p *Peer) UnmarshalJSON(b []byte) error {
	var v PeerView
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*p = Peer{Name: v.Name, Role: v.Role, State: v.State, OwnKey: v.OwnKey, APIKeyRole: v.APIKeyRole,
		Created: v.Created, RxBytes: v.RxBytes, TxBytes: v.TxBytes, Clone: v.Clone}
	if v.PublicKey != "" {
		k, err := wgtypes.ParseKey(v.PublicKey)
		if err != nil {
			return err
		}
		p.PublicKey = k
	}
	for _, a := range []struct {
		text string
		to   *netip.Addr
	}{{v.Address, &p.IPv4}, {v.Address6, &p.IPv6}} {
		if a.text == "" {
			continue
		}
		addr, err := netip.ParseAddr(a.text)
		if err != nil {
			return err
		}
		*a.to = addr
	}
	if v.Endpoint != "" {
		ep, err := netip.ParseAddrPort(v.Endpoint)
		if err != nil {
			return err
		}
		p.Endpoint = ep
	}
	for _, t := range []struct {
		from *time.Time
		to   *time.Time
	}{{v.ExpiresAt, &p.ExpiresAt}, {v.RevokedAt, &p.RevokedAt}, {v.LastHandshake, &p.LastHandshake}} {
		if t.from != nil {
			*t.to = *t.from
		}
	}
	return nil
}
