package gateway

// Writes through the mesh: enroll (quorum), revoke (local at once, committed when it can),
// API key rotation, printers at start; and the reads that show the whole mesh (peers,
// printers of every gateway).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/control"
	"github.com/printgate/printgate/mesh"
	"github.com/printgate/printgate/printerd/audit"
)

// enroll is Enroll without the audit record (printerd records its callers' own).
//
// The order keeps nothing half-applied: validate, make the secrets in memory, commit the
// device in the mesh (which allocates its addresses; refused without quorum), then record it
// in the registry at those addresses with its preshared key and TTL, then put it on the
// device. When the local record fails, the mesh enrollment is revoked again (its name is
// burned: revocation is for good) and the error says so.
func (g *Gateway) enroll(req enroll.Request) (*enroll.Enrollment, error) {
	if err := enroll.ValidateName(req.Name); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	role, err := enroll.ParseRole(string(req.Role))
	if err != nil {
		return nil, fmt.Errorf("enroll %s: %w", req.Name, err)
	}
	keyRole := req.APIKeyRole
	if keyRole != "" {
		if _, err := enroll.ParseRole(string(keyRole)); err != nil || !role.Includes(keyRole) {
			return nil, fmt.Errorf("enroll %s: an api key may narrow the role %s, not widen it to %q: %w", req.Name, role, keyRole, enroll.ErrInvalid)
		}
		if keyRole == role {
			keyRole = ""
		}
	}
	g.reg.Lock()
	if g.reg.r == nil {
		g.reg.Unlock()
		return nil, fmt.Errorf("enroll: %w", net.ErrClosed)
	}
	if _, live := g.reg.r.Peer(req.Name); live || g.inflight[req.Name] {
		g.reg.Unlock()
		return nil, fmt.Errorf("enroll %s: a live peer of that name exists (revoke it first): %w", req.Name, enroll.ErrExists)
	}
	if g.inflight == nil {
		g.inflight = map[string]bool{}
	}
	g.inflight[req.Name] = true
	sec := req.Secrets
	if u, ok := g.unclear[req.Name]; ok && sec == nil && u.same(req, role, keyRole, g.now()) {
		sec = u.sec // the retry of an enrollment whose outcome was unclear: the same one
	}
	g.reg.Unlock()
	defer func() {
		g.reg.Lock()
		delete(g.inflight, req.Name)
		g.reg.Unlock()
	}()
	if sec == nil {
		if sec, err = enroll.NewSecrets(req.PublicKey); err != nil {
			return nil, fmt.Errorf("enroll %s: %w", req.Name, err)
		}
	}
	req.Secrets, req.PublicKey, req.Role = sec, nil, role

	g.reg.Lock()
	reg := g.reg.r
	g.reg.Unlock()
	if reg == nil {
		return nil, fmt.Errorf("enroll: %w", net.ErrClosed)
	}
	// The deadline on the registry's clock, which the registry then counts down: the wall
	// clock may be behind it (a Pi before NTP), and a deadline on the wall clock would be
	// in the registry's past.
	cmd, err := meshEnrollCmd(req, sec, keyRole, g.gw.Name, reg.Now())
	if err != nil {
		return nil, err
	}
	d, err := g.node.Enroll(context.Background(), cmd)
	g.reg.Lock()
	defer g.reg.Unlock()
	if errors.Is(err, mesh.ErrNoQuorum) {
		// It may still commit: keep its secrets for a retry (and keep revokeStale off it).
		if g.unclear == nil {
			g.unclear = map[string]unclearEnroll{}
		}
		g.unclear[req.Name] = unclearEnroll{sec: sec, role: role, keyRole: keyRole, until: g.now().Add(unclearTTL)}
		return nil, meshError(err)
	}
	delete(g.unclear, req.Name)
	if err != nil {
		return nil, meshError(err)
	}
	req.IPv4, req.IPv6, req.Created, req.ExpiresAt = d.IPv4, d.IPv6, d.Created, d.ExpiresAt

	var e *enroll.Enrollment
	if g.reg.r == nil {
		err = fmt.Errorf("enroll %s: %w", req.Name, net.ErrClosed)
	} else {
		e, err = g.reg.r.Enroll(req)
	}
	if err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), meshRevokeTimeout)
		_, rerr := g.node.Revoke(ctx, req.Name)
		cancel()
		if rerr != nil {
			g.logf("gateway: enroll %s: revoking the unfinished mesh enrollment: %v (revoked at the next start)", req.Name, rerr)
		}
		return nil, fmt.Errorf("%w (the mesh had recorded %s, so it was revoked there again and the name is used up: enroll under another name)", err, req.Name)
	}
	if _, _, err := g.applyLocked(); err != nil {
		// The peer is in the roster; the next stats round applies it again.
		g.logf("gateway: apply after enrolling %s: %v", e.Peer.Name, err)
	}
	// The roster logged the enrollment (enroll: NAME enrolled as ROLE (ADDRESS), pending until).
	return e, nil
}

// meshEnrollCmd is the mesh's half of an enrollment homed on gateway home (req validated,
// its role resolved, sec made): pending until the request's TTL from now, the registry's
// clock (Registry.Now).
func meshEnrollCmd(req enroll.Request, sec *enroll.Secrets, keyRole enroll.Role, home string, now time.Time) (mesh.EnrollCmd, error) {
	ttl := req.TTL
	if ttl == 0 {
		ttl = enroll.DefaultTTL
	}
	if err := enroll.CheckTTL(ttl); err != nil {
		return mesh.EnrollCmd{}, fmt.Errorf("enroll %s: %w", req.Name, err)
	}
	return mesh.EnrollCmd{Name: req.Name, Role: mesh.Role(req.Role), PublicKey: mesh.Key(sec.PublicKey),
		APIKeyHash: sec.APIKeyHash[:], APIKeyRole: mesh.Role(keyRole), Home: home,
		OwnKey: sec.PrivateKey == nil, ExpiresAt: now.Add(ttl).UTC()}, nil
}

// Revoke revokes a device of the mesh (homed here or elsewhere): the mesh first (applied
// here at once, committed when the mesh has quorum), then the local tombstone, the device,
// and every open connection of the device inside the stack. When it returns, nothing of the
// device is served here; every other gateway does the same when the revocation reaches it.
//
// The intent is in the audit log, fsynced, before the roster changes; when it cannot be
// written the revocation is refused.
func (g *Gateway) Revoke(name string) (control.RevokeResult, error) {
	in, err := g.begin(audit.ActionRevoke, map[string]string{"name": name})
	if err != nil {
		return control.RevokeResult{}, err
	}
	res, err := g.revoke(name)
	g.end(in, err, res.peer)
	return res.RevokeResult, err
}

// unclearTTL is how long the secrets of an enrollment that failed for want of quorum are kept
// for a retry of the same name and role. Past it, if the enrollment did commit after all,
// revokeStale revokes it (it has no local record).
const unclearTTL = 10 * time.Minute

// unclearEnroll is an enrollment whose mesh commit timed out: it may commit later.
type unclearEnroll struct {
	sec           *enroll.Secrets
	role, keyRole enroll.Role
	until         time.Time
}

// same reports whether req (already validated to role and keyRole) is a retry of u.
func (u unclearEnroll) same(req enroll.Request, role, keyRole enroll.Role, now time.Time) bool {
	if !now.Before(u.until) || u.role != role || u.keyRole != keyRole {
		return false
	}
	if req.PublicKey == nil {
		return u.sec.PrivateKey != nil
	}
	return u.sec.PrivateKey == nil && *req.PublicKey == u.sec.PublicKey
}

type revokeResult struct {
	control.RevokeResult
	peer enroll.Peer
}

// revoke is Revoke without the audit record (printerd records its callers' own). It works for
// a device homed on any gateway and without quorum: the mesh node applies it here at once
// (every gateway's mesh loop does the same when the revocation reaches it) and commits it
// when it can; then, for a device homed here, the registry's tombstone, the device, and
// every open connection of the device in this gateway's stack.
func (g *Gateway) revoke(name string) (revokeResult, error) {
	start := time.Now()
	if err := enroll.ValidateName(name); err != nil {
		return revokeResult{}, fmt.Errorf("revoke: %w", err)
	}
	r := g.node.Roster()
	d, known := r.Device(name)
	if known && d.State == mesh.Revoked {
		return revokeResult{}, fmt.Errorf("revoke %s: no pending or active device of that name (revoked already): %w", name, enroll.ErrNotFound)
	}
	// The lock is held across the mesh revocation: the mesh loop, woken by it, then finds
	// the work done here (and this call counts the connections it closes).
	g.reg.Lock()
	defer g.reg.Unlock()
	if g.reg.r == nil {
		return revokeResult{}, fmt.Errorf("revoke: %w", net.ErrClosed)
	}
	// The node applies the revocation to its replica first and then waits for the commit;
	// this gateway acts as soon as the replica shows it, and learns the commit's outcome
	// after (a device this replica does not know yet is asked of the leader first).
	type outcome struct {
		committed bool
		err       error
	}
	done := make(chan outcome, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), meshRevokeTimeout)
		defer cancel()
		c, err := g.node.Revoke(ctx, name)
		done <- outcome{c, err}
	}()
	var out *outcome
	for out == nil {
		ch := g.node.Changed()
		if d2, ok := g.node.Roster().Device(name); ok && d2.State == mesh.Revoked {
			d = d2
			break
		}
		select {
		case o := <-done:
			out = &o
		case <-ch:
		}
	}
	if out != nil && out.err != nil {
		return revokeResult{}, meshError(out.err)
	}
	if d2, ok := g.node.Roster().Device(name); ok {
		d = d2
	}
	p := peerOfDevice(d)
	if d.Home == g.gw.Name {
		if lp, ok := g.reg.r.Peer(name); ok && lp.PublicKey == wgtypes.Key(d.PublicKey) {
			if lp, err := g.reg.r.Revoke(name); err != nil {
				g.logf("gateway: revoke %s: the local record: %v (revoked in the mesh)", name, err)
			} else {
				p = lp
			}
		}
	}
	_, n, err := g.applyLocked()
	if err != nil {
		// Fail safe: the device must not keep a revoked peer. Remove everything; the next
		// stats round restores the others.
		g.logf("gateway: apply after revoking %s: %v; clearing the device", name, err)
		if cerr := g.dev.Apply(nil); cerr != nil {
			g.logf("gateway: clear device: %v", cerr)
		}
		g.reg.applied = nil
		g.publishLocked()
	}
	// applyLocked closed its connections if it was live here; close the rest (a device homed
	// elsewhere, reaching this gateway's printers through its home).
	n += g.closeConns([]enroll.DevicePeer{devicePeerOf(p)})
	took := time.Since(start)
	if g.cfg.onMeshRevoked != nil {
		g.cfg.onMeshRevoked([]string{name}, n)
	}
	if out == nil {
		o := <-done // the commit, or its bound (a revocation stays applied here either way)
		out = &o
	}
	committed := out.err == nil && out.committed
	if out.err != nil {
		g.logf("gateway: revoke %s: applied here; the mesh: %v", name, out.err)
	}
	g.stats.Lock()
	g.stats.lastRevoke = took
	g.stats.Unlock()
	g.logf("gateway: revoked %s (%v, home %s): applied in %v, committed in the mesh: %v", p.Name, p.IPv4, d.Home, took, committed)
	st := g.statsFor(p.PublicKey)
	p.Home = d.Home
	v := viewOf(p, st, g.now())
	return revokeResult{control.RevokeResult{Peer: v, AppliedSeconds: took.Seconds(), ClosedConns: n, MeshPending: !committed}, p}, nil
}

// rotateAPIKey gives a device homed here a new API key. The key is made in memory, the mesh
// records its hash first (quorum; so every gateway checks the same one), then the registry:
// without quorum nothing changes and the old key keeps working everywhere. A home gateway
// accepts a key only while its registry and the mesh hold the same hash, so a local write
// that fails after the commit leaves neither key working here (the error says to rotate
// again) rather than two.
func (g *Gateway) rotateAPIKey(name string, role enroll.Role) (string, error) {
	g.reg.Lock()
	if g.reg.r == nil {
		g.reg.Unlock()
		return "", errors.New("rotate api key: gateway closed")
	}
	p, live := g.reg.r.Peer(name)
	g.reg.Unlock()
	if !live {
		return "", fmt.Errorf("rotate api key %s: no pending or active device of that name homed on this gateway (a device's API key is rotated at its home gateway): %w", name, enroll.ErrNotFound)
	}
	keyRole := role
	if keyRole != "" {
		if _, err := enroll.ParseRole(string(keyRole)); err != nil || !p.Role.Includes(keyRole) {
			return "", fmt.Errorf("rotate api key %s: role %q must be one of the device's role %s or below: %w", name, role, p.Role, enroll.ErrInvalid)
		}
		if keyRole == p.Role {
			keyRole = ""
		}
	}
	key, hash, err := enroll.NewAPIKey()
	if err != nil {
		return "", fmt.Errorf("rotate api key %s: %w", name, err)
	}
	if _, err := g.node.SetAPIKey(context.Background(), name, hash[:], mesh.Role(keyRole)); err != nil {
		return "", fmt.Errorf("rotate api key %s: %w (nothing changed: the old key still works)", name, meshError(err))
	}
	g.reg.Lock()
	defer g.reg.Unlock()
	if g.reg.r == nil {
		return "", fmt.Errorf("rotate api key %s: the mesh has the new key, but the gateway closed before recording it: rotate again", name)
	}
	if err := g.reg.r.SetAPIKey(name, role, key); err != nil {
		return "", fmt.Errorf("rotate api key %s: the mesh has the new key, but this gateway could not record it (%w): neither key works on this gateway until you rotate again", name, err)
	}
	g.publishLocked()
	return key, nil
}

// meshPrinters resolves every configured printer's addresses in the mesh and adds them to the
// stack: a printer this gateway has in the replica is used as it is (no quorum needed), a new
// one is added (AddPrinter, waiting out an election), and a name another gateway has fails.
func (g *Gateway) meshPrinters(ctx context.Context) error {
	for _, spec := range g.cfg.Printers {
		a4, a6, err := g.meshPrinter(ctx, spec.Name)
		if err != nil {
			return fmt.Errorf("printer %s: %w", spec.Name, err)
		}
		p := &printer{spec: spec, addr4: a4, addr6: a6}
		for _, a := range []netip.Addr{a4, a6} {
			if a.IsValid() {
				if err := g.stack.AddAddr(a); err != nil {
					return fmt.Errorf("printer %s: %w", spec.Name, err)
				}
			}
		}
		g.prs = append(g.prs, p)
	}
	return nil
}

func (g *Gateway) meshPrinter(ctx context.Context, name string) (netip.Addr, netip.Addr, error) {
	if p, ok := g.node.Roster().Printer(name); ok {
		if p.Gateway != g.gw.Name {
			return netip.Addr{}, netip.Addr{}, fmt.Errorf("the name is taken by a printer on gateway %s (printer names are unique across the mesh): name this one differently", p.Gateway)
		}
		return p.IPv4, p.IPv6, nil
	}
	deadline := time.Now().Add(meshPrinterWait)
	for {
		p, err := g.node.AddPrinter(ctx, name, g.gw.Name)
		if err == nil {
			g.logf("gateway: printer %s added to the mesh at %v", name, p.IPv4)
			return p.IPv4, p.IPv6, nil
		}
		if !errors.Is(err, mesh.ErrNoQuorum) || time.Now().After(deadline) || ctx.Err() != nil {
			return netip.Addr{}, netip.Addr{}, meshError(err)
		}
		g.logf("gateway: printer %s: %v; trying again", name, err)
	}
}

// RosterPeers returns the peers of the mesh (first boot watches them):
// the registry's as last applied, then the devices homed on other gateways.
func (g *Gateway) RosterPeers() []enroll.Peer {
	out := slices.Clone(g.view().peers)
	for i := range out {
		out[i].Home = g.gw.Name
	}
	for _, d := range g.node.Roster().Devices() {
		if d.Home != g.gw.Name {
			out = append(out, peerOfDevice(d))
		}
	}
	return out
}
