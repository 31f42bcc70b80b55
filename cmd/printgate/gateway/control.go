package gateway

import (
	"context"
	"fmt"
	"time"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/control"
)

// The control socket: how the CLI on the gateway's own machine talks to the running daemon,
// in the protocol of package control. One Unix stream socket, STATE/control.sock, mode 0600
// inside the 0700 state directory, and peer credentials checked on every connection (only
// root and the daemon's own user). There is no network listener: this socket and
// WireGuard's UDP port are the daemon's only sockets.

// handle runs one control request against the gateway.
func (g *Gateway) handle(ctx context.Context, req control.Request) control.Response {
	switch req.Op {
	case control.OpEnroll:
		r, err := req.EnrollRequest()
		if err != nil {
			return control.Response{Error: err.Error()}
		}
		e, err := g.Enroll(r)
		if err != nil {
			return control.Response{Error: err.Error()}
		}
		res := control.EnrollResultFrom(e, g.now())
		e.Forget()
		return control.Response{Enrollment: &res}
	case control.OpRevoke:
		res, err := g.Revoke(req.Name)
		if err != nil {
			return control.Response{Error: err.Error()}
		}
		return control.Response{Revoked: &res}
	case control.OpPeers:
		p := g.Peers()
		if p == nil {
			p = []enroll.PeerView{}
		}
		return control.Response{Peers: p}
	case control.OpStatus:
		st := g.Status()
		return control.Response{Status: &st}
	case control.OpMeshStatus:
		st := g.MeshStatus(ctx)
		return control.Response{Mesh: &st}
	case control.OpMeshInvite:
		var ttl time.Duration
		if req.TTL != "" {
			d, err := time.ParseDuration(req.TTL)
			if err != nil {
				return control.Response{Error: fmt.Sprintf("mesh invite: ttl %q: %v", req.TTL, err)}
			}
			ttl = d
		}
		tok, err := g.Invite(ctx, ttl)
		if err != nil {
			return control.Response{Error: err.Error()}
		}
		res := inviteResult(tok)
		return control.Response{Invite: &res}
	case control.OpMeshRemove:
		if err := g.RemoveGateway(ctx, req.Name); err != nil {
			return control.Response{Error: err.Error()}
		}
		st := g.MeshStatus(ctx)
		return control.Response{Mesh: &st}
	default:
		return control.Response{Error: fmt.Sprintf("control: unknown operation %q", req.Op)}
	}
}
