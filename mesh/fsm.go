package mesh

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// FSM is the roster as raft's replicated state machine. Apply is deterministic: it reads
// nothing but the roster and the command (time included), so every replica that applies the
// same log holds the same roster. After every apply the new Roster is published atomically;
// Roster never blocks on Apply.
type FSM struct {
	cur atomic.Pointer[Roster]

	// changed is closed and replaced on every publish, for waiters on an index.
	changed struct {
		sync.Mutex
		ch chan struct{}
	}
	// onPublish, when set (by the Node, before raft starts), runs after every publish.
	onPublish func()
}

var _ raft.FSM = (*FSM)(nil)

// NewFSM returns the state machine of an empty mesh.
func NewFSM() *FSM {
	f := &FSM{}
	f.cur.Store(emptyRoster())
	f.changed.ch = make(chan struct{})
	return f
}

// Roster returns the last applied roster. It never changes; the next apply publishes a new one.
func (f *FSM) Roster() *Roster { return f.cur.Load() }

func (f *FSM) publish(r *Roster) {
	f.cur.Store(r)
	f.changed.Lock()
	close(f.changed.ch)
	f.changed.ch = make(chan struct{})
	f.changed.Unlock()
	if f.onPublish != nil {
		f.onPublish()
	}
}

// next returns a channel closed at the next publish.
func (f *FSM) next() <-chan struct{} {
	f.changed.Lock()
	defer f.changed.Unlock()
	return f.changed.ch
}

// Apply applies one committed log entry and returns an applyResult.
func (f *FSM) Apply(l *raft.Log) any {
	cur := f.cur.Load()
	var c Command
	dec := json.NewDecoder(bytes.NewReader(l.Data))
	dec.DisallowUnknownFields()
	var next *Roster
	var res applyResult
	if err := dec.Decode(&c); err != nil {
		res.err = fmt.Errorf("decode command: %v: %w", err, ErrInvalid)
	} else {
		next, res.Result, res.err = cur.apply(&c)
	}
	if next == nil {
		next = cur.shallow()
	}
	next.index = l.Index
	f.publish(next)
	return res
}

// shallow copies r's header; the maps stay shared until a mutation takes its own copy.
func (r *Roster) shallow() *Roster {
	c := *r
	c.local = nil
	return &c
}

func (r *Roster) ownDevices() {
	r.devices = maps.Clone(r.devices)
	r.byAddr = maps.Clone(r.byAddr)
	r.byKey = maps.Clone(r.byKey)
}

// apply runs one command against r. On success it returns the new roster; on failure r is
// untouched and the returned roster is nil.
func (r *Roster) apply(c *Command) (*Roster, Result, error) {
	n := 0
	for _, set := range []bool{c.Init != nil, c.Enroll != nil, c.Revoke != nil, c.SetRole != nil, c.SetAPIKey != nil,
		c.AddGateway != nil, c.RemoveGateway != nil, c.AddPrinter != nil, c.AddToken != nil, c.ConsumeToken != nil,
		c.Activate != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, Result{}, fmt.Errorf("command has %d operations, want 1: %w", n, ErrInvalid)
	}
	if c.Init == nil && !r.Initialized() {
		return nil, Result{}, fmt.Errorf("%s: %w", c.op(), ErrNoMesh)
	}
	var (
		next *Roster
		res  Result
		err  error
	)
	switch {
	case c.Init != nil:
		next, res, err = r.applyInit(c)
	case c.Enroll != nil:
		next, res, err = r.applyEnroll(c)
	case c.Revoke != nil:
		next, res, err = r.applyRevoke(c)
	case c.SetRole != nil:
		next, res, err = r.applySetRole(c)
	case c.SetAPIKey != nil:
		next, res, err = r.applySetAPIKey(c)
	case c.AddGateway != nil:
		next, res, err = r.applyAddGateway(c.AddGateway, c)
	case c.RemoveGateway != nil:
		next, res, err = r.applyRemoveGateway(c)
	case c.AddPrinter != nil:
		next, res, err = r.applyAddPrinter(c)
	case c.AddToken != nil:
		next, res, err = r.applyAddToken(c)
	case c.ConsumeToken != nil:
		next, res, err = r.applyConsumeToken(c)
	case c.Activate != nil:
		next, res, err = r.applyActivate(c)
	}
	if err != nil {
		return nil, Result{}, fmt.Errorf("%s: %w", c.op(), err)
	}
	return next, res, nil
}

func (r *Roster) applyInit(c *Command) (*Roster, Result, error) {
	if r.Initialized() {
		if g, ok := r.gateways[c.Init.Gateway.Name]; ok && g.PublicKey == c.Init.Gateway.PublicKey &&
			r.prefix4 == c.Init.Prefix4 && r.prefix6 == c.Init.Prefix6 {
			return r.shallow(), Result{Gateway: &g}, nil // the same init, retried
		}
		return nil, Result{}, fmt.Errorf("mesh already initialized with prefix %v: %w", r.prefix4, ErrExists)
	}
	if err := checkPrefixes(c.Init.Prefix4, c.Init.Prefix6); err != nil {
		return nil, Result{}, err
	}
	n := r.shallow()
	n.prefix4, n.prefix6 = c.Init.Prefix4, c.Init.Prefix6
	n.nextOffset = firstPoolOffset
	n, res, err := n.applyAddGateway(&c.Init.Gateway, c)
	if err != nil || len(c.Init.Devices) == 0 && len(c.Init.Printers) == 0 && c.Init.NextOffset == 0 {
		return n, res, err
	}
	if err := n.importRoster(c.Init, *res.Gateway); err != nil {
		return nil, Result{}, fmt.Errorf("upgrade: %w", err)
	}
	return n, res, nil
}

// importRoster adds a single gateway's devices and printers to the new roster n (owned by
// the caller), at the addresses they hold.
func (n *Roster) importRoster(init *InitCmd, gw Gateway) error {
	n.ownDevices()
	n.printers = maps.Clone(n.printers)
	mark := max(init.NextOffset, firstPoolOffset)
	if mark > n.size() {
		return fmt.Errorf("next offset %d outside the prefix %v: %w", mark, n.prefix4, ErrInvalid)
	}
	// place checks that a4/a6 are the two addresses of one free offset and returns it.
	place := func(who string, a4, a6 netip.Addr) (uint32, error) {
		off, ok := n.offsetOf(a4)
		if !ok || !n.usable(off) {
			return 0, fmt.Errorf("%s: address %v is not a usable address of %v: %w", who, a4, n.prefix4, ErrInvalid)
		}
		if want4, want6 := n.addrs(off); want4 != a4 || want6 != a6 {
			return 0, fmt.Errorf("%s: addresses %v and %v do not pair as the plan does (want %v): %w", who, a4, a6, want6, ErrInvalid)
		}
		if n.taken(off) {
			return 0, fmt.Errorf("%s: address %v is held twice: %w", who, a4, ErrExists)
		}
		return off, nil
	}
	for _, d := range init.Devices {
		who := "device " + d.Name
		if err := validName("device", d.Name); err != nil {
			return err
		}
		switch {
		case !d.Role.Valid():
			return fmt.Errorf("%s: role %q: %w", who, d.Role, ErrInvalid)
		case d.State != Active && d.State != Revoked:
			return fmt.Errorf("%s: state %q, want active or revoked: %w", who, d.State, ErrInvalid)
		case d.PublicKey.IsZero() || d.PublicKey == gw.PublicKey:
			return fmt.Errorf("%s: no public key of its own: %w", who, ErrInvalid)
		}
		if err := checkAPIKey(d.APIKeyHash, d.APIKeyRole, d.Role); err != nil {
			return fmt.Errorf("%s: %w", who, err)
		}
		if _, dup := n.devices[d.Name]; dup {
			return fmt.Errorf("%s twice: %w", who, ErrExists)
		}
		if holder, dup := n.byKey[d.PublicKey]; dup {
			return fmt.Errorf("%s: key held by %s too: %w", who, holder, ErrExists)
		}
		off, err := place(who, d.IPv4, d.IPv6)
		if err != nil {
			return err
		}
		if off < firstPoolOffset {
			return fmt.Errorf("%s: address %v is below the device range: %w", who, d.IPv4, ErrInvalid)
		}
		d = d.clone()
		d.Home = gw.Name
		n.putDevice(d)
		mark = max(mark, off+1)
	}
	for _, p := range init.Printers {
		who := "printer " + p.Name
		if err := validName("printer", p.Name); err != nil {
			return err
		}
		if _, dup := n.printers[p.Name]; dup {
			return fmt.Errorf("%s twice: %w", who, ErrExists)
		}
		off, err := place(who, p.IPv4, p.IPv6)
		if err != nil {
			return err
		}
		if (off < firstPrinterOffset || off > lastPrinterOffset) && off < firstPoolOffset {
			return fmt.Errorf("%s: address %v is outside the printer range: %w", who, p.IPv4, ErrInvalid)
		}
		p.Gateway = gw.Name
		n.printers[p.Name] = p
		if off >= firstPoolOffset {
			mark = max(mark, off+1)
		}
	}
	n.nextOffset = mark
	return nil
}

// offsetOf is a's offset in the IPv4 prefix, ok false outside it.
func (r *Roster) offsetOf(a netip.Addr) (uint32, bool) {
	if !a.Is4() || !r.prefix4.Contains(a) {
		return 0, false
	}
	x, y := r.prefix4.Addr().As4(), a.As4()
	return (uint32(y[0])<<24 | uint32(y[1])<<16 | uint32(y[2])<<8 | uint32(y[3])) -
		(uint32(x[0])<<24 | uint32(x[1])<<16 | uint32(x[2])<<8 | uint32(x[3])), true
}

func (r *Roster) applyEnroll(c *Command) (*Roster, Result, error) {
	e := c.Enroll
	if err := validName("device", e.Name); err != nil {
		return nil, Result{}, err
	}
	if !e.Role.Valid() {
		return nil, Result{}, fmt.Errorf("role %q: want viewer, operator or admin: %w", e.Role, ErrInvalid)
	}
	if e.PublicKey.IsZero() {
		return nil, Result{}, fmt.Errorf("no public key: %w", ErrInvalid)
	}
	if err := checkAPIKey(e.APIKeyHash, e.APIKeyRole, e.Role); err != nil {
		return nil, Result{}, err
	}
	if _, ok := r.gateways[e.Home]; !ok {
		return nil, Result{}, fmt.Errorf("home gateway %q is not in the mesh: %w", e.Home, ErrNotFound)
	}
	if d, ok := r.devices[e.Name]; ok {
		if d.State == Active && d.PublicKey == e.PublicKey && d.Role == e.Role && d.Home == e.Home && bytes.Equal(d.APIKeyHash, e.APIKeyHash) && d.APIKeyRole == e.APIKeyRole {
			// The same enrollment, retried after an unclear outcome: the same answer.
			d = d.clone()
			return r.shallow(), Result{Device: &d}, nil
		}
		if d.State == Revoked {
			return nil, Result{}, fmt.Errorf("name %s was revoked and is never reused: %w", e.Name, ErrRevoked)
		}
		return nil, Result{}, fmt.Errorf("name %s is enrolled already: %w", e.Name, ErrExists)
	}
	if holder, ok := r.byKey[e.PublicKey]; ok {
		if r.devices[holder].State == Revoked {
			return nil, Result{}, fmt.Errorf("public key was revoked (device %s) and never comes back: %w", holder, ErrRevoked)
		}
		return nil, Result{}, fmt.Errorf("public key is enrolled already as %s: %w", holder, ErrExists)
	}
	for _, g := range r.gateways {
		if g.PublicKey == e.PublicKey {
			return nil, Result{}, fmt.Errorf("public key is gateway %s's: %w", g.Name, ErrExists)
		}
	}
	off, mark, err := r.allocPool()
	if err != nil {
		return nil, Result{}, err
	}
	n := r.shallow()
	n.ownDevices()
	n.nextOffset = mark
	d := Device{Name: e.Name, Role: e.Role, State: Active, PublicKey: e.PublicKey,
		APIKeyHash: slices.Clone(e.APIKeyHash), APIKeyRole: e.APIKeyRole, Home: e.Home, Created: c.At,
		OwnKey: e.OwnKey, ExpiresAt: e.ExpiresAt}
	d.IPv4, d.IPv6 = r.addrs(off)
	n.putDevice(d)
	return n, Result{Device: &d}, nil
}

func (n *Roster) putDevice(d Device) {
	n.devices[d.Name] = d
	n.byKey[d.PublicKey] = d.Name
	n.byAddr[d.IPv4] = d.Name
	if d.IPv6.IsValid() {
		n.byAddr[d.IPv6] = d.Name
	}
}

func (r *Roster) applyRevoke(c *Command) (*Roster, Result, error) {
	d, ok := r.devices[c.Revoke.Name]
	if !ok {
		return nil, Result{}, fmt.Errorf("no device named %s: %w", c.Revoke.Name, ErrNotFound)
	}
	if !c.Revoke.PublicKey.IsZero() && c.Revoke.PublicKey != d.PublicKey {
		return nil, Result{}, fmt.Errorf("device %s holds another key than the one revoked: %w", d.Name, ErrNotFound)
	}
	if d.State == Revoked {
		// Idempotent: a revocation retried after it committed changes nothing.
		return r.shallow(), Result{Device: &d}, nil
	}
	n := r.shallow()
	n.ownDevices()
	d = d.clone()
	d.Expired = c.Revoke.Expired && d.Pending()
	d.State, d.RevokedAt = Revoked, c.At
	n.putDevice(d)
	return n, Result{Device: &d}, nil
}

func (r *Roster) applyActivate(c *Command) (*Roster, Result, error) {
	a := c.Activate
	d, ok := r.devices[a.Name]
	if !ok || a.PublicKey != d.PublicKey {
		return nil, Result{}, fmt.Errorf("no device named %s with that key: %w", a.Name, ErrNotFound)
	}
	if d.State == Revoked {
		return nil, Result{}, fmt.Errorf("device %s is revoked: %w", d.Name, ErrRevoked)
	}
	if !d.Pending() {
		// Active already (activated before, or enrolled active): the same answer.
		d = d.clone()
		return r.shallow(), Result{Device: &d}, nil
	}
	n := r.shallow()
	n.ownDevices()
	d = d.clone()
	d.Activated = a.At
	if d.Activated.IsZero() {
		d.Activated = c.At
	}
	n.putDevice(d)
	return n, Result{Device: &d}, nil
}

func (r *Roster) applySetRole(c *Command) (*Roster, Result, error) {
	d, ok := r.devices[c.SetRole.Name]
	if !ok {
		return nil, Result{}, fmt.Errorf("no device named %s: %w", c.SetRole.Name, ErrNotFound)
	}
	if d.State == Revoked {
		return nil, Result{}, fmt.Errorf("device %s is revoked: %w", d.Name, ErrRevoked)
	}
	if !c.SetRole.Role.Valid() {
		return nil, Result{}, fmt.Errorf("role %q: want viewer, operator or admin: %w", c.SetRole.Role, ErrInvalid)
	}
	n := r.shallow()
	n.ownDevices()
	d = d.clone()
	d.Role = c.SetRole.Role
	if d.APIKeyRole != "" && !d.Role.Includes(d.APIKeyRole) {
		d.APIKeyRole = d.Role // a key never does more than its device
	}
	n.putDevice(d)
	return n, Result{Device: &d}, nil
}

func (r *Roster) applySetAPIKey(c *Command) (*Roster, Result, error) {
	s := c.SetAPIKey
	d, ok := r.devices[s.Name]
	if !ok {
		return nil, Result{}, fmt.Errorf("no device named %s: %w", s.Name, ErrNotFound)
	}
	if d.State == Revoked {
		return nil, Result{}, fmt.Errorf("device %s is revoked: %w", d.Name, ErrRevoked)
	}
	if len(s.APIKeyHash) == 0 {
		return nil, Result{}, fmt.Errorf("no api key hash: %w", ErrInvalid)
	}
	if err := checkAPIKey(s.APIKeyHash, s.APIKeyRole, d.Role); err != nil {
		return nil, Result{}, err
	}
	n := r.shallow()
	n.ownDevices()
	d = d.clone()
	d.APIKeyHash, d.APIKeyRole = slices.Clone(s.APIKeyHash), s.APIKeyRole
	n.putDevice(d)
	return n, Result{Device: &d}, nil
}

func (r *Roster) applyAddGateway(g *AddGatewayCmd, c *Command) (*Roster, Result, error) {
	if err := validName("gateway", g.Name); err != nil {
		return nil, Result{}, err
	}
	if g.PublicKey.IsZero() {
		return nil, Result{}, fmt.Errorf("no public key: %w", ErrInvalid)
	}
	if g.Endpoint == "" {
		return nil, Result{}, fmt.Errorf("no endpoint: %w", ErrInvalid)
	}
	if old, ok := r.gateways[g.Name]; ok {
		if old.PublicKey == g.PublicKey && old.Endpoint == g.Endpoint {
			return r.shallow(), Result{Gateway: &old}, nil
		}
		if old.PublicKey == g.PublicKey { // the gateway moved: its new endpoint, nothing else
			n := r.shallow()
			n.gateways = maps.Clone(r.gateways)
			old.Endpoint = g.Endpoint
			n.gateways[old.Name] = old
			return n, Result{Gateway: &old}, nil
		}
		return nil, Result{}, fmt.Errorf("gateway name %s is taken by another key: %w", g.Name, ErrExists)
	}
	for _, o := range r.gateways {
		if o.PublicKey == g.PublicKey {
			return nil, Result{}, fmt.Errorf("public key is gateway %s's already: %w", o.Name, ErrExists)
		}
	}
	if holder, ok := r.byKey[g.PublicKey]; ok {
		return nil, Result{}, fmt.Errorf("public key is device %s's: %w", holder, ErrExists)
	}
	off, mark, err := r.allocRange(firstGatewayOffset, lastGatewayOffset)
	if err != nil {
		return nil, Result{}, err
	}
	n := r.shallow()
	n.gateways = maps.Clone(r.gateways)
	n.nextOffset = mark
	if _, ok := r.removed[g.Name]; ok {
		n.removed = maps.Clone(r.removed)
		delete(n.removed, g.Name)
	}
	gw := Gateway{Name: g.Name, PublicKey: g.PublicKey, Endpoint: g.Endpoint, Added: c.At}
	gw.IPv4, gw.IPv6 = r.addrs(off)
	n.gateways[gw.Name] = gw
	return n, Result{Gateway: &gw}, nil
}

func (r *Roster) applyRemoveGateway(c *Command) (*Roster, Result, error) {
	g, ok := r.gateways[c.RemoveGateway.Name]
	if !ok {
		if _, gone := r.removed[c.RemoveGateway.Name]; gone {
			return r.shallow(), Result{}, nil // removed before: a retried removal
		}
		return nil, Result{}, fmt.Errorf("no gateway named %s: %w", c.RemoveGateway.Name, ErrNotFound)
	}
	if homed := r.HomedAt(g.Name); len(homed) > 0 {
		return nil, Result{}, fmt.Errorf("%d device(s) homed on %s: %s (revoke or re-enroll them elsewhere first): %w",
			len(homed), g.Name, strings.Join(homed, ", "), ErrHomed)
	}
	if len(r.gateways) == 1 {
		return nil, Result{}, fmt.Errorf("%s is the last gateway of the mesh: %w", g.Name, ErrInvalid)
	}
	n := r.shallow()
	n.gateways = maps.Clone(r.gateways)
	n.printers = maps.Clone(r.printers)
	n.retired = maps.Clone(r.retired)
	retire := func(a4, a6 netip.Addr) {
		n.retired[a4] = true
		if a6.IsValid() {
			n.retired[a6] = true
		}
	}
	delete(n.gateways, g.Name)
	n.removed = maps.Clone(r.removed)
	n.removed[g.Name] = g.PublicKey
	retire(g.IPv4, g.IPv6)
	for name, p := range r.printers {
		if p.Gateway == g.Name {
			delete(n.printers, name)
			retire(p.IPv4, p.IPv6)
		}
	}
	return n, Result{Gateway: &g}, nil
}

func (r *Roster) applyAddPrinter(c *Command) (*Roster, Result, error) {
	p := c.AddPrinter
	if err := validName("printer", p.Name); err != nil {
		return nil, Result{}, err
	}
	if _, ok := r.gateways[p.Gateway]; !ok {
		return nil, Result{}, fmt.Errorf("gateway %q is not in the mesh: %w", p.Gateway, ErrNotFound)
	}
	if old, ok := r.printers[p.Name]; ok {
		if old.Gateway == p.Gateway {
			return r.shallow(), Result{Printer: &old}, nil
		}
		return nil, Result{}, fmt.Errorf("printer name %s is already used on gateway %s (printer names are unique across the mesh): %w",
			p.Name, old.Gateway, ErrExists)
	}
	off, mark, err := r.allocRange(firstPrinterOffset, lastPrinterOffset)
	if err != nil {
		return nil, Result{}, err
	}
	n := r.shallow()
	n.printers = maps.Clone(r.printers)
	n.nextOffset = mark
	pr := Printer{Name: p.Name, Gateway: p.Gateway, Added: c.At}
	pr.IPv4, pr.IPv6 = r.addrs(off)
	n.printers[pr.Name] = pr
	return n, Result{Printer: &pr}, nil
}

func (r *Roster) applyAddToken(c *Command) (*Roster, Result, error) {
	t := c.AddToken
	if t.PublicKey.IsZero() {
		return nil, Result{}, fmt.Errorf("no public key: %w", ErrInvalid)
	}
	if _, ok := r.gateways[t.Inviter]; !ok {
		return nil, Result{}, fmt.Errorf("inviter %q is not in the mesh: %w", t.Inviter, ErrNotFound)
	}
	if !t.Expires.After(c.At) {
		return nil, Result{}, fmt.Errorf("expiry %v is not after %v: %w", t.Expires, c.At, ErrInvalid)
	}
	if old, ok := r.tokens[t.PublicKey]; ok {
		if old.Inviter == t.Inviter && old.Expires.Equal(t.Expires) {
			return r.shallow(), Result{Token: &old}, nil // the same token, retried
		}
		return nil, Result{}, fmt.Errorf("token key seen before: %w", ErrExists)
	}
	n := r.shallow()
	n.tokens = maps.Clone(r.tokens)
	// Drop unused tokens that have expired: they can never be used. Used ones stay, so a
	// second use is refused as such.
	for k, old := range n.tokens {
		if old.Used.IsZero() && !c.At.Before(old.Expires) {
			delete(n.tokens, k)
		}
	}
	jt := JoinToken{PublicKey: t.PublicKey, Inviter: t.Inviter, Expires: t.Expires}
	n.tokens[jt.PublicKey] = jt
	return n, Result{Token: &jt}, nil
}

func (r *Roster) applyConsumeToken(c *Command) (*Roster, Result, error) {
	t, ok := r.tokens[c.ConsumeToken.PublicKey]
	switch {
	case c.ConsumeToken.By == "":
		return nil, Result{}, fmt.Errorf("no user named: %w", ErrInvalid)
	case ok && !t.Used.IsZero() && t.By == c.ConsumeToken.By:
		return r.shallow(), Result{Token: &t}, nil // the same use, retried
	case !ok:
		return nil, Result{}, fmt.Errorf("no such join token (never issued, or expired and dropped): %w", ErrNotFound)
	case !t.Used.IsZero():
		return nil, Result{}, fmt.Errorf("used at %v: %w", t.Used.UTC().Format("2006-01-02 15:04:05Z"), ErrTokenUsed)
	case !c.At.Before(t.Expires):
		return nil, Result{}, fmt.Errorf("expired at %v: %w", t.Expires.UTC().Format("2006-01-02 15:04:05Z"), ErrTokenExpired)
	}
	n := r.shallow()
	n.tokens = maps.Clone(r.tokens)
	t.Used, t.By = c.At, c.ConsumeToken.By
	n.tokens[t.PublicKey] = t
	return n, Result{Token: &t}, nil
}
