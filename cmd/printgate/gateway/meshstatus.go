package gateway

// `printgate mesh status` and `printgate mesh remove`: the membership as this gateway sees
// it, and removing a gateway (the roster first, refused with the list while devices are homed
// there; then its raft membership).

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/control"
	"github.com/printgate/printgate/mesh"
	"github.com/printgate/printgate/printerd/audit"
)

// pingTimeout bounds the pings of `mesh status`.
const pingTimeout = 2 * time.Second

// MeshStatus pings every member and reports the mesh as this gateway sees it.
func (g *Gateway) MeshStatus(ctx context.Context) control.MeshStatus {
	st := g.node.Status()
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	members := map[string]mesh.Member{}
	for _, m := range g.node.Members(ctx) {
		members[m.ID] = m
	}
	out := meshStatusOf(g.node.Roster(), g.gw.Name, st.Leader, st.Quorum, st.PendingRevocations)
	out.Running = true
	for i, gw := range out.Gateways {
		m, ok := members[gw.Name]
		out.Gateways[i].Voter = ok && m.Voter
		out.Gateways[i].Reachable = ok && m.Reachable
	}
	return out
}

// meshStatusOf lists the roster's gateways (reachability and votes left for the caller).
func meshStatusOf(r *mesh.Roster, self, leader string, quorum bool, pending []string) control.MeshStatus {
	out := control.MeshStatus{Name: self, Leader: leader, Quorum: quorum, Gateways: []control.MeshGateway{}, PendingRevocations: pending}
	if out.PendingRevocations == nil {
		out.PendingRevocations = []string{}
	}
	printers := map[string]int{}
	for _, p := range r.Printers() {
		printers[p.Gateway]++
	}
	for _, gw := range r.Gateways() {
		out.Gateways = append(out.Gateways, control.MeshGateway{Name: gw.Name, Address: addrString(gw.IPv4), Address6: addrString(gw.IPv6),
			Endpoint: gw.Endpoint, PublicKey: gw.PublicKey.String(), Leader: gw.Name == leader,
			Devices: len(r.HomedAt(gw.Name)), Printers: printers[gw.Name]})
	}
	return out
}

// OfflineMeshStatus is the mesh of a stopped gateway, from its replica file: nothing is
// reachable, there is no leader and no quorum as far as anyone here knows.
func OfflineMeshStatus(reg *enroll.Registry) (control.MeshStatus, error) {
	gw := reg.Gateway()
	if !HasMesh(reg.Dir()) {
		return control.MeshStatus{}, fmt.Errorf("mesh status: %s is not a mesh member yet: its gateway never ran (printgate run --state %s makes it a mesh of one)", reg.Dir(), reg.Dir())
	}
	r, err := mesh.ReadState(filepath.Join(reg.Dir(), MeshDir))
	if err != nil {
		return control.MeshStatus{}, fmt.Errorf("mesh status: %w", err)
	}
	var pending []string
	for _, d := range r.Devices() {
		if d.State == mesh.Revoked && d.RevokedAt.IsZero() { // revoked here, not yet committed
			pending = append(pending, d.Name)
		}
	}
	return meshStatusOf(r, gw.Name, "", false, pending), nil
}

// RemoveGateway removes the gateway name from the mesh: from the roster (refused, with the
// list, while active devices are homed there; its printers go with it), then from raft's
// membership. Both steps need quorum and both may be retried. The audit log records it as
// done by the local operator (the control socket), the intent first: when the intent cannot
// be written, nothing is removed.
func (g *Gateway) RemoveGateway(ctx context.Context, name string) error {
	in, err := g.begin(audit.ActionMeshRemove, map[string]string{"gateway": name})
	if err != nil {
		return err
	}
	var extra map[string]string
	gw, known := g.node.Roster().Gateway(name)
	err = g.removeGateway(ctx, name)
	if err == nil && known {
		extra = map[string]string{"gateway": name, "public_key": gw.PublicKey.String(), "endpoint": gw.Endpoint}
	}
	actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if aerr := in.End(actx, err, extra); aerr != nil {
		g.logf("gateway: audit outcome: %v (the intent is on record)", aerr)
	}
	return err
}

func (g *Gateway) removeGateway(ctx context.Context, name string) error {
	if name == g.gw.Name {
		return fmt.Errorf("mesh remove %s: that is this gateway; remove it from another member of the mesh: %w", name, enroll.ErrInvalid)
	}
	if _, ok := g.node.Roster().Gateway(name); !ok {
		var names []string
		for _, gw := range g.node.Roster().Gateways() {
			names = append(names, gw.Name)
		}
		return fmt.Errorf("mesh remove %s: no gateway of that name in the mesh (gateways: %v): %w", name, names, enroll.ErrNotFound)
	}
	if err := g.node.RemoveGateway(ctx, name); err != nil {
		return fmt.Errorf("mesh remove: %w", meshError(err))
	}
	if err := g.node.RemoveServer(ctx, name); err != nil {
		return fmt.Errorf("mesh remove %s: out of the roster, but its raft membership: %w (run mesh remove again)", name, meshError(err))
	}
	g.logf("gateway: mesh: gateway %s removed", name)
	return nil
}
