// Package enroll owns the roster: peers, roles, keys and addresses, their pending, active and
// revoked life cycle, wg-quick config rendering, and the crash-safe state directory.
package enroll

// The package by stage:
//
//	peer.go       value types: Role, State, Peer, Gateway, Request, Enrollment
//	view.go       PeerView, the one public view of a peer (CLI, control socket, web API)
//	enroll.go     the Registry: Init, Open, commit of a generation, reads, Flush, Close
//	mutate.go     mutations: Enroll, Revoke, RotateAPIKey, AllocatePrinterAddr, SetEndpoint
//	lifecycle.go  observations from the device: first handshake, expiry, clones
//	state.go      state files: envelope, lock, load, Recover (writes: package statefile)
//	clock.go      the registry's clock: a floor kept across restarts, monotonic TTLs
//	strict.go     DecodeStrict: JSON without unknown fields, duplicate keys or trailing data
//	disk.go       the on-disk roster record (diskPeer, with secrets) and its validation
//	addr.go, config.go, validate.go, lanaddr.go: addresses, wg-quick configs, input checks

import (
	"crypto/sha256"
	"crypto/subtle"
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
	// LockWait is how long Open waits for the state directory's lock while another process
	// holds it: a CLI command that found no daemon holds it for milliseconds, a running
	// daemon for good. Zero: fail at once with an *InUseError.
	LockWait time.Duration
}

// DefaultFlushInterval spaces out writes of handshake times (SD cards wear).
const DefaultFlushInterval = 5 * time.Minute

// Registry is an open state directory: the gateway config and the roster. It holds an
// exclusive lock on the directory until Close. Its methods are safe for concurrent use.
type Registry struct {
	dir   string
	gw    Gateway
	opts  Options
	lock  *os.File
	clock *gatewayClock // G, set by startClock in OpenWith

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
		// floorSaved is the monotonic time of the last clock floor write.
		floorSaved time.Duration
	}
}

var errClosed = fmt.Errorf("registry closed: %w", net.ErrClosed)

// Init creates a new state directory (mode 0700) with a fresh gateway key.
func Init(dir string, opts InitOptions) (Gateway, error) {
	g := Gateway{ListenPort: opts.ListenPort, Prefix4: opts.Prefix4, Prefix6: opts.Prefix6,
		Name: opts.Name, Address4: opts.Addr4, Address6: opts.Addr6}
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
	if g.Name != "" {
		if err := ValidateName(g.Name); err != nil {
			return Gateway{}, fmt.Errorf("init: gateway name: %w", err)
		}
	}
	if err := checkGatewayAddrs(g.Prefix4, g.Prefix6, g.Address4, g.Address6); err != nil {
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

	key := opts.PrivateKey
	if key == (wgtypes.Key{}) {
		if key, err = wgtypes.GeneratePrivateKey(); err != nil {
			return Gateway{}, fmt.Errorf("init: gateway key: %w", err)
		}
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
	lock, err := lockDirWait(dir, opts.LockWait)
	if err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	r := &Registry{dir: dir, opts: opts, lock: lock}
	if err := r.load(); err != nil {
		unlockDir(lock)
		return nil, fmt.Errorf("open state: %w", err)
	}
	removeStaleTemps(dir)
	r.startClock()
	return r, nil
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
	// Pending expiries are written as G plus what is left on their monotonic deadlines, so
	// the file follows wall clock corrections (clock.go); drift within the slack is left be.
	g := r.clock.now()
	for i := range peers {
		if peers[i].State == Pending {
			if e := r.expiresLocked(&peers[i], g); e.Sub(peers[i].ExpiresAt).Abs() > clockSlack {
				peers[i].ExpiresAt = e
			}
		}
	}
	body := r.bodyLocked(r.mu.gen+1, peers, printers, next)
	if err := body.validate(r.gw); err != nil {
		return fmt.Errorf("refusing to write an invalid roster: %w", err)
	}
	data, err := seal(kindRoster, body)
	if err != nil {
		return err
	}
	// The floor goes first: a crash between the two then leaves expiries on an older scale
	// than the floor, which cuts a pending TTL short (re-enroll), never the other way round,
	// which would stretch it.
	if err := r.writeFloorLocked(); err != nil {
		r.opts.Logf("enroll: %v", err) // the floor is a guard; the roster write decides
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

// liveLocked is Peer.Live, with a pending peer's TTL judged on its monotonic deadline alone
// (clock.go): a wall clock set back or forward neither stretches nor cuts it. r.mu held.
func (r *Registry) liveLocked(p *Peer, now time.Time) bool {
	if p.State == Pending {
		if d, ok := r.mu.deadline[p.PublicKey]; ok {
			return r.clock.mono() < d
		}
	}
	return p.Live(now)
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

// NextDeviceOffset is the device allocation's high-water mark: no device address at this
// offset or above was ever handed out (a mesh made from this roster resumes there).
func (r *Registry) NextDeviceOffset() uint32 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.mu.next
}

// Generation is the roster generation on disk; it grows by one with every write.
func (r *Registry) Generation() uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.mu.gen
}

// Peers returns every peer, revoked ones included, sorted by name.
// Pending peers past their expiry are reported Expired.
func (r *Registry) Peers() []Peer {
	r.mu.RLock()
	defer r.mu.RUnlock()
	now := r.clock.now()
	out := make([]Peer, len(r.mu.peers))
	for i, p := range r.mu.peers {
		out[i] = r.viewLocked(&p)
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
	now := r.clock.now()
	for _, p := range r.mu.peers {
		if p.Name == name && r.liveLocked(&p, now) {
			return r.viewLocked(&p), true
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
	if !ok || !r.liveLocked(&r.mu.peers[i], r.clock.now()) {
		return Peer{}, false
	}
	return r.viewLocked(&r.mu.peers[i]), true
}

// DevicePeers is what the WireGuard device should hold: every live peer with its PSK and its
// /32 and /128, in enrollment order.
func (r *Registry) DevicePeers() []DevicePeer {
	r.mu.RLock()
	defer r.mu.RUnlock()
	now := r.clock.now()
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
	if !r.liveLocked(&p, r.clock.now()) || subtle.ConstantTimeCompare(p.APIKeyHash, h[:]) != 1 {
		return Peer{}, false
	}
	return r.viewLocked(&p), true
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
	if err := r.saveClockLocked(); err != nil {
		ferr = errors.Join(ferr, err)
	}
	uerr := unlockDir(r.lock)
	return errors.Join(ferr, uerr)
}
