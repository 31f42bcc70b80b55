package gateway

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/printgate/printgate/enroll/control"
)

// meshStatusWait bounds the pings of `mesh status`: a gateway that does not answer within it
// is shown unreachable.
const meshStatusWait = 2 * time.Second

// MeshStatus reports the mesh as this gateway sees it: its replica's gateways, raft's
// members pinged inside the tunnel, the leader and whether writes can commit.
func (g *Gateway) MeshStatus(ctx context.Context) control.MeshStatus {
	ctx, cancel := context.WithTimeout(ctx, meshStatusWait)
	defer cancel()
	st := g.node.Status()
	r := g.node.Roster()
	out := control.MeshStatus{Name: g.gw.Name, State: st.State, Leader: st.Leader, Quorum: st.Quorum,
		Prefix4: r.Prefix4().String(), PendingRevocations: st.PendingRevocations}
	if r.Prefix6().IsValid() {
		out.Prefix6 = r.Prefix6().String()
	}
	if !r.Initialized() {
		out.Prefix4 = g.gw.Prefix4.String()
	}
	byName := map[string]*control.MeshGateway{}
	add := func(name string) *control.MeshGateway {
		if mg, ok := byName[name]; ok {
			return mg
		}
		mg := &control.MeshGateway{Name: name, Self: name == g.gw.Name}
		byName[name] = mg
		return mg
	}
	gws := r.Gateways()
	if !r.Initialized() && g.join != nil {
		gws = g.join.Gateways // joined, not reached by the mesh yet
	}
	for _, gw := range gws {
		mg := add(gw.Name)
		mg.Address, mg.Endpoint, mg.PublicKey = gw.IPv4.String(), gw.Endpoint, gw.PublicKey.String()
		if gw.IPv6.IsValid() {
			mg.Address6 = gw.IPv6.String()
		}
	}
	for _, m := range g.node.Members(ctx) {
		mg := add(m.ID)
		mg.Voter, mg.Leader, mg.Reachable, mg.Index = m.Voter, m.Leader, m.Reachable, m.Index
	}
	if self, ok := byName[g.gw.Name]; ok {
		self.Reachable = true
	}
	for _, mg := range byName {
		out.Gateways = append(out.Gateways, *mg)
	}
	slices.SortFunc(out.Gateways, func(a, b control.MeshGateway) int { return strings.Compare(a.Name, b.Name) })
	return out
}
