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
	now := r.clock.now()
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
