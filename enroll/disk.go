package enroll

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// keyText is a key as it appears in state files: 44 characters of standard base64.
type keyText wgtypes.Key

func (k keyText) MarshalText() ([]byte, error) { return []byte(wgtypes.Key(k).String()), nil }

func (k *keyText) UnmarshalText(b []byte) error {
	if len(b) != 44 {
		return errors.New("key: want 44 base64 characters")
	}
	var raw [33]byte
	n, err := base64.StdEncoding.Strict().Decode(raw[:], b)
	if err != nil || n != 32 {
		return errors.New("key: not base64 of 32 bytes")
	}
	copy(k[:], raw[:32])
	return nil
}

// gatewayBody is gateway.json's body. PublicKey ties it to gateway.key.
type gatewayBody struct {
	ListenPort      int          `json:"listen_port"`
	Prefix4         netip.Prefix `json:"prefix4"`
	Prefix6         netip.Prefix `json:"prefix6"`
	Endpoint        string       `json:"endpoint"`
	EndpointGuessed bool         `json:"endpoint_guessed,omitempty"`
	PublicKey       keyText      `json:"public_key"`
	Created         time.Time    `json:"created"`
	// Name, Addr4 and Addr6: see Gateway (absent in a state made before the mesh).
	Name  string     `json:"name,omitempty"`
	Addr4 netip.Addr `json:"addr4,omitzero"`
	Addr6 netip.Addr `json:"addr6,omitzero"`
}

// rosterBody is roster.json's body.
type rosterBody struct {
	Generation uint64 `json:"generation"`
	// NextDevice is the high-water mark of device offsets: allocation starts here, so an
	// address is never handed out twice even if its tombstone were lost.
	NextDevice uint32        `json:"next_device"`
	Peers      []diskPeer    `json:"peers"`
	Printers   []PrinterAddr `json:"printers"`
}

// diskPeer is a Peer as stored: keys as base64 text, the PSK included (the device needs it).
type diskPeer struct {
	Name           string           `json:"name"`
	Role           Role             `json:"role"`
	State          State            `json:"state"`
	PublicKey      keyText          `json:"public_key"`
	PresharedKey   keyText          `json:"preshared_key"`
	IPv4           netip.Addr       `json:"ipv4"`
	IPv6           netip.Addr       `json:"ipv6"`
	APIKeyHash     []byte           `json:"api_key_hash,omitempty"`
	APIKeyRole     Role             `json:"api_key_role,omitempty"`
	Created        time.Time        `json:"created"`
	ExpiresAt      time.Time        `json:"expires_at,omitzero"`
	FirstHandshake time.Time        `json:"first_handshake,omitzero"`
	LastHandshake  time.Time        `json:"last_handshake,omitzero"`
	RevokedAt      time.Time        `json:"revoked_at,omitzero"`
	OwnKey         bool             `json:"own_key,omitempty"`
	Endpoint       netip.AddrPort   `json:"endpoint,omitzero"`
	FirstEndpoint  netip.AddrPort   `json:"first_endpoint,omitzero"`
	RxBytes        int64            `json:"rx_bytes,omitempty"`
	TxBytes        int64            `json:"tx_bytes,omitempty"`
	Clone          bool             `json:"clone,omitempty"`
	CloneEndpoints []netip.AddrPort `json:"clone_endpoints,omitempty"`
	CloneAt        time.Time        `json:"clone_at,omitzero"`
}

func toDisk(p Peer) diskPeer {
	return diskPeer{
		Name: p.Name, Role: p.Role, State: p.State,
		PublicKey: keyText(p.PublicKey), PresharedKey: keyText(p.PresharedKey),
		IPv4: p.IPv4, IPv6: p.IPv6, APIKeyHash: p.APIKeyHash, APIKeyRole: p.APIKeyRole,
		Created: p.Created, ExpiresAt: p.ExpiresAt, FirstHandshake: p.FirstHandshake,
		LastHandshake: p.LastHandshake, RevokedAt: p.RevokedAt, OwnKey: p.OwnKey,
		Endpoint: p.Endpoint, FirstEndpoint: p.FirstEndpoint, RxBytes: p.RxBytes, TxBytes: p.TxBytes,
		Clone: p.Clone, CloneEndpoints: p.CloneEndpoints, CloneAt: p.CloneAt,
	}
}

func (d diskPeer) peer() Peer {
	return Peer{
		Name: d.Name, Role: d.Role, State: d.State,
		PublicKey: wgtypes.Key(d.PublicKey), PresharedKey: wgtypes.Key(d.PresharedKey),
		IPv4: d.IPv4, IPv6: d.IPv6, APIKeyHash: d.APIKeyHash, APIKeyRole: d.APIKeyRole,
		Created: d.Created, ExpiresAt: d.ExpiresAt, FirstHandshake: d.FirstHandshake,
		LastHandshake: d.LastHandshake, RevokedAt: d.RevokedAt, OwnKey: d.OwnKey,
		Endpoint: d.Endpoint, FirstEndpoint: d.FirstEndpoint, RxBytes: d.RxBytes, TxBytes: d.TxBytes,
		Clone: d.Clone, CloneEndpoints: d.CloneEndpoints, CloneAt: d.CloneAt,
	}
}

// validate checks everything the rest of the gateway relies on: valid names and roles, one
// live peer per name, one peer per key, addresses inside the plan and never shared.
func (b *rosterBody) validate(g Gateway) error {
	if b.Generation == 0 {
		return errors.New("generation 0")
	}
	if b.Peers == nil || b.Printers == nil {
		return errors.New("peers or printers missing")
	}
	size := size4(g.Prefix4)
	if b.NextDevice < firstDeviceOffset || b.NextDevice > size {
		return fmt.Errorf("next device offset %d outside %d-%d", b.NextDevice, firstDeviceOffset, size)
	}
	addrs := map[netip.Addr]string{g.Addr4(): "the gateway", g.Addr6(): "the gateway"}
	claim := func(a netip.Addr, who string) error {
		if prev, dup := addrs[a]; dup {
			return fmt.Errorf("address %v held by both %s and %s", a, prev, who)
		}
		addrs[a] = who
		return nil
	}
	printerNames := map[string]bool{}
	for _, pa := range b.Printers {
		if err := ValidateName(pa.Name); err != nil {
			return fmt.Errorf("printer: %w", err)
		}
		if printerNames[pa.Name] {
			return fmt.Errorf("printer %s listed twice", pa.Name)
		}
		printerNames[pa.Name] = true
		off, ok := addrOffset4(g.Prefix4, pa.IPv4)
		if !ok || off < firstPrinterOffset || off > lastPrinterOffset || pa.IPv6 != offsetAddr6(g.Prefix6, off) {
			return fmt.Errorf("printer %s: addresses %v, %v outside the printer range", pa.Name, pa.IPv4, pa.IPv6)
		}
		if err := claim(pa.IPv4, "printer "+pa.Name); err != nil {
			return err
		}
		if err := claim(pa.IPv6, "printer "+pa.Name); err != nil {
			return err
		}
	}
	live := map[string]bool{}
	keys := map[keyText]string{keyText(g.PrivateKey.PublicKey()): "the gateway"}
	for _, p := range b.Peers {
		if err := ValidateName(p.Name); err != nil {
			return fmt.Errorf("peer: %w", err)
		}
		if !p.Role.Valid() {
			return fmt.Errorf("peer %s: role %q", p.Name, p.Role)
		}
		if p.APIKeyRole != "" && !p.Role.Includes(p.APIKeyRole) {
			return fmt.Errorf("peer %s: api key role %q exceeds role %s", p.Name, p.APIKeyRole, p.Role)
		}
		switch p.State {
		case Pending, Active:
			if live[p.Name] {
				return fmt.Errorf("two live peers named %s", p.Name)
			}
			live[p.Name] = true
		case Revoked, Expired:
		default:
			return fmt.Errorf("peer %s: state %q", p.Name, p.State)
		}
		if p.State == Pending && p.ExpiresAt.IsZero() {
			return fmt.Errorf("peer %s: pending without an expiry", p.Name)
		}
		if p.State == Revoked && p.RevokedAt.IsZero() {
			return fmt.Errorf("peer %s: revoked without a time", p.Name)
		}
		if p.Created.IsZero() {
			return fmt.Errorf("peer %s: no creation time", p.Name)
		}
		if p.PublicKey == (keyText{}) {
			return fmt.Errorf("peer %s: zero public key", p.Name)
		}
		if prev, dup := keys[p.PublicKey]; dup {
			return fmt.Errorf("peer %s: public key also held by %s", p.Name, prev)
		}
		keys[p.PublicKey] = p.Name
		if len(p.APIKeyHash) != 0 && len(p.APIKeyHash) != sha256.Size {
			return fmt.Errorf("peer %s: api key hash of %d bytes", p.Name, len(p.APIKeyHash))
		}
		off, ok := addrOffset4(g.Prefix4, p.IPv4)
		if !ok || !usableDevice(g.Prefix4, off) || off >= b.NextDevice || p.IPv6 != offsetAddr6(g.Prefix6, off) {
			return fmt.Errorf("peer %s: addresses %v, %v outside the device range", p.Name, p.IPv4, p.IPv6)
		}
		if err := claim(p.IPv4, "peer "+p.Name); err != nil {
			return err
		}
		if err := claim(p.IPv6, "peer "+p.Name); err != nil {
			return err
		}
	}
	return nil
}
