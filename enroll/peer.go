package enroll

// The roster's value types: roles, life-cycle states, peers, the gateway's own
// configuration, enrollment requests and results. They carry no behaviour beyond their own
// invariants; the Registry (enroll.go) holds and changes them.

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"slices"
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
// A pending peer whose TTL passes without a handshake becomes expired: a tombstone like a
// revoked one, off the device, its addresses never reused.
//
//	         first handshake
//	pending ─────────────────▶ active
//	   │  │                       │
//	   │  └── TTL passes ──▶ expired
//	   │                          │
//	   └──────── Revoke ──────────┴──▶ revoked
const (
	Pending State = "pending"
	Active  State = "active"
	Revoked State = "revoked"
	Expired State = "expired"
)

// Peer is one enrolled device, as the registry holds it. It is never encoded as it is: the
// state file stores a diskPeer, and people and scripts see a PeerView (see MarshalJSON).
type Peer struct {
	Name         string
	Role         Role
	State        State
	PublicKey    wgtypes.Key
	PresharedKey wgtypes.Key
	IPv4         netip.Addr
	IPv6         netip.Addr
	// APIKeyHash is the SHA-256 of the peer's API key; the key itself is never stored.
	APIKeyHash []byte
	Created    time.Time
	// ExpiresAt is when a pending peer is dropped if it never handshakes.
	ExpiresAt      time.Time
	FirstHandshake time.Time
	LastHandshake  time.Time
	RevokedAt      time.Time
	// OwnKey is true when the device brought its own key (--pubkey).
	OwnKey bool

	// APIKeyRole narrows what the API key may do; empty means the peer's Role. It never
	// exceeds Role.
	APIKeyRole Role
	// Endpoint is the source the device was last seen from, FirstEndpoint the first one.
	Endpoint      netip.AddrPort
	FirstEndpoint netip.AddrPort
	// RxBytes and TxBytes are the device's counters at the last observation.
	RxBytes int64
	TxBytes int64
	// Clone is set when the key's endpoint kept alternating between two sources: the same
	// key (the same config) is in use on two devices. CloneEndpoints are those sources.
	Clone          bool
	CloneEndpoints []netip.AddrPort
	CloneAt        time.Time

	// Home is the device's home gateway in a mesh, set by the daemon on the peers it shows
	// (View's Gateway); the registry never stores it (a registry's peers are all homed at its
	// own gateway).
	Home string
}

// Live reports whether p belongs on the device at time now: active, or pending and not
// yet past its expiry.
func (p Peer) Live(now time.Time) bool {
	switch p.State {
	case Active:
		return true
	case Pending:
		return now.Before(p.ExpiresAt)
	}
	return false
}

// StateAt is p's state at time now: a pending peer past ExpiresAt is Expired even before the
// registry has recorded it.
func (p Peer) StateAt(now time.Time) State {
	if p.State == Pending && !now.Before(p.ExpiresAt) {
		return Expired
	}
	return p.State
}

// EffectiveAPIRole is the role a request authenticated with p's API key gets.
func (p Peer) EffectiveAPIRole() Role {
	if p.APIKeyRole != "" && p.Role.Includes(p.APIKeyRole) {
		return p.APIKeyRole
	}
	return p.Role
}

// String describes p without any key material.
func (p Peer) String() string {
	return fmt.Sprintf("%s (%s, %s, %v)", p.Name, p.Role, p.State, p.IPv4)
}

// GoString redacts like String, for %#v.
func (p Peer) GoString() string { return "enroll.Peer{" + p.String() + "}" }

func (p Peer) clone() Peer {
	p.APIKeyHash = slices.Clone(p.APIKeyHash)
	p.CloneEndpoints = slices.Clone(p.CloneEndpoints)
	return p
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
	// EndpointGuessed is true when Init detected Endpoint from a LAN interface because none
	// was given: devices outside this LAN cannot reach it (see EndpointWarning).
	EndpointGuessed bool
	// Name is the gateway's name in a mesh (its raft ID). Empty in a state directory made
	// before the mesh: the daemon names it at its first start (SanitizeName of the host name)
	// and saves it (SetName).
	Name string
	// Address4 and Address6 are the gateway's own tunnel addresses when the mesh allocated
	// them (a gateway that joined). The zero value means the first host address of the
	// prefix, as a single gateway (and a mesh's first gateway) has it. Read them with Addr4
	// and Addr6, which apply that default.
	Address4 netip.Addr
	Address6 netip.Addr
}

// String describes g without its private key.
func (g Gateway) String() string {
	return fmt.Sprintf("gateway %s port %d %v %v endpoint %s", g.PublicKey(), g.ListenPort, g.Prefix4, g.Prefix6, g.Endpoint)
}

// GoString redacts like String, for %#v.
func (g Gateway) GoString() string { return "enroll.Gateway{" + g.String() + "}" }

// DefaultListenPort is the WireGuard UDP port when init is given none.
const DefaultListenPort = 51820

// InitOptions are the choices of `printgate init`; zero values take the documented defaults.
type InitOptions struct {
	Endpoint   string       // empty: a detected LAN address, with a warning
	ListenPort int          // zero: 51820
	Prefix4    netip.Prefix // zero: DefaultPrefix4
	Prefix6    netip.Prefix // zero: a random RFC 4193 ULA /64
	// Name is the gateway's mesh name (see Gateway.Name); empty: named at the first run.
	Name string
	// Addr4 and Addr6 are tunnel addresses the mesh allocated to a joining gateway, inside
	// Prefix4 and Prefix6 at one offset; zero: the first host addresses.
	Addr4, Addr6 netip.Addr
	// PrivateKey is the gateway key when it was made before the state directory (a joining
	// gateway registers its public half first); zero: Init makes one.
	PrivateKey wgtypes.Key
}

// Request asks for one enrollment.
type Request struct {
	Name string
	Role Role // empty: Viewer
	// PublicKey, when set, is the device's own key: no private key is made or shown.
	PublicKey *wgtypes.Key
	// TTL bounds how long the peer may stay pending; zero: DefaultTTL.
	TTL time.Duration
	// APIKeyRole narrows the peer's API key; empty: the peer's role. It may not exceed Role.
	APIKeyRole Role
	// Secrets, when set, are the keys made beforehand with NewSecrets (a mesh enrollment
	// records the public key and the API key's hash in the mesh first); nil: Enroll makes
	// them. PublicKey must then be nil: Secrets carries the key.
	Secrets *Secrets
	// IPv4 and IPv6, when set, are the addresses the mesh allocated: Enroll records the peer
	// at them instead of allocating (they must be free device addresses here). Zero: Enroll
	// allocates.
	IPv4, IPv6 netip.Addr
	// Created and ExpiresAt, when set, are a mesh enrollment's times as the mesh recorded
	// them: the peer is recorded with them (so every gateway shows the same), and its TTL runs
	// until ExpiresAt (TTL is then ignored). An ExpiresAt already past is refused.
	Created, ExpiresAt time.Time
}

// Secrets are an enrollment's keys, made in memory before it is recorded (NewSecrets).
type Secrets struct {
	// PrivateKey is the device's key, nil when the device brought its own.
	PrivateKey *wgtypes.Key
	PublicKey  wgtypes.Key
	// PresharedKey is mixed into the device's handshakes with its home gateway.
	PresharedKey wgtypes.Key
	// APIKey is shown once; APIKeyHash (its SHA-256) is all any roster keeps.
	APIKey     string
	APIKeyHash [32]byte
}

// Forget zeroes the private key once it is no longer needed.
func (s *Secrets) Forget() {
	if s != nil && s.PrivateKey != nil {
		*s.PrivateKey = wgtypes.Key{}
		s.PrivateKey = nil
	}
	if s != nil {
		s.APIKey = ""
	}
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

// Forget zeroes the private key and drops the config and API key once they have been shown.
// (Go strings cannot be wiped in place; dropping the last reference is all Go allows.)
func (e *Enrollment) Forget() {
	if e.PrivateKey != nil {
		*e.PrivateKey = wgtypes.Key{}
		e.PrivateKey = nil
	}
	e.Config = ""
	e.APIKey = ""
}

// PrinterAddr is a printer's pair of tunnel addresses.
type PrinterAddr struct {
	Name string     `json:"name"`
	IPv4 netip.Addr `json:"ipv4"`
	IPv6 netip.Addr `json:"ipv6"`
}

// DevicePeer is what the WireGuard device needs of one live peer; the daemon converts it to
// tunnel.Peer.
type DevicePeer struct {
	Name         string
	PublicKey    wgtypes.Key
	PresharedKey wgtypes.Key
	AllowedIPs   []netip.Prefix // the peer's /32 and /128
}

// HashAPIKey is the SHA-256 of an API key, the only form of it the roster keeps.
func HashAPIKey(key string) [32]byte { return sha256.Sum256([]byte(key)) }

// ErrExists marks a name or key that is already taken.
var ErrExists = errors.New("already exists")

// ErrNotFound marks a name with no live peer or printer.
var ErrNotFound = errors.New("not found")

// ErrUnavailable marks a write the roster cannot take now but may later: in a mesh, no
// quorum (the message says "quorum"). The web API answers it with 503.
var ErrUnavailable = errors.New("roster unavailable")
