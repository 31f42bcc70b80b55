package enroll

// The registry's mutations: enroll, revoke, rotate an API key, allocate a printer address,
// change the endpoint. Each one copies the roster, changes the copy, and commits it as a new
// generation (commitLocked) or changes nothing.

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

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
	if err := r.rewriteGatewayLocked(func(gb *gatewayBody) { gb.Endpoint, gb.EndpointGuessed = g.Endpoint, g.EndpointGuessed }); err != nil {
		return Gateway{}, fmt.Errorf("set endpoint: %w", err)
	}
	r.gw = g
	r.opts.Logf("enroll: endpoint is now %s", g.Endpoint)
	return g, nil
}

// SetName names the gateway in its mesh (see Gateway.Name) and saves it in gateway.json.
func (r *Registry) SetName(name string) (Gateway, error) {
	if err := ValidateName(name); err != nil {
		return Gateway{}, fmt.Errorf("set gateway name: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.closed {
		return Gateway{}, fmt.Errorf("set gateway name: %w", errClosed)
	}
	if err := r.rewriteGatewayLocked(func(gb *gatewayBody) { gb.Name = name }); err != nil {
		return Gateway{}, fmt.Errorf("set gateway name: %w", err)
	}
	r.gw.Name = name
	r.opts.Logf("enroll: gateway name is now %s", name)
	return r.gw, nil
}

// rewriteGatewayLocked rewrites gateway.json with change applied to its body (crash-safe);
// r.mu held for writing.
func (r *Registry) rewriteGatewayLocked(change func(*gatewayBody)) error {
	path := filepath.Join(r.dir, FileGateway)
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var gb gatewayBody
	if err := unseal(kindGateway, data, &gb); err != nil {
		return &CorruptError{Path: path, Reason: err.Error(), Dir: r.dir}
	}
	change(&gb)
	if data, err = seal(kindGateway, gb); err != nil {
		return err
	}
	return writeFileAtomic(r.dir, FileGateway, data, 0o600)
}

// SanitizeName makes a gateway name out of a host name: letters, digits, '-', '_' and '.'
// kept, anything else '-', cut to MaxNameLen, starting with a letter or digit. A host name
// with nothing usable gives "gateway".
func SanitizeName(host string) string {
	var b strings.Builder
	for i := 0; i < len(host) && b.Len() < MaxNameLen; i++ {
		c := host[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			b.WriteByte(c)
		case b.Len() == 0:
			// a name starts with a letter or digit
		case c == '-' || c == '_' || c == '.':
			b.WriteByte(c)
		default:
			b.WriteByte('-')
		}
	}
	if b.Len() == 0 {
		return "gateway"
	}
	return b.String()
}

// NewSecrets makes an enrollment's keys in memory: a key pair unless the device brings its
// own public key (pub), a preshared key and an API key. Pass them to Enroll in
// Request.Secrets.
func NewSecrets(pub *wgtypes.Key) (*Secrets, error) {
	s := &Secrets{}
	if pub != nil {
		if *pub == (wgtypes.Key{}) {
			return nil, fmt.Errorf("public key is all zeros: %w", ErrInvalid)
		}
		s.PublicKey = *pub
	} else {
		priv, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			return nil, err
		}
		s.PrivateKey = &priv
		s.PublicKey = priv.PublicKey()
	}
	psk, err := wgtypes.GenerateKey()
	if err != nil {
		return nil, err
	}
	s.PresharedKey = psk
	if s.APIKey, s.APIKeyHash, err = newAPIKey(); err != nil {
		return nil, err
	}
	return s, nil
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
	if req.ExpiresAt.IsZero() {
		if err := checkTTL(ttl); err != nil {
			return nil, fmt.Errorf("enroll %s: %w", req.Name, err)
		}
	}
	if req.PublicKey != nil && req.Secrets != nil {
		return nil, fmt.Errorf("enroll %s: a public key and prepared secrets both given: %w", req.Name, ErrInvalid)
	}
	// Secrets are made before the lock and live only in memory.
	sec := req.Secrets
	if sec == nil {
		var err error
		if sec, err = NewSecrets(req.PublicKey); err != nil {
			return nil, fmt.Errorf("enroll %s: %w", req.Name, err)
		}
	}
	e := &Enrollment{PrivateKey: sec.PrivateKey}
	pub, psk, apiKey, apiHash := sec.PublicKey, sec.PresharedKey, sec.APIKey, sec.APIKeyHash

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.closed {
		return nil, fmt.Errorf("enroll %s: %w", req.Name, errClosed)
	}
	now := r.clock.now()
	created := now
	if !req.ExpiresAt.IsZero() {
		ttl = req.ExpiresAt.UTC().Sub(now)
		if err := checkTTL(ttl); err != nil {
			return nil, fmt.Errorf("enroll %s: pending until %s, on this gateway's clock %s: %w", req.Name,
				req.ExpiresAt.UTC().Format(time.RFC3339), now.Format(time.RFC3339), err)
		}
	}
	if !req.Created.IsZero() {
		created = req.Created.UTC()
	}
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
	var off, next uint32
	if req.IPv4.IsValid() || req.IPv6.IsValid() {
		off, next, err = r.presetDeviceLocked(req.IPv4, req.IPv6)
	} else {
		off, next, err = r.allocDeviceLocked()
	}
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
		Created:      created,
		ExpiresAt:    now.Add(ttl),
		OwnKey:       sec.PrivateKey == nil,
	}
	peers = append(peers, p)
	r.mu.deadline[p.PublicKey] = r.clock.mono() + ttl
	if err := r.commitLocked(peers, r.mu.printers, next); err != nil {
		delete(r.mu.deadline, p.PublicKey)
		return nil, fmt.Errorf("enroll %s: %w", req.Name, err)
	}
	p = peers[len(peers)-1]
	r.opts.Logf("enroll: %s enrolled as %s (%v), pending until %s", p.Name, p.Role, p.IPv4, p.ExpiresAt.Format(time.RFC3339))
	e.Peer = r.viewLocked(&p)
	e.Config = RenderConfig(r.gw, p, e.PrivateKey, ConfigOptions{})
	e.APIKey = apiKey
	return e, nil
}

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

// presetDeviceLocked checks addresses a mesh allocated (a free device offset here, the two
// addresses of one offset) and returns the offset and the new high-water mark (raised past
// it, never lowered). r.mu held.
func (r *Registry) presetDeviceLocked(a4, a6 netip.Addr) (off, next uint32, err error) {
	off, ok := addrOffset4(r.gw.Prefix4, a4)
	if !ok || !usableDevice(r.gw.Prefix4, off) {
		return 0, 0, fmt.Errorf("address %v is not a device address of %v: %w", a4, r.gw.Prefix4, ErrInvalid)
	}
	if a6 != offsetAddr6(r.gw.Prefix6, off) {
		return 0, 0, fmt.Errorf("address %v does not pair with %v: %w", a6, a4, ErrInvalid)
	}
	if i, used := r.mu.byAddr[a4]; used {
		return 0, 0, fmt.Errorf("address %v was handed out here before (to %s): %w", a4, r.mu.peers[i].Name, ErrExists)
	}
	return off, max(r.mu.next, off+1), nil
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
	now := r.clock.now()
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

// NewAPIKey makes a new API key and its hash (what a roster keeps), in memory only.
func NewAPIKey() (string, [32]byte, error) { return newAPIKey() }

// RotateAPIKey gives the live peer named name a new API key (optionally narrowed to role;
// empty: the peer's role) and returns it once; the old key stops working.
func (r *Registry) RotateAPIKey(name string, role Role) (string, error) {
	if err := ValidateName(name); err != nil {
		return "", fmt.Errorf("rotate api key: %w", err)
	}
	key, _, err := newAPIKey()
	if err != nil {
		return "", fmt.Errorf("rotate api key %s: %w", name, err)
	}
	if err := r.SetAPIKey(name, role, key); err != nil {
		return "", err
	}
	return key, nil
}

// SetAPIKey gives the live peer named name the API key key, made beforehand with NewAPIKey
// (a mesh records its hash first), optionally narrowed to role; the old key stops working.
func (r *Registry) SetAPIKey(name string, role Role, key string) error {
	if err := ValidateName(name); err != nil {
		return fmt.Errorf("rotate api key: %w", err)
	}
	if key == "" {
		return fmt.Errorf("rotate api key %s: no key: %w", name, ErrInvalid)
	}
	hash := HashAPIKey(key)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.closed {
		return fmt.Errorf("rotate api key %s: %w", name, errClosed)
	}
	now := r.clock.now()
	peers := r.copyPeersLocked()
	r.expireLocked(peers, now)
	for i := range peers {
		p := &peers[i]
		if p.Name != name || !r.liveLocked(p, now) {
			continue
		}
		if role != "" {
			if _, err := ParseRole(string(role)); err != nil || !p.Role.Includes(role) {
				return fmt.Errorf("rotate api key %s: role %q must be one of the peer's role %s or below: %w", name, role, p.Role, ErrInvalid)
			}
		}
		p.APIKeyHash = hash[:]
		p.APIKeyRole = role
		if role == p.Role {
			p.APIKeyRole = ""
		}
		if err := r.commitLocked(peers, r.mu.printers, r.mu.next); err != nil {
			return fmt.Errorf("rotate api key %s: %w", name, err)
		}
		return nil
	}
	return fmt.Errorf("rotate api key %s: no pending or active peer of that name: %w", name, ErrNotFound)
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
