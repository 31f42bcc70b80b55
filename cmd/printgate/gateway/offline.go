package gateway

// The state directory changed by the CLI while no gateway runs. Before the gateway's first
// run there is no mesh and the registry is all there is. After it, the roster's truth is the
// mesh: a write opens the mesh node in this process with no network (mesh.OfflineListener,
// mesh.OfflineDial). A mesh of one elects itself and commits; a member of a larger mesh
// cannot reach a majority, so an enrollment fails with "quorum" and the advice to start the
// gateway, while a revocation is applied here at once (the gateway commits it when it runs).

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/mesh"
)

// HasMesh reports whether the state directory belongs to a mesh: its gateway ran since the
// mesh (it has a node), or it joined one (join.json).
func HasMesh(stateDir string) bool {
	for _, name := range []string{"raft.db", FileJoin} {
		if _, err := os.Stat(filepath.Join(stateDir, MeshDir, name)); err == nil {
			return true
		}
	}
	return false
}

// Offline is a state directory opened by the CLI while no gateway runs: the registry, and its
// mesh node when it has one.
type Offline struct {
	reg  *enroll.Registry
	gw   enroll.Gateway
	node *mesh.Node // nil without a mesh
}

// OpenOffline opens reg's mesh node in this process, if the state has one. reg stays the
// caller's (open, holding the state directory's lock); Close closes the node only.
func OpenOffline(reg *enroll.Registry, logf func(string, ...any)) (*Offline, error) {
	o := &Offline{reg: reg, gw: reg.Gateway()}
	if !HasMesh(reg.Dir()) {
		return o, nil
	}
	if o.gw.Name == "" {
		return nil, fmt.Errorf("state %s has a mesh node but no gateway name: run the gateway once (printgate run)", reg.Dir())
	}
	node, err := mesh.Open(mesh.Config{
		ID:        o.gw.Name,
		Dir:       filepath.Join(reg.Dir(), MeshDir),
		Listener:  mesh.OfflineListener(netip.AddrPortFrom(o.gw.Addr4(), MeshPort).String()),
		Advertise: netip.AddrPortFrom(o.gw.Addr4(), MeshPort).String(),
		Dial:      mesh.OfflineDial,
		Logf:      logf,
	})
	if err != nil {
		return nil, err
	}
	o.node = node
	return o, nil
}

// Close closes the mesh node (its replica file written); the registry stays open.
func (o *Offline) Close() error {
	if o.node == nil {
		return nil
	}
	return o.node.Close()
}

// offlineQuorum explains a quorum error of the CLI's own node.
func (o *Offline) offlineQuorum(err error) error {
	if !errors.Is(err, mesh.ErrNoQuorum) {
		return meshError(err)
	}
	r := o.node.Roster()
	if !r.Initialized() {
		return fmt.Errorf("%w: this gateway joined a mesh but has no copy of its roster yet: start it (printgate run --state %s) so the mesh can reach it (%w)",
			err, o.reg.Dir(), enroll.ErrUnavailable)
	}
	n := len(r.Gateways())
	return fmt.Errorf("%w: the gateway is not running, and this state directory is one gateway of a mesh of %d, whose majority only the running gateway reaches: start it (printgate run --state %s) and try again (%w)",
		err, n, o.reg.Dir(), enroll.ErrUnavailable)
}

// Enroll enrolls a device homed on this gateway: through the mesh when there is one (see
// Gateway.enroll for the order), else in the registry alone.
func (o *Offline) Enroll(req enroll.Request) (*enroll.Enrollment, error) {
	if o.node == nil {
		return o.reg.Enroll(req)
	}
	if err := enroll.ValidateName(req.Name); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	role, err := enroll.ParseRole(string(req.Role))
	if err != nil {
		return nil, fmt.Errorf("enroll %s: %w", req.Name, err)
	}
	keyRole := req.APIKeyRole
	if keyRole == role {
		keyRole = ""
	}
	if keyRole != "" && !role.Includes(keyRole) {
		return nil, fmt.Errorf("enroll %s: an api key may narrow the role %s, not widen it to %q: %w", req.Name, role, keyRole, enroll.ErrInvalid)
	}
	if _, live := o.reg.Peer(req.Name); live {
		return nil, fmt.Errorf("enroll %s: a live peer of that name exists (revoke it first): %w", req.Name, enroll.ErrExists)
	}
	sec, err := enroll.NewSecrets(req.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("enroll %s: %w", req.Name, err)
	}
	req.Role = role
	cmd, err := meshEnrollCmd(req, sec, keyRole, o.gw.Name, o.reg.Now())
	if err != nil {
		return nil, err
	}
	d, err := o.node.Enroll(context.Background(), cmd)
	if err != nil {
		return nil, o.offlineQuorum(err)
	}
	req.Secrets, req.PublicKey, req.IPv4, req.IPv6, req.Created, req.ExpiresAt = sec, nil, d.IPv4, d.IPv6, d.Created, d.ExpiresAt
	e, err := o.reg.Enroll(req)
	if err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), meshRevokeTimeout)
		o.node.Revoke(ctx, req.Name)
		cancel()
		return nil, fmt.Errorf("%w (the mesh had recorded %s, so it was revoked there again and the name is used up: enroll under another name)", err, req.Name)
	}
	return e, nil
}

// Revoke revokes a device of the mesh (or of the registry, without a mesh). With a mesh it
// always works: applied to this gateway's replica at once and kept on disk; pending is true
// when it is not committed yet (the gateway commits it when it runs).
func (o *Offline) Revoke(name string) (p enroll.Peer, pending bool, err error) {
	if o.node == nil {
		p, err = o.reg.Revoke(name)
		return p, false, err
	}
	if err := enroll.ValidateName(name); err != nil {
		return enroll.Peer{}, false, fmt.Errorf("revoke: %w", err)
	}
	d, known := o.node.Roster().Device(name)
	if known && d.State == mesh.Revoked {
		return enroll.Peer{}, false, fmt.Errorf("revoke %s: no pending or active device of that name (revoked already): %w", name, enroll.ErrNotFound)
	}
	if !known {
		// Not in this replica: the leader may know it, but offline only a mesh of one can ask.
		if len(o.node.Roster().Gateways()) > 1 {
			return enroll.Peer{}, false, fmt.Errorf("revoke %s: no device of that name in this gateway's copy of the roster (a newer enrollment elsewhere needs the running gateway: printgate run --state %s): %w",
				name, o.reg.Dir(), enroll.ErrNotFound)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), mesh.DefaultCommitTimeout)
	committed, err := o.node.Revoke(ctx, name)
	cancel()
	if err != nil {
		return enroll.Peer{}, false, meshError(err)
	}
	if d2, ok := o.node.Roster().Device(name); ok {
		d = d2
	}
	p = peerOfDevice(d)
	if lp, ok := o.reg.Peer(name); ok && lp.PublicKey == wgtypes.Key(d.PublicKey) {
		if lp, err = o.reg.Revoke(name); err != nil {
			return p, !committed, fmt.Errorf("revoke %s: revoked in the mesh, but the local record: %w", name, err)
		}
		p = lp
	}
	p.Home = d.Home
	return p, !committed, nil
}

// offlineRoster is the mesh replica of a stopped gateway (read-only), nil without a mesh.
func offlineRoster(reg *enroll.Registry) *mesh.Roster {
	if !HasMesh(reg.Dir()) {
		return nil
	}
	r, err := mesh.ReadState(filepath.Join(reg.Dir(), MeshDir))
	if err != nil || !r.Initialized() {
		return nil
	}
	return r
}
