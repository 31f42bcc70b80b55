// Package mesh is the replicated roster engine of a printgate mesh: the raft state machine
// that holds devices, gateways, printers, address allocations and join tokens, the Node that
// runs it over a caller-given listener, revocation without quorum, and the join token format.
//
// DESIGN.md's package table has no home for it: enroll/ owns one gateway's roster files and
// their life cycle, and the mesh is a different vocabulary (leaders, quorum, commands, join
// tokens) that several packages will consume (the daemon, the control socket, the relay). It
// imports neither gVisor nor printerd: it only sees a net.Listener and a dial function, so the
// daemon can hand it listeners on netstack tunnel addresses and tests hand it loopback TCP.
//
// Files follow the flow of a write:
//
//	roster.go     the immutable roster a reader sees (Roster, Device, Gateway, Printer)
//	alloc.go      the address plan and its deterministic allocation
//	command.go    the commands a write is made of, and their errors
//	fsm.go        the raft state machine: Apply, Snapshot, Restore
//	node.go       Node: raft, stores, writes through the leader, reads
//	write.go      the typed writes, one per command
//	transport.go  one listener carrying raft and forwarded calls
//	forward.go    a follower's write or read sent to the leader
//	tombstone.go  revocations applied before they commit, kept on disk
//	replica.go    the last committed roster on disk, served after a restart without quorum
//	token.go      the join token
//	join.go       the join protocol: a new gateway admitted with a token
//
// The state directory holds raft.db (raft's log and stable store), snapshots/,
// revocations.json and replica.json. meshtest/ has a loopback network with partitions for
// tests of code built on a Node.
package mesh

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Key is a WireGuard public key (Curve25519, 32 bytes). In JSON it is the 44 base64
// characters `wg pubkey` prints.
type Key [32]byte

// ParseKey parses a key as `wg pubkey` prints it. The all-zero key is refused.
func ParseKey(s string) (Key, error) {
	var k Key
	if err := k.UnmarshalText([]byte(s)); err != nil {
		return Key{}, err
	}
	return k, nil
}

// String is the key in standard base64.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// IsZero reports whether k is all zeros (no key).
func (k Key) IsZero() bool { return k == Key{} }

// MarshalText implements encoding.TextMarshaler.
func (k Key) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler: canonical base64 of 32 non-zero bytes.
func (k *Key) UnmarshalText(b []byte) error {
	if len(b) != 44 {
		return fmt.Errorf("key: want 44 base64 characters, got %d: %w", len(b), ErrInvalid)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(string(b))
	if err != nil || len(raw) != 32 {
		return fmt.Errorf("key: not canonical base64 of 32 bytes: %w", ErrInvalid)
	}
	copy(k[:], raw)
	if k.IsZero() {
		return fmt.Errorf("key is all zeros: %w", ErrInvalid)
	}
	return nil
}

// Role is what a device may do (DESIGN.md "Roles"). The mesh stores it; enforcement is the
// printer's gateway's business.
type Role string

// The roles, from least to most.
const (
	Viewer   Role = "viewer"
	Operator Role = "operator"
	Admin    Role = "admin"
)

// Valid reports whether r is one of the three roles.
func (r Role) Valid() bool { return r == Viewer || r == Operator || r == Admin }

// Includes reports whether r may do everything o may (both valid).
func (r Role) Includes(o Role) bool {
	rank := map[Role]int{Viewer: 1, Operator: 2, Admin: 3}
	return r.Valid() && o.Valid() && rank[r] >= rank[o]
}

// checkAPIKey validates an API key's hash and narrowing role against a device role.
func checkAPIKey(hash []byte, keyRole, role Role) error {
	if len(hash) != 0 && len(hash) != 32 {
		return fmt.Errorf("api key hash is %d bytes, want a SHA-256 of 32: %w", len(hash), ErrInvalid)
	}
	if keyRole != "" && !role.Includes(keyRole) {
		return fmt.Errorf("api key role %q: want a role the device's role %s includes: %w", keyRole, role, ErrInvalid)
	}
	return nil
}

// State is a device's place in the replicated life cycle: active until revoked, revoked for
// good. (Pending-until-first-handshake is the home gateway's local business.)
type State string

// Device states.
const (
	Active  State = "active"
	Revoked State = "revoked"
)

// Device is one enrolled device. A revoked device stays in the roster as a tombstone: its
// name, key and addresses are never handed out again.
type Device struct {
	Name      string     `json:"name"`
	Role      Role       `json:"role"`
	State     State      `json:"state"`
	PublicKey Key        `json:"public_key"`
	IPv4      netip.Addr `json:"ipv4"`
	IPv6      netip.Addr `json:"ipv6,omitzero"`
	// APIKeyHash is the SHA-256 of the device's API key, empty when it has none.
	APIKeyHash []byte `json:"api_key_hash,omitempty"`
	// APIKeyRole narrows what a request with the API key may do; empty: Role. Never above Role.
	APIKeyRole Role `json:"api_key_role,omitempty"`
	// Home is the gateway the device enrolled at: its config's one peer.
	Home      string    `json:"home"`
	Created   time.Time `json:"created"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	// OwnKey is true when the device brought its own key.
	OwnKey bool `json:"own_key,omitempty"`
	// ExpiresAt is when a device enrolled pending dies unless activated first; zero for a
	// device active from the start. Activated is its first handshake at its home gateway
	// (zero: none recorded). Expired marks a revocation that was the TTL running out.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	Activated time.Time `json:"activated,omitzero"`
	Expired   bool      `json:"expired,omitempty"`
}

// Pending reports whether d waits for its first handshake: enrolled with a TTL, not
// activated, not revoked. (Whether the TTL has run out is the reader's clock's business.)
func (d Device) Pending() bool {
	return d.State == Active && !d.ExpiresAt.IsZero() && d.Activated.IsZero()
}

// String describes d without key material.
func (d Device) String() string {
	return fmt.Sprintf("%s (%s, %s, %v, home %s)", d.Name, d.Role, d.State, d.IPv4, d.Home)
}

func (d Device) clone() Device {
	d.APIKeyHash = slices.Clone(d.APIKeyHash)
	return d
}

// Gateway is one member of the mesh.
type Gateway struct {
	Name      string `json:"name"`
	PublicKey Key    `json:"public_key"`
	// Endpoint is the HOST:PORT devices and other gateways dial (outside the tunnel).
	Endpoint string     `json:"endpoint"`
	IPv4     netip.Addr `json:"ipv4"`
	IPv6     netip.Addr `json:"ipv6,omitzero"`
	Added    time.Time  `json:"added"`
}

// Printer is one printer of the mesh, served by its gateway on its own tunnel address.
type Printer struct {
	Name    string     `json:"name"`
	Gateway string     `json:"gateway"`
	IPv4    netip.Addr `json:"ipv4"`
	IPv6    netip.Addr `json:"ipv6,omitzero"`
	Added   time.Time  `json:"added"`
}

// JoinToken is the replicated half of a join token: the one-time public key the inviter
// holds pending, until it is used once or expires.
type JoinToken struct {
	// PublicKey is the one-time key pair's public half; it names the token.
	PublicKey Key       `json:"public_key"`
	Inviter   string    `json:"inviter"`
	Expires   time.Time `json:"expires"`
	// Used is when the token was consumed, By by whom; zero while it is unused.
	Used time.Time `json:"used,omitzero"`
	By   string    `json:"by,omitempty"`
}

// Roster is one immutable version of the replicated roster. A Roster handed out is never
// changed: every apply builds a new one (copying only the maps it touches) and publishes it
// atomically, so readers need no lock.
type Roster struct {
	index   uint64       // the raft log index of the last command applied
	prefix4 netip.Prefix // invalid before the mesh exists
	prefix6 netip.Prefix // invalid when the mesh has no IPv6 prefix

	nextOffset uint32 // pool high-water mark: next offset to try, never goes down
	devices    map[string]Device
	byAddr     map[netip.Addr]string // device addresses, revoked ones included
	byKey      map[Key]string        // device keys, revoked ones included
	gateways   map[string]Gateway
	printers   map[string]Printer
	tokens     map[Key]JoinToken
	retired    map[netip.Addr]bool // addresses of removed gateways and printers
	removed    map[string]Key      // removed gateways' keys by name, so a retried removal succeeds

	// local holds revocations applied on this node but not yet committed; see Node.Roster.
	local map[string]bool
}

func emptyRoster() *Roster {
	return &Roster{
		devices:  map[string]Device{},
		byAddr:   map[netip.Addr]string{},
		byKey:    map[Key]string{},
		gateways: map[string]Gateway{},
		printers: map[string]Printer{},
		tokens:   map[Key]JoinToken{},
		retired:  map[netip.Addr]bool{},
		removed:  map[string]Key{},
	}
}

// Initialized reports whether the mesh exists (its first command has been applied).
func (r *Roster) Initialized() bool { return r.prefix4.IsValid() }

// Index is the raft log index of the last command applied; 0 before the mesh exists.
func (r *Roster) Index() uint64 { return r.index }

// Prefix4 is the mesh's IPv4 prefix.
func (r *Roster) Prefix4() netip.Prefix { return r.prefix4 }

// Prefix6 is the mesh's IPv6 prefix; invalid when the mesh has none.
func (r *Roster) Prefix6() netip.Prefix { return r.prefix6 }

// Device returns the device named name, revoked ones included. A device revoked on this node
// but not yet committed reads as revoked.
func (r *Roster) Device(name string) (Device, bool) {
	d, ok := r.devices[name]
	if !ok {
		return Device{}, false
	}
	return r.overlay(d), true
}

func (r *Roster) overlay(d Device) Device {
	d = d.clone()
	if d.State == Active && r.local[d.Name] {
		d.State = Revoked
	}
	return d
}

// WhoIs returns the device holding tunnel address a. ok is false for an address no device
// holds; a revoked device is returned with State Revoked, and must be served nothing.
func (r *Roster) WhoIs(a netip.Addr) (Device, bool) {
	name, ok := r.byAddr[a.Unmap()]
	if !ok {
		return Device{}, false
	}
	return r.overlay(r.devices[name]), true
}

// Devices returns every device, tombstones included, sorted by name.
func (r *Roster) Devices() []Device {
	out := make([]Device, 0, len(r.devices))
	for _, d := range r.devices {
		out = append(out, r.overlay(d))
	}
	slices.SortFunc(out, func(a, b Device) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Gateway returns the gateway named name.
func (r *Roster) Gateway(name string) (Gateway, bool) {
	g, ok := r.gateways[name]
	return g, ok
}

// Gateways returns the gateways sorted by name.
func (r *Roster) Gateways() []Gateway {
	out := make([]Gateway, 0, len(r.gateways))
	for _, g := range r.gateways {
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b Gateway) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Printers returns the printers of the whole mesh sorted by name.
func (r *Roster) Printers() []Printer {
	out := make([]Printer, 0, len(r.printers))
	for _, p := range r.printers {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Printer) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Printer returns the printer named name.
func (r *Roster) Printer(name string) (Printer, bool) {
	p, ok := r.printers[name]
	return p, ok
}

// PrinterAt returns the printer holding tunnel address a.
func (r *Roster) PrinterAt(a netip.Addr) (Printer, bool) {
	a = a.Unmap()
	for _, p := range r.printers {
		if p.IPv4 == a || p.IPv6 == a {
			return p, true
		}
	}
	return Printer{}, false
}

// Token returns the join token with one-time public key k.
func (r *Roster) Token(k Key) (JoinToken, bool) {
	t, ok := r.tokens[k]
	return t, ok
}

// HomedAt returns the names of the active devices whose home is gateway, sorted.
func (r *Roster) HomedAt(gateway string) []string {
	var out []string
	for _, d := range r.devices {
		if d.Home == gateway && r.overlay(d).State == Active {
			out = append(out, d.Name)
		}
	}
	slices.Sort(out)
	return out
}

// Equal reports whether r and o hold the same replicated roster (devices, gateways,
// printers, tokens, allocation state), ignoring Index and local revocations.
func (r *Roster) Equal(o *Roster) bool {
	a, errA := r.committed().marshal()
	b, errB := o.committed().marshal()
	if errA != nil || errB != nil {
		return false
	}
	a.Index, b.Index = 0, 0
	return mustJSON(a) == mustJSON(b)
}

// committed is r without the local overlay.
func (r *Roster) committed() *Roster {
	if len(r.local) == 0 {
		return r
	}
	c := *r
	c.local = nil
	return &c
}

var errNoMesh = errors.New("mesh not initialized")
