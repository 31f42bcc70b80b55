package mesh

// The typed writes: one per command, each committed through the leader by Node.Apply (so
// each fails with ErrNoQuorum when it cannot commit within the bound, and each may be retried
// as is). Revoke, which applies locally first, is in node.go with the revocation loop.

import (
	"context"
	"time"
)

// Enroll adds a device and returns it with its allocated addresses.
func (n *Node) Enroll(ctx context.Context, e EnrollCmd) (Device, error) {
	res, err := n.Apply(ctx, Command{Enroll: &e})
	if err != nil {
		return Device{}, err
	}
	return *res.Device, nil
}

// Activate records a pending device's first handshake (at) with its home gateway: every
// gateway then shows it active. It needs quorum; activating an active device again is a
// success that changes nothing.
func (n *Node) Activate(ctx context.Context, name string, key Key, at time.Time) (Device, error) {
	res, err := n.Apply(ctx, Command{Activate: &ActivateCmd{Name: name, PublicKey: key, At: at}})
	if err != nil {
		return Device{}, err
	}
	return *res.Device, nil
}

// Expire revokes a pending device whose TTL ran out at its home gateway with no handshake:
// every gateway then shows it expired. Unlike Revoke it needs quorum (the device is off its
// home gateway already; nothing else can reach it); the home gateway retries it.
func (n *Node) Expire(ctx context.Context, name string, key Key) (Device, error) {
	res, err := n.Apply(ctx, Command{Revoke: &RevokeCmd{Name: name, PublicKey: key, Expired: true}})
	if err != nil {
		return Device{}, err
	}
	return *res.Device, nil
}

// SetRole changes an active device's role.
func (n *Node) SetRole(ctx context.Context, name string, role Role) (Device, error) {
	res, err := n.Apply(ctx, Command{SetRole: &SetRoleCmd{Name: name, Role: role}})
	if err != nil {
		return Device{}, err
	}
	return *res.Device, nil
}

// SetAPIKey replaces an active device's API key hash and narrowing role (empty: its role).
func (n *Node) SetAPIKey(ctx context.Context, name string, hash []byte, role Role) (Device, error) {
	res, err := n.Apply(ctx, Command{SetAPIKey: &SetAPIKeyCmd{Name: name, APIKeyHash: hash, APIKeyRole: role}})
	if err != nil {
		return Device{}, err
	}
	return *res.Device, nil
}

// AddGateway adds a gateway to the roster (raft membership is AddVoter's).
func (n *Node) AddGateway(ctx context.Context, g AddGatewayCmd) (Gateway, error) {
	res, err := n.Apply(ctx, Command{AddGateway: &g})
	if err != nil {
		return Gateway{}, err
	}
	return *res.Gateway, nil
}

// RemoveGateway removes a gateway and its printers from the roster, refused with the list
// while active devices are homed there (raft membership is RemoveServer's).
func (n *Node) RemoveGateway(ctx context.Context, name string) error {
	_, err := n.Apply(ctx, Command{RemoveGateway: &RemoveGatewayCmd{Name: name}})
	return err
}

// AddPrinter adds a printer on gateway; the name is unique across the mesh.
func (n *Node) AddPrinter(ctx context.Context, name, gateway string) (Printer, error) {
	res, err := n.Apply(ctx, Command{AddPrinter: &AddPrinterCmd{Name: name, Gateway: gateway}})
	if err != nil {
		return Printer{}, err
	}
	return *res.Printer, nil
}

// AddJoinToken records a join token's one-time public key until it is used or expires.
func (n *Node) AddJoinToken(ctx context.Context, t AddTokenCmd) (JoinToken, error) {
	res, err := n.Apply(ctx, Command{AddToken: &t})
	if err != nil {
		return JoinToken{}, err
	}
	return *res.Token, nil
}

// ConsumeJoinToken uses the join token with one-time key k for by: once, before it expires.
func (n *Node) ConsumeJoinToken(ctx context.Context, k Key, by string) (JoinToken, error) {
	res, err := n.Apply(ctx, Command{ConsumeToken: &ConsumeTokenCmd{PublicKey: k, By: by}})
	if err != nil {
		return JoinToken{}, err
	}
	return *res.Token, nil
}
