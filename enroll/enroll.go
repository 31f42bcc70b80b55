// Package enroll owns the roster: peers, roles, keys and addresses, their pending, active and
// revoked life cycle, wg-quick config rendering, and the crash-safe state directory.
package enroll

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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

// Options tune an open Registry; zero values take the defaults.
type Options struct {
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// Monotonic is a clock that never jumps, as time elapsed since some fixed point; nil: the
	// runtime's monotonic clock. A pending peer enrolled by this process also expires when its
	// TTL has passed on this clock, so a wall clock set back (a Pi without RTC before NTP,
	// reference/threats.md #40) cannot stretch a QR code's life.
	Monotonic func() time.Duration
	// Logf logs state changes; nil discards.
	Logf func(format string, args ...any)
	// FlushInterval is how often Observe writes handshake times and byte counters to disk
	// (state changes are written at once); zero: DefaultFlushInterval.
	FlushInterval time.Duration
	// CloneWindow and CloneFlips: a key whose endpoint returns to a previous source
	// CloneFlips times within CloneWindow is flagged as cloned. Zero: 10 minutes and 3.
	CloneWindow time.Duration
	CloneFlips  int
}

// DefaultFlushInterval spaces out writes of handshake times (SD cards wear).
const DefaultFlushInterval = 5 * time.Minute

// Registry is an open state directory: the gateway config and the roster. It holds an
// exclusive lock on the directory until Close. Its methods are safe for concurrent use.
type Registry struct {
	dir  string
	gw   Gateway
	opts Options
	lock *os.File

	mu struct {
		sync.RWMutex
		closed   bool
		gen      uint64
		next     uint32 // next device offset to try
		peers    []Peer // enrollment order, tombstones included
		printers []PrinterAddr
		byAddr   map[netip.Addr]int            // every device address ever handed out → index
		byKey    map[wgtypes.Key]int           // every device key ever enrolled → index
		byAPIKey map[[32]byte]int              // API key hash → index
		tracks   map[wgtypes.Key]*track        // clone detection, in memory only
		deadline map[wgtypes.Key]time.Duration // monotonic expiry of peers enrolled by this process
		dirty    bool                          // observations not yet on disk
		saved    time.Time                     // last write
	}
}

var errClosed = fmt.Errorf("registry closed: %w", net.ErrClosed)

// Init creates a new state directory (mode 0700) with a fresh gateway key.
func Init(dir string, opts InitOptions) (Gateway, error) {
	g := Gateway{ListenPort: opts.ListenPort, Prefix4: opts.Prefix4, Prefix6: opts.Prefix6}
	if g.ListenPort == 0 {
		g.ListenPort = DefaultListenPort
	}
	if g.ListenPort < 1 || g.ListenPort > 65535 {
		return Gateway{}, fmt.Errorf("init: listen port %d: want 1-65535: %w", g.ListenPort, ErrInvalid)
	}
	if !g.Prefix4.IsValid() {
		g.Prefix4 = DefaultPrefix4
	}
	if err := checkPrefix4(g.Prefix4); err != nil {
		return Gateway{}, fmt.Errorf("init: %w", err)
	}
	if !g.Prefix6.IsValid() {
		p, err := NewULAPrefix()
		if err != nil {
			return Gateway{}, fmt.Errorf("init: %w", err)
		}
		g.Prefix6 = p
	}
	if err := checkPrefix6(g.Prefix6); err != nil {
		return Gateway{}, fmt.Errorf("init: %w", err)
	}
	if opts.Endpoint != "" {
		ep, err := ParseEndpoint(opts.Endpoint, g.ListenPort)
		if err != nil {
			return Gateway{}, fmt.Errorf("init: %w", err)
		}
		g.Endpoint = ep
	} else {
		a, err := DetectLANAddr(g.Prefix4, g.Prefix6)
		if err != nil {
			return Gateway{}, fmt.Errorf("init: no endpoint given and %v: pass --endpoint HOST:PORT", err)
		}
		g.Endpoint = netip.AddrPortFrom(a, uint16(g.ListenPort)).String()
		g.EndpointGuessed = true
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Gateway{}, fmt.Errorf("init: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return Gateway{}, fmt.Errorf("init: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return Gateway{}, fmt.Errorf("init: %w", err)
	}
	defer unlockDir(lock)
	for _, name := range []string{FileGatewayKey, FileGateway, FileRoster, FileRosterPrev} {
		if _, err := os.Lstat(filepath.Join(dir, name)); !errors.Is(err, fs.ErrNotExist) {
			return Gateway{}, fmt.Errorf("init: state directory %s is already initialized (%s exists); refusing to overwrite the gateway key", dir, name)
		}
	}
	removeStaleTemps(dir)

	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return Gateway{}, fmt.Errorf("init: gateway key: %w", err)
	}
	g.PrivateKey = key
	if err := writeState(dir, g); err != nil {
		// Leave no half-made state behind: these files did not exist and we hold the lock.
		for _, name := range []string{FileRoster, FileGateway, FileGatewayKey} {
			os.Remove(filepath.Join(dir, name))
		}
		return Gateway{}, fmt.Errorf("init: %w", err)
	}
	return g, nil
}

// writeState writes the files of a new state directory, the roster last (its presence
// marks a finished init).
func writeState(dir string, g Gateway) error {
	if err := writeGatewayKey(dir, g.PrivateKey); err != nil {
		return err
	}
	gb, err := seal(kindGateway, gatewayBody{
		ListenPort: g.ListenPort, Prefix4: g.Prefix4, Prefix6: g.Prefix6,
		Endpoint: g.Endpoint, EndpointGuessed: g.EndpointGuessed,
		PublicKey: keyText(g.PublicKey()), Created: time.Now().UTC(),
	})
	if err != nil {
		return err
	}
	if err := writeFileAtomic(dir, FileGateway, gb, 0o600); err != nil {
		return err
	}
	rb, err := seal(kindRoster, rosterBody{Generation: 1, NextDevice: firstDeviceOffset, Peers: []diskPeer{}, Printers: []PrinterAddr{}})
	if err != nil {
		return err
	}
	return writeFileAtomic(dir, FileRoster, rb, 0o600)
}

// Open opens the state directory. A corrupt, empty or unknown-version roster is an error that
// names the recovery: the tunnel must not come up without a trustworthy roster.
func Open(dir string) (*Registry, error) { return OpenWith(dir, Options{}) }

// OpenWith is Open with options (a clock for tests, a logger, flush and clone tuning).
func OpenWith(dir string, opts Options) (*Registry, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Monotonic == nil {
		start := time.Now()
		opts.Monotonic = func() time.Duration { return time.Since(start) }
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = DefaultFlushInterval
	}
	if opts.CloneWindow <= 0 {
		opts.CloneWindow = 10 * time.Minute
	}
	if opts.CloneFlips <= 0 {
		opts.CloneFlips = 3
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("open state: %w (run `printgate init --state %s` first)", err, dir)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("open state: %s is not a directory", dir)
	}
	if _, err := os.Lstat(filepath.Join(dir, FileGatewayKey)); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open state: %s is not initialized (no %s): run `printgate init --state %s`", dir, FileGatewayKey, dir)
	}
	if err := checkPrivate(dir, fi); err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	r := &Registry{dir: dir, opts: opts, lock: lock}
	if err := r.load(); err != nil {
		unlockDir(lock)
		return nil, fmt.Errorf("open state: %w", err)
	}
	removeStaleTemps(dir)
	return r, nil
}

// load reads the gateway and the roster; the caller holds the directory lock.
func (r *Registry) load() error {
	g, err := loadGateway(r.dir)
	if err != nil {
		return err
	}
	r.gw = g
	body, err := loadRoster(r.dir, g)
	if err != nil {
		return err
	}
	r.install(body)
	r.mu.saved = r.opts.Now()
	return nil
}

func loadGateway(dir string) (Gateway, error) {
	key, err := readGatewayKey(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Gateway{}, fmt.Errorf("%s is not initialized (no %s): run `printgate init --state %s`", dir, FileGatewayKey, dir)
		}
		return Gateway{}, err
	}
	path := filepath.Join(dir, FileGateway)
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Gateway{}, &CorruptError{Path: path, Reason: "missing (init did not finish?)", Dir: dir}
		}
		return Gateway{}, fmt.Errorf("read gateway config: %w", err)
	}
	var gb gatewayBody
	if err := unseal(kindGateway, data, &gb); err != nil {
		return Gateway{}, &CorruptError{Path: path, Reason: err.Error(), Dir: dir}
	}
	g := Gateway{PrivateKey: key, ListenPort: gb.ListenPort, Prefix4: gb.Prefix4, Prefix6: gb.Prefix6,
		Endpoint: gb.Endpoint, EndpointGuessed: gb.EndpointGuessed}
	if err := checkGateway(g); err != nil {
		return Gateway{}, &CorruptError{Path: path, Reason: err.Error(), Dir: dir}
	}
	if wgtypes.Key(gb.PublicKey) != key.PublicKey() {
		return Gateway{}, &CorruptError{Path: path, Reason: "its public key does not match " + FileGatewayKey, Dir: dir}
	}
	return g, nil
}

func checkGateway(g Gateway) error {
	if g.ListenPort < 1 || g.ListenPort > 65535 {
		return fmt.Errorf("listen port %d out of range", g.ListenPort)
	}
	if err := checkPrefix4(g.Prefix4); err != nil {
		return err
	}
	if err := checkPrefix6(g.Prefix6); err != nil {
		return err
	}
	if ep, err := ParseEndpoint(g.Endpoint, g.ListenPort); err != nil || ep != g.Endpoint {
		return fmt.Errorf("endpoint %q is not canonical HOST:PORT", g.Endpoint)
	}
	return nil
}

// loadRoster reads and verifies roster.json; on failure it checks roster.prev.json so the
// error can name the recovery.
func loadRoster(dir string, g Gateway) (*rosterBody, error) {
	path := filepath.Join(dir, FileRoster)
	body, reason := readRosterFile(path, g)
	if reason == "" {
		return body, nil
	}
	ce := &CorruptError{Path: path, Reason: reason, Dir: dir}
	prevPath := filepath.Join(dir, FileRosterPrev)
	if prev, preason := readRosterFile(prevPath, g); preason == "" {
		ce.Prev, ce.PrevGeneration = prevPath, prev.Generation
	}
	return nil, ce
}

// readRosterFile returns the verified roster at path, or a reason it is not one.
func readRosterFile(path string, g Gateway) (*rosterBody, string) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, "the file is missing"
		}
		return nil, err.Error()
	}
	body, err := decodeRoster(data, g)
	if err != nil {
		return nil, err.Error()
	}
	return body, ""
}

// decodeRoster verifies, decodes and validates a roster file against the gateway.
func decodeRoster(data []byte, g Gateway) (*rosterBody, error) {
	var body rosterBody
	if err := unseal(kindRoster, data, &body); err != nil {
		return nil, err
	}
	if err := body.validate(g); err != nil {
		return nil, errReason("invalid content: " + err.Error())
	}
	return &body, nil
}

// Recover replaces a roster that fails to load with the previous generation, after a person
// has looked at both. The damaged file is kept beside it as roster.corrupt-UNIXTIME.json. It
// refuses when roster.json is fine or when the previous generation does not verify either.
// The recovered roster gets a generation past the one that was lost, so generations only grow.
func Recover(dir string) ([]Peer, error) {
	lock, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	defer unlockDir(lock)
	g, err := loadGateway(dir)
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	path := filepath.Join(dir, FileRoster)
	if _, reason := readRosterFile(path, g); reason == "" {
		return nil, fmt.Errorf("recover: %s verifies; nothing to recover", path)
	}
	prevPath := filepath.Join(dir, FileRosterPrev)
	prev, reason := readRosterFile(prevPath, g)
	if reason != "" {
		return nil, fmt.Errorf("recover: the previous generation %s is not usable either (%s): restore %s from a backup", prevPath, reason, dir)
	}
	if data, err := os.ReadFile(path); err == nil {
		aside := fmt.Sprintf("roster.corrupt-%d.json", time.Now().Unix())
		if err := writeFileAtomic(dir, aside, data, 0o600); err != nil {
			return nil, fmt.Errorf("recover: keep the damaged roster: %w", err)
		}
	}
	prev.Generation += 2
	data, err := seal(kindRoster, prev)
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	if err := writeFileAtomic(dir, FileRoster, data, 0o600); err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	peers := make([]Peer, len(prev.Peers))
	for i, dp := range prev.Peers {
		peers[i] = dp.peer()
	}
	return peers, nil
}

// install makes body the registry's state and rebuilds the indexes.
func (r *Registry) install(body *rosterBody) {
	m := &r.mu
	m.gen = body.Generation
	m.next = body.NextDevice
	m.peers = make([]Peer, len(body.Peers))
	for i, dp := range body.Peers {
		m.peers[i] = dp.peer()
	}
	m.printers = slices.Clone(body.Printers)
	r.reindexLocked()
	if m.tracks == nil {
		m.tracks = map[wgtypes.Key]*track{}
		m.deadline = map[wgtypes.Key]time.Duration{}
	}
}

// reindexLocked rebuilds the lookup maps; r.mu held for writing.
func (r *Registry) reindexLocked() {
	m := &r.mu
	m.byAddr = make(map[netip.Addr]int, 2*len(m.peers))
	m.byKey = make(map[wgtypes.Key]int, len(m.peers))
	m.byAPIKey = make(map[[32]byte]int, len(m.peers))
	for i, p := range m.peers {
		m.byAddr[p.IPv4] = i
		if p.IPv6.IsValid() {
			m.byAddr[p.IPv6] = i
		}
		m.byKey[p.PublicKey] = i
		if len(p.APIKeyHash) == sha256.Size && (p.State == Pending || p.State == Active) {
			m.byAPIKey[[32]byte(p.APIKeyHash)] = i
		}
	}
}

// bodyLocked is the roster as it would be written with generation gen; r.mu held.
func (r *Registry) bodyLocked(gen uint64, peers []Peer, printers []PrinterAddr, next uint32) *rosterBody {
	b := &rosterBody{Generation: gen, NextDevice: next, Peers: make([]diskPeer, len(peers)), Printers: printers}
	if b.Printers == nil {
		b.Printers = []PrinterAddr{}
	}
	for i, p := range peers {
		b.Peers[i] = toDisk(p)
	}
	return b
}

// commitLocked writes a new generation and, only when that worked, makes it current.
// r.mu held for writing. On error nothing changed, on disk or in memory.
func (r *Registry) commitLocked(peers []Peer, printers []PrinterAddr, next uint32) error {
	body := r.bodyLocked(r.mu.gen+1, peers, printers, next)
	if err := body.validate(r.gw); err != nil {
		return fmt.Errorf("refusing to write an invalid roster: %w", err)
	}
	data, err := seal(kindRoster, body)
	if err != nil {
		return err
	}
	if err := keepPrevious(r.dir); err != nil {
		return err
	}
	if err := writeFileAtomic(r.dir, FileRoster, data, 0o600); err != nil {
		return err
	}
	r.mu.gen = body.Generation
	r.mu.peers = peers
	r.mu.printers = printers
	r.mu.next = next
	r.mu.dirty = false
	r.mu.saved = r.opts.Now()
	r.reindexLocked()
	return nil
}

// copyPeersLocked returns a copy of the peers for a change; r.mu held.
func (r *Registry) copyPeersLocked() []Peer {
	out := make([]Peer, len(r.mu.peers), len(r.mu.peers)+1)
	for i, p := range r.mu.peers {
		out[i] = p.clone()
	}
	return out
}

// liveLocked is Peer.Live, with the monotonic deadline of peers this process enrolled.
// r.mu held.
func (r *Registry) liveLocked(p *Peer, now time.Time) bool {
	if !p.Live(now) {
		return false
	}
	if p.State == Pending {
		if d, ok := r.mu.deadline[p.PublicKey]; ok && r.opts.Monotonic() >= d {
			return false
		}
	}
	return true
}

// expireLocked marks pending peers past their expiry as expired, returning their indexes.
// r.mu held.
func (r *Registry) expireLocked(peers []Peer, now time.Time) []int {
	var out []int
	for i := range peers {
		if peers[i].State == Pending && !r.liveLocked(&peers[i], now) {
			peers[i].State = Expired
			out = append(out, i)
		}
	}
	return out
}

// Dir is the state directory.
func (r *Registry) Dir() string { return r.dir }

// Gateway returns the gateway's configuration.
func (r *Registry) Gateway() Gateway {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.gw
}

// SetEndpoint changes the HOST:PORT that configs made from now on tell devices to dial (a
// bare host takes the listen port). The empty string detects a LAN address again, as init
// does. Devices already enrolled keep the endpoint in their config: re-enroll them. The key,
// port and prefixes never change.
func (r *Registry) SetEndpoint(endpoint string) (Gateway, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.closed {
		return Gateway{}, fmt.Errorf("set endpoint: %w", errClosed)
	}
	g := r.gw
	if endpoint != "" {
		ep, err := ParseEndpoint(endpoint, g.ListenPort)
		if err != nil {
			return Gateway{}, fmt.Errorf("set endpoint: %w", err)
		}
		g.Endpoint, g.EndpointGuessed = ep, false
	} else {
		a, err := DetectLANAddr(g.Prefix4, g.Prefix6)
		if err != nil {
			return Gateway{}, fmt.Errorf("set endpoint: %v: pass HOST:PORT", err)
		}
		g.Endpoint, g.EndpointGuessed = netip.AddrPortFrom(a, uint16(g.ListenPort)).String(), true
	}
	path := filepath.Join(r.dir, FileGateway)
	data, err := os.ReadFile(path)
	if err != nil {
		return Gateway{}, fmt.Errorf("set endpoint: %w", err)
	}
	var gb gatewayBody
	if err := unseal(kindGateway, data, &gb); err != nil {
		return Gateway{}, fmt.Errorf("set endpoint: %w", &CorruptError{Path: path, Reason: err.Error(), Dir: r.dir})
	}
	gb.Endpoint, gb.EndpointGuessed = g.Endpoint, g.EndpointGuessed
	if data, err = seal(kindGateway, gb); err != nil {
		return Gateway{}, fmt.Errorf("set endpoint: %w", err)
	}
	if err := writeFileAtomic(r.dir, FileGateway, data, 0o600); err != nil {
		return Gateway{}, fmt.Errorf("set endpoint: %w", err)
	}
	r.gw = g
	r.opts.Logf("enroll: endpoint is now %s", g.Endpoint)
	return g, nil
}

// Generation is the roster generation on disk; it grows by one with every write.
func (r *Registry) Generation() uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.mu.gen
}

// newAPIKey returns 32 bytes from crypto/rand as 43 characters of unpadded base64url.
func newAPIKey() (string, [32]byte, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", [32]byte{}, err
	}
	k := base64.RawURLEncoding.EncodeToString(b[:])
	return k, HashAPIKey(k), nil
}

// HashAPIKey is the SHA-256 of an API key, the only form of it the roster keeps.
func HashAPIKey(key string) [32]byte { return sha256.Sum256([]byte(key)) }

// Enroll adds a pending peer and returns its one-time secrets.
//
// The name must be free among pending and active peers; a revoked or expired peer's name may
// be enrolled again (the tombstone stays, sorted beside the new peer). Addresses and public
// keys are never reused: a key that was ever enrolled is refused.
func (r *Registry) Enroll(req Request) (*Enrollment, error) {
	if err := ValidateName(req.Name); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	role, err := ParseRole(string(req.Role))
	if err != nil {
		return nil, fmt.Errorf("enroll %s: %w", req.Name, err)
	}
	var apiRole Role
	if req.APIKeyRole != "" {
		if apiRole, err = ParseRole(string(req.APIKeyRole)); err != nil {
			return nil, fmt.Errorf("enroll %s: api key %w", req.Name, err)
		}
		if !role.Includes(apiRole) {
			return nil, fmt.Errorf("enroll %s: an api key may narrow the role %s, not widen it to %s: %w", req.Name, role, apiRole, ErrInvalid)
		}
		if apiRole == role {
			apiRole = ""
		}
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if err := checkTTL(ttl); err != nil {
		return nil, fmt.Errorf("enroll %s: %w", req.Name, err)
	}
	if req.PublicKey != nil && *req.PublicKey == (wgtypes.Key{}) {
		return nil, fmt.Errorf("enroll %s: public key is all zeros: %w", req.Name, ErrInvalid)
	}

	// Secrets are made before the lock and live only in memory.
	e := &Enrollment{}
	var pub wgtypes.Key
	if req.PublicKey != nil {
		pub = *req.PublicKey
	} else {
		priv, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			return nil, fmt.Errorf("enroll %s: %w", req.Name, err)
		}
		e.PrivateKey = &priv
		pub = priv.PublicKey()
	}
	psk, err := wgtypes.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("enroll %s: %w", req.Name, err)
	}
	apiKey, apiHash, err := newAPIKey()
	if err != nil {
		return nil, fmt.Errorf("enroll %s: %w", req.Name, err)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.closed {
		return nil, fmt.Errorf("enroll %s: %w", req.Name, errClosed)
	}
	now := r.opts.Now().UTC()
	peers := r.copyPeersLocked()
	r.expireLocked(peers, now)
	for _, p := range peers {
		if p.Name == req.Name && r.liveLocked(&p, now) {
			return nil, fmt.Errorf("enroll %s: a %s peer of that name exists (revoke it first): %w", req.Name, p.State, ErrExists)
		}
	}
	if pub == r.gw.PublicKey() {
		return nil, fmt.Errorf("enroll %s: that is the gateway's own key: %w", req.Name, ErrInvalid)
	}
	if i, ok := r.mu.byKey[pub]; ok {
		return nil, fmt.Errorf("enroll %s: public key already enrolled as %s (%s); a key is never enrolled twice: %w",
			req.Name, r.mu.peers[i].Name, r.mu.peers[i].State, ErrExists)
	}
	off, next, err := r.allocDeviceLocked()
	if err != nil {
		return nil, fmt.Errorf("enroll %s: %w", req.Name, err)
	}
	p := Peer{
		Name:         req.Name,
		Role:         role,
		State:        Pending,
		PublicKey:    pub,
		PresharedKey: psk,
		IPv4:         offsetAddr4(r.gw.Prefix4, off),
		IPv6:         offsetAddr6(r.gw.Prefix6, off),
		APIKeyHash:   apiHash[:],
		APIKeyRole:   apiRole,
		Created:      now,
		ExpiresAt:    now.Add(ttl),
		OwnKey:       req.PublicKey != nil,
	}
	peers = append(peers, p)
	if err := r.commitLocked(peers, r.mu.printers, next); err != nil {
		return nil, fmt.Errorf("enroll %s: %w", req.Name, err)
	}
	r.mu.deadline[p.PublicKey] = r.opts.Monotonic() + ttl
	r.opts.Logf("enroll: %s enrolled as %s, pending until %s", p.Name, p.Role, p.ExpiresAt.Format(time.RFC3339))
	e.Peer = p.clone()
	e.Config = RenderConfig(r.gw, p, e.PrivateKey, ConfigOptions{})
	e.APIKey = apiKey
	return e, nil
}

// ErrExists marks a name or key that is already taken.
var ErrExists = errors.New("already exists")

// ErrNotFound marks a name with no live peer or printer.
var ErrNotFound = errors.New("not found")

// allocDeviceLocked returns the next device offset and the new high-water mark. Offsets only
// grow: an address once handed out, to a peer revoked or expired since, is never seen again.
func (r *Registry) allocDeviceLocked() (off, next uint32, err error) {
	for off = r.mu.next; off < size4(r.gw.Prefix4); off++ {
		if !usableDevice(r.gw.Prefix4, off) {
			continue
		}
		if _, used := r.mu.byAddr[offsetAddr4(r.gw.Prefix4, off)]; used {
			continue
		}
		return off, off + 1, nil
	}
	return 0, 0, fmt.Errorf("no device address left in %v (addresses are never reused; a new state directory with a wider --prefix is needed): %w", r.gw.Prefix4, errExhausted)
}

// Revoke revokes a peer by name; its addresses are never handed out again.
func (r *Registry) Revoke(name string) (Peer, error) {
	if err := ValidateName(name); err != nil {
		return Peer{}, fmt.Errorf("revoke: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.closed {
		return Peer{}, fmt.Errorf("revoke %s: %w", name, errClosed)
	}
	now := r.opts.Now().UTC()
	peers := r.copyPeersLocked()
	r.expireLocked(peers, now)
	idx := -1
	for i, p := range peers {
		if p.Name == name && r.liveLocked(&p, now) {
			idx = i
		}
	}
	if idx < 0 {
		return Peer{}, fmt.Errorf("revoke %s: no pending or active peer of that name: %w", name, ErrNotFound)
	}
	peers[idx].State = Revoked
	peers[idx].RevokedAt = now
	if err := r.commitLocked(peers, r.mu.printers, r.mu.next); err != nil {
		return Peer{}, fmt.Errorf("revoke %s: %w", name, err)
	}
	delete(r.mu.tracks, peers[idx].PublicKey)
	r.opts.Logf("enroll: %s revoked", name)
	return peers[idx].clone(), nil
}

// Peers returns every peer, revoked ones included, sorted by name.
// Pending peers past their expiry are reported Expired.
func (r *Registry) Peers() []Peer {
	r.mu.RLock()
	defer r.mu.RUnlock()
	now := r.opts.Now()
	out := make([]Peer, len(r.mu.peers))
	for i, p := range r.mu.peers {
		out[i] = p.clone()
		if p.State == Pending && !r.liveLocked(&p, now) {
			out[i].State = Expired
		}
	}
	sortPeers(out)
	return out
}

func sortPeers(ps []Peer) {
	slices.SortStableFunc(ps, func(a, b Peer) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return a.Created.Compare(b.Created)
	})
}

// Peer returns the live peer named name.
func (r *Registry) Peer(name string) (Peer, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	now := r.opts.Now()
	for _, p := range r.mu.peers {
		if p.Name == name && r.liveLocked(&p, now) {
			return p.clone(), true
		}
	}
	return Peer{}, false
}

// WhoIs returns the live (pending or active) peer that owns a tunnel address.
func (r *Registry) WhoIs(addr netip.Addr) (Peer, bool) {
	addr = addr.Unmap().WithZone("")
	r.mu.RLock()
	defer r.mu.RUnlock()
	i, ok := r.mu.byAddr[addr]
	if !ok || !r.liveLocked(&r.mu.peers[i], r.opts.Now()) {
		return Peer{}, false
	}
	return r.mu.peers[i].clone(), true
}

// DevicePeers is what the WireGuard device should hold: every live peer with its PSK and its
// /32 and /128, in enrollment order.
func (r *Registry) DevicePeers() []DevicePeer {
	r.mu.RLock()
	defer r.mu.RUnlock()
	now := r.opts.Now()
	var out []DevicePeer
	for _, p := range r.mu.peers {
		if !r.liveLocked(&p, now) {
			continue
		}
		allowed := []netip.Prefix{netip.PrefixFrom(p.IPv4, 32)}
		if p.IPv6.IsValid() {
			allowed = append(allowed, netip.PrefixFrom(p.IPv6, 128))
		}
		out = append(out, DevicePeer{Name: p.Name, PublicKey: p.PublicKey, PresharedKey: p.PresharedKey, AllowedIPs: allowed})
	}
	return out
}

// CheckAPIKey reports whether key is the API key of the live peer named peerName. The hash
// comparison runs in constant time.
func (r *Registry) CheckAPIKey(peerName, key string) bool {
	h := HashAPIKey(key)
	p, ok := r.Peer(peerName)
	if !ok || len(p.APIKeyHash) != len(h) {
		return false
	}
	return subtle.ConstantTimeCompare(p.APIKeyHash, h[:]) == 1
}

// APIKeyPeer returns the live peer whose API key is key. The HTTP layer must still check
// that it is the same peer the request came from (a key from another peer is refused).
func (r *Registry) APIKeyPeer(key string) (Peer, bool) {
	h := HashAPIKey(key)
	r.mu.RLock()
	defer r.mu.RUnlock()
	i, ok := r.mu.byAPIKey[h]
	if !ok {
		return Peer{}, false
	}
	p := r.mu.peers[i]
	if !r.liveLocked(&p, r.opts.Now()) || subtle.ConstantTimeCompare(p.APIKeyHash, h[:]) != 1 {
		return Peer{}, false
	}
	return p.clone(), true
}

// RotateAPIKey gives the live peer named name a new API key (optionally narrowed to role;
// empty: the peer's role) and returns it once; the old key stops working.
func (r *Registry) RotateAPIKey(name string, role Role) (string, error) {
	if err := ValidateName(name); err != nil {
		return "", fmt.Errorf("rotate api key: %w", err)
	}
	key, hash, err := newAPIKey()
	if err != nil {
		return "", fmt.Errorf("rotate api key %s: %w", name, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.closed {
		return "", fmt.Errorf("rotate api key %s: %w", name, errClosed)
	}
	now := r.opts.Now().UTC()
	peers := r.copyPeersLocked()
	r.expireLocked(peers, now)
	for i := range peers {
		p := &peers[i]
		if p.Name != name || !r.liveLocked(p, now) {
			continue
		}
		if role != "" {
			if _, err := ParseRole(string(role)); err != nil || !p.Role.Includes(role) {
				return "", fmt.Errorf("rotate api key %s: role %q must be one of the peer's role %s or below: %w", name, role, p.Role, ErrInvalid)
			}
		}
		p.APIKeyHash = hash[:]
		p.APIKeyRole = role
		if role == p.Role {
			p.APIKeyRole = ""
		}
		if err := r.commitLocked(peers, r.mu.printers, r.mu.next); err != nil {
			return "", fmt.Errorf("rotate api key %s: %w", name, err)
		}
		return key, nil
	}
	return "", fmt.Errorf("rotate api key %s: no pending or active peer of that name: %w", name, ErrNotFound)
}

// AllocatePrinterAddr returns the tunnel addresses of the printer named name, allocating the
// next free pair (offsets 11 to 50) the first time a name is seen. A printer keeps its
// addresses for good, across restarts and whatever order printers are named in later.
func (r *Registry) AllocatePrinterAddr(name string) (PrinterAddr, error) {
	if err := ValidateName(name); err != nil {
		return PrinterAddr{}, fmt.Errorf("printer address: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.closed {
		return PrinterAddr{}, fmt.Errorf("printer address %s: %w", name, errClosed)
	}
	for _, pa := range r.mu.printers {
		if pa.Name == name {
			return pa, nil
		}
	}
	off := uint32(firstPrinterOffset)
	for _, pa := range r.mu.printers {
		if o, _ := addrOffset4(r.gw.Prefix4, pa.IPv4); o >= off {
			off = o + 1
		}
	}
	if off > lastPrinterOffset {
		return PrinterAddr{}, fmt.Errorf("printer address %s: all %d printer addresses are taken: %w", name, lastPrinterOffset-firstPrinterOffset+1, errExhausted)
	}
	pa := PrinterAddr{Name: name, IPv4: offsetAddr4(r.gw.Prefix4, off), IPv6: offsetAddr6(r.gw.Prefix6, off)}
	printers := append(slices.Clone(r.mu.printers), pa)
	if err := r.commitLocked(r.copyPeersLocked(), printers, r.mu.next); err != nil {
		return PrinterAddr{}, fmt.Errorf("printer address %s: %w", name, err)
	}
	return pa, nil
}

// PrinterAddrs returns every printer's addresses, sorted by name.
func (r *Registry) PrinterAddrs() []PrinterAddr {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := slices.Clone(r.mu.printers)
	slices.SortFunc(out, func(a, b PrinterAddr) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Snapshot is an immutable, versioned copy of the roster: what a farm hub would sign and
// ship to its nodes. Generation grows with every change.
type Snapshot struct {
	Generation uint64
	Peers      []Peer // enrollment order, tombstones included
	Printers   []PrinterAddr
}

// Snapshot returns a copy of the roster that later changes do not touch.
func (r *Registry) Snapshot() Snapshot {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s := Snapshot{Generation: r.mu.gen, Peers: make([]Peer, len(r.mu.peers)), Printers: slices.Clone(r.mu.printers)}
	for i, p := range r.mu.peers {
		s.Peers[i] = p.clone()
	}
	return s
}

// WhoIs looks addr up in the snapshot, as Registry.WhoIs does live.
func (s Snapshot) WhoIs(addr netip.Addr, now time.Time) (Peer, bool) {
	addr = addr.Unmap().WithZone("")
	for _, p := range s.Peers {
		if (p.IPv4 == addr || p.IPv6 == addr) && p.Live(now) {
			return p.clone(), true
		}
	}
	return Peer{}, false
}

// Flush writes observed handshake times and counters now if any are pending.
func (r *Registry) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.closed {
		return errClosed
	}
	return r.flushLocked()
}

func (r *Registry) flushLocked() error {
	if !r.mu.dirty {
		return nil
	}
	if err := r.commitLocked(r.copyPeersLocked(), r.mu.printers, r.mu.next); err != nil {
		return fmt.Errorf("flush roster: %w", err)
	}
	return nil
}

// Close writes pending observations and releases the state directory. A second Close
// returns an error wrapping net.ErrClosed.
func (r *Registry) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.closed {
		return errClosed
	}
	r.mu.closed = true
	ferr := r.flushLocked()
	uerr := unlockDir(r.lock)
	return errors.Join(ferr, uerr)
}
