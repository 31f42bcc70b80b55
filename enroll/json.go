package enroll

import (
	"encoding/json"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// publicPeer is a Peer as shown to people and scripts (`peers --json`, the admin API): keys
// as base64, and no secret material: the preshared key and the API key hash are left out.
type publicPeer struct {
	Name           string           `json:"name"`
	Role           Role             `json:"role"`
	State          State            `json:"state"`
	Address        netip.Addr       `json:"address"`
	PublicKey      keyText          `json:"public_key"`
	IPv4           netip.Addr       `json:"ipv4"`
	IPv6           netip.Addr       `json:"ipv6"`
	HasAPIKey      bool             `json:"has_api_key"`
	APIKeyRole     Role             `json:"api_key_role,omitempty"`
	Created        time.Time        `json:"created"`
	ExpiresAt      time.Time        `json:"expires_at,omitzero"`
	FirstHandshake time.Time        `json:"first_handshake,omitzero"`
	LastHandshake  time.Time        `json:"last_handshake,omitzero"`
	RevokedAt      time.Time        `json:"revoked_at,omitzero"`
	OwnKey         bool             `json:"own_key,omitempty"`
	Endpoint       netip.AddrPort   `json:"endpoint,omitzero"`
	FirstEndpoint  netip.AddrPort   `json:"first_endpoint,omitzero"`
	RxBytes        int64            `json:"rx_bytes"`
	TxBytes        int64            `json:"tx_bytes"`
	Clone          bool             `json:"clone,omitempty"`
	CloneEndpoints []netip.AddrPort `json:"clone_endpoints,omitempty"`
	CloneAt        time.Time        `json:"clone_at,omitzero"`
}

// MarshalJSON encodes the public view of p: "address" is the IPv4 address, keys are base64,
// and the preshared key and API key hash are never included.
func (p Peer) MarshalJSON() ([]byte, error) {
	return json.Marshal(publicPeer{
		Name: p.Name, Role: p.Role, State: p.State, Address: p.IPv4,
		PublicKey: keyText(p.PublicKey), IPv4: p.IPv4, IPv6: p.IPv6,
		HasAPIKey: len(p.APIKeyHash) > 0, APIKeyRole: p.APIKeyRole,
		Created: p.Created, ExpiresAt: p.ExpiresAt, FirstHandshake: p.FirstHandshake,
		LastHandshake: p.LastHandshake, RevokedAt: p.RevokedAt, OwnKey: p.OwnKey,
		Endpoint: p.Endpoint, FirstEndpoint: p.FirstEndpoint, RxBytes: p.RxBytes, TxBytes: p.TxBytes,
		Clone: p.Clone, CloneEndpoints: p.CloneEndpoints, CloneAt: p.CloneAt,
	})
}

// UnmarshalJSON decodes the public view MarshalJSON writes (PresharedKey and APIKeyHash stay
// zero: they are never in it).
func (p *Peer) UnmarshalJSON(b []byte) error {
	var v publicPeer
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*p = Peer{
		Name: v.Name, Role: v.Role, State: v.State, PublicKey: wgtypes.Key(v.PublicKey),
		IPv4: v.IPv4, IPv6: v.IPv6, APIKeyRole: v.APIKeyRole,
		Created: v.Created, ExpiresAt: v.ExpiresAt, FirstHandshake: v.FirstHandshake,
		LastHandshake: v.LastHandshake, RevokedAt: v.RevokedAt, OwnKey: v.OwnKey,
		Endpoint: v.Endpoint, FirstEndpoint: v.FirstEndpoint, RxBytes: v.RxBytes, TxBytes: v.TxBytes,
		Clone: v.Clone, CloneEndpoints: v.CloneEndpoints, CloneAt: v.CloneAt,
	}
	if !p.IPv4.IsValid() {
		p.IPv4 = v.Address
	}
	return nil
}
