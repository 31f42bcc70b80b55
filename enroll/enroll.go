// Package enroll owns the roster: peers, roles, keys and addresses, their pending, active and
// revoked life cycle, wg-quick config rendering, and the crash-safe state directory.
package enroll

import (
	"errors"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Role is what a peer may do; see DESIGN.md "Roles".
type Role string

// The roles, from least to most.
const (
	Viewer   Role = "viewer"
	Operator Role = "operator"
	Admin    Role = "admin"
)

// State is a peer's place in its life cycle.
type State string

// Life-cycle states. A peer is pending until its first handshake, active after, and revoked
// for good (revoked peers stay in the roster as tombstones so their addresses are never reused).
const (
	Pending State = "pending"
	Active  State = "active"
	Revoked State = "revoked"
)

// Peer is one enrolled device.
type Peer struct {
	Name         string      `json:"name"`
	Role         Role        `json:"role"`
	State        State       `json:"state"`
	PublicKey    wgtypes.Key `json:"public_key"`
	PresharedKey wgtypes.Key `json:"preshared_key"`
	IPv4         netip.Addr  `json:"ipv4"`
	IPv6         netip.Addr  `json:"ipv6"`
	// APIKeyHash is the SHA-256 of the peer's API key; the key itself is never stored.
	APIKeyHash []byte    `json:"api_key_hash,omitempty"`
	Created    time.Time `json:"created"`
	// ExpiresAt is when a pending peer is dropped if it never handshakes.
	ExpiresAt      time.Time `json:"expires_at,omitzero"`
	FirstHandshake time.Time `json:"first_handshake,omitzero"`
	LastHandshake  time.Time `json:"last_handshake,omitzero"`
	RevokedAt      time.Time `json:"revoked_at,omitzero"`
	// OwnKey is true when the device brought its own key (--pubkey).
	OwnKey bool `json:"own_key,omitempty"`
}

// Gateway is the gateway's own configuration, made by Init.
type Gateway struct {
	PrivateKey wgtypes.Key
	ListenPort int
	// Prefix4 and Prefix6 are the mesh prefixes; the gateway holds the first host address of each.
	Prefix4 netip.Prefix
	Prefix6 netip.Prefix
	// Endpoint is HOST:PORT that devices dial.
	Endpoint string
}

// InitOptions are the choices of `printgate init`; zero values take the documented defaults.
type InitOptions struct {
	Endpoint   string       // empty: a detected LAN address, with a warning
	ListenPort int          // zero: 51820
	Prefix4    netip.Prefix // zero: DefaultPrefix4
	Prefix6    netip.Prefix // zero: a random RFC 4193 ULA /64
}

// Request asks for one enrollment.
type Request struct {
	Name string
	Role Role // empty: Viewer
	// PublicKey, when set, is the device's own key: no private key is made or shown.
	PublicKey *wgtypes.Key
	// TTL bounds how long the peer may stay pending; zero: DefaultTTL.
	TTL time.Duration
}

// Enrollment is the one-time result of Enroll. Its secrets are shown once and never stored.
type Enrollment struct {
	Peer Peer
	// PrivateKey is the device's key, nil when the device brought its own.
	PrivateKey *wgtypes.Key
	// Config is the wg-quick config text for the device (PrivateKey left for the owner to fill
	// in when the device brought its own key).
	Config string
	// APIKey is the peer's API key (43 URL-safe characters), shown once.
	APIKey string
}

// Registry is an open state directory: the gateway config and the roster.
type Registry struct{}

var errUnbuilt = errors.New("enroll: not built yet")

// Init creates a new state directory (mode 0700) with a fresh gateway key.
func Init(dir string, opts InitOptions) (Gateway, error) { return Gateway{}, errUnbuilt }

// Open opens the state directory. A corrupt, empty or unknown-version roster is an error that
// names the recovery: the tunnel must not come up without a trustworthy roster.
func Open(dir string) (*Registry, error) { return nil, errUnbuilt }

// Gateway returns the gateway's configuration.
func (r *Registry) Gateway() Gateway { return Gateway{} }

// Enroll adds a pending peer and returns its one-time secrets.
func (r *Registry) Enroll(req Request) (*Enrollment, error) { return nil, errUnbuilt }

// Revoke revokes a peer by name; its addresses are never handed out again.
func (r *Registry) Revoke(name string) (Peer, error) { return Peer{}, errUnbuilt }

// Peers returns every peer, revoked ones included, sorted by name.
func (r *Registry) Peers() []Peer { return nil }

// WhoIs returns the live (pending or active) peer that owns a tunnel address.
func (r *Registry) WhoIs(addr netip.Addr) (Peer, bool) { return Peer{}, false }

// Close releases the state directory.
func (r *Registry) Close() error { return errUnbuilt }
