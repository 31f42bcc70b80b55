// Package control is the protocol that drives a running gateway: its wire types, a client
// and a server. The CLI speaks it to the daemon on the same machine over a Unix socket; the
// transport is any net.Conn, so other gateways (inside the tunnel) can speak it too.
package control

// The protocol: one JSON Request per connection, one JSON Response back, then the connection
// closes. Requests are decoded strictly (unknown fields are refused) and bounded to
// MaxMessage bytes. Who may connect is the transport's business: the daemon's Unix socket is
// mode 0600 inside the 0700 state directory and checks the peer's credentials (see
// UnixPeerAllowed); a listener inside the tunnel would check the peer's identity instead.

import (
	"errors"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/printgate/printgate/enroll"
)

// SocketName is the control socket's file name inside the state directory.
const SocketName = "control.sock"

// Path returns the control socket path of a state directory.
func Path(stateDir string) string { return filepath.Join(stateDir, SocketName) }

// Operations.
const (
	OpEnroll = "enroll"
	OpRevoke = "revoke"
	OpPeers  = "peers"
	OpStatus = "status"
	// OpMeshStatus answers the mesh's membership (MeshStatus); OpMeshRemove removes the
	// gateway Name from the mesh.
	OpMeshStatus = "mesh_status"
	OpMeshRemove = "mesh_remove"
	// OpMeshInvite makes a join token for a new gateway (TTL: its life; empty: 15 minutes).
	OpMeshInvite = "mesh_invite"
)

// MaxMessage bounds a request or a response (a response with 1,000 peers is ~500 KiB).
const MaxMessage = 4 << 20

// DefaultTimeout bounds one call when its context has no deadline.
const DefaultTimeout = 30 * time.Second

// ErrNoDaemon means no gateway answers at the address called: the caller may open the state
// directory itself.
var ErrNoDaemon = errors.New("no running gateway")

// Request is one call.
type Request struct {
	Op string `json:"op"`
	// Name is the peer for enroll and revoke.
	Name string `json:"name,omitempty"`
	// Role, PublicKey (base64) and TTL are enroll's options; empty means the defaults.
	Role      string `json:"role,omitempty"`
	PublicKey string `json:"public_key,omitempty"`
	TTL       string `json:"ttl,omitempty"`
}

// Response is the answer to one Request; Error is set when it failed.
type Response struct {
	Error      string            `json:"error,omitempty"`
	Enrollment *EnrollResult     `json:"enrollment,omitempty"`
	Revoked    *RevokeResult     `json:"revoked,omitempty"`
	Peers      []enroll.PeerView `json:"peers,omitempty"`
	Status     *Status           `json:"status,omitempty"`
	Mesh       *MeshStatus       `json:"mesh,omitempty"`
	Invite     *InviteResult     `json:"invite,omitempty"`
}

// InviteResult is a join token as it travels, once, to the caller of mesh_invite.
type InviteResult struct {
	// Token is the join token's text: a secret until used or expired.
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
	// Address is the one-time tunnel address the joining machine uses.
	Address netip.Addr `json:"address"`
	// Endpoint is the inviter's HOST:PORT the joining machine dials.
	Endpoint string `json:"endpoint"`
}

// MeshStatus is the mesh as one gateway sees it: `printgate mesh status --json`.
type MeshStatus struct {
	// Running is true when a daemon answered; without one the gateways come from its replica
	// file and nothing is reachable.
	Running bool `json:"running"`
	// Name is the gateway that answered.
	Name string `json:"name"`
	// Leader names the raft leader; empty when none is known.
	Leader string `json:"leader"`
	// Quorum is true when writes (enrollments) can commit from this gateway.
	Quorum   bool          `json:"quorum"`
	Gateways []MeshGateway `json:"gateways"`
	// PendingRevocations are revocations applied on this gateway, not yet committed.
	PendingRevocations []string `json:"pending_revocations"`
}

// MeshGateway is one gateway in MeshStatus.
type MeshGateway struct {
	Name string `json:"name"`
	// Address and Address6 are its tunnel addresses.
	Address  string `json:"address"`
	Address6 string `json:"address6,omitempty"`
	// Endpoint is the HOST:PORT devices and gateways dial.
	Endpoint  string `json:"endpoint"`
	PublicKey string `json:"public_key"`
	Leader    bool   `json:"leader"`
	// Reachable is true when it answered a ping just now (always for the gateway asked).
	Reachable bool `json:"reachable"`
	// Voter is true once it is a voting member of raft (a joining gateway is not yet).
	Voter bool `json:"voter"`
	// Devices counts the active devices homed there; Printers its printers.
	Devices  int `json:"devices"`
	Printers int `json:"printers"`
}

// EnrollRequest validates an enroll call's options into an enroll.Request.
func (req Request) EnrollRequest() (enroll.Request, error) {
	if err := enroll.ValidateName(req.Name); err != nil {
		return enroll.Request{}, err
	}
	r := enroll.Request{Name: req.Name, Role: enroll.Viewer}
	if req.Role != "" {
		role, err := enroll.ParseRole(req.Role)
		if err != nil {
			return enroll.Request{}, err
		}
		r.Role = role
	}
	if req.PublicKey != "" {
		k, err := enroll.ParsePublicKey(req.PublicKey)
		if err != nil {
			return enroll.Request{}, err
		}
		r.PublicKey = &k
	}
	if req.TTL != "" {
		d, err := enroll.ParseTTL(req.TTL)
		if err != nil {
			return enroll.Request{}, err
		}
		r.TTL = d
	}
	return r, nil
}

// EnrollResult is an enrollment as it travels, once, to the caller: the device config (with
// the device's private key unless it brought its own) and the API key.
type EnrollResult struct {
	Peer   enroll.PeerView `json:"peer"`
	Config string          `json:"config"`
	APIKey string          `json:"api_key"`
}

// EnrollResultFrom copies what the caller shows out of an enrollment.
func EnrollResultFrom(e *enroll.Enrollment, now time.Time) EnrollResult {
	return EnrollResult{Peer: e.Peer.View(now), Config: e.Config, APIKey: e.APIKey}
}

// RevokeResult reports one revocation.
type RevokeResult struct {
	Peer enroll.PeerView `json:"peer"`
	// AppliedSeconds is the time from the call's arrival to the peer being off the device
	// with its connections closed.
	AppliedSeconds float64 `json:"applied_seconds"`
	// ClosedConns is how many open TCP connections of the peer were aborted.
	ClosedConns int `json:"closed_conns"`
	// MeshPending is true when the revocation is applied on this gateway but not yet
	// committed in the mesh (no quorum): the rest of the mesh follows when it can.
	MeshPending bool `json:"mesh_pending,omitempty"`
}

// Status is a gateway as `printgate status --json` shows it.
type Status struct {
	// Running is true when a daemon answered.
	Running bool `json:"running"`
	// Name is the gateway's name in its mesh; empty before its first run.
	Name       string `json:"name,omitempty"`
	PublicKey  string `json:"public_key"`
	ListenPort int    `json:"listen_port"`
	Endpoint   string `json:"endpoint,omitempty"`
	// Addresses are the gateway's own tunnel addresses (IPv4 first).
	Addresses []string `json:"addresses"`
	Prefix4   string   `json:"prefix4"`
	Prefix6   string   `json:"prefix6,omitempty"`
	// URL is the web UI's address inside the tunnel.
	URL string `json:"url"`
	// Interface is the UAPI name for `wg show`; empty: none.
	Interface string        `json:"interface,omitempty"`
	Printers  []PrinterInfo `json:"printers"`
	// Peers counts the roster by state.
	Peers map[string]int `json:"peers"`
}

// PrinterInfo is one printer in Status.
type PrinterInfo struct {
	Name     string `json:"name"`
	Address  string `json:"address"`
	Address6 string `json:"address6,omitempty"`
	// URL is the printer's OctoPrint-compatible API base inside the tunnel.
	URL   string `json:"url"`
	Port  string `json:"port,omitempty"` // serial device, "sim" for a simulator
	State string `json:"state"`
	// Gateway is the mesh gateway the printer is on (this one's own printers included).
	Gateway string `json:"gateway,omitempty"`
	Error   string `json:"error,omitempty"`
}
