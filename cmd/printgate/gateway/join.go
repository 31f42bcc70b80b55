package gateway

// Joining a mesh, the new machine's side (`printgate init --join`): a temporary WireGuard
// device and netstack carry the join token's one-time key and address, with the inviter as
// their only peer; one TCP connection to the inviter's join port inside the tunnel runs the
// join protocol (mesh/join.go); then both are closed. Nothing touches the disk here: the
// caller writes the state from the answer.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/mesh"
	"github.com/printgate/printgate/netstack"
	"github.com/printgate/printgate/tunnel"
)

// JoinPort is the TCP port of the join protocol on a gateway's tunnel addresses, served to
// pending one-time join peers only.
const JoinPort = 7101

// DefaultJoinTimeout bounds reaching the inviter and its answer when JoinConfig leaves it zero.
const DefaultJoinTimeout = 30 * time.Second

// joinRetry paces the joiner's retries while the inviter has no quorum or the answer was lost.
const joinRetry = time.Second

// JoinConfig configures JoinMesh.
type JoinConfig struct {
	// Token is the parsed join token. Required.
	Token mesh.Token
	// Name is the new gateway's name. Required.
	Name string
	// PublicKey is the new gateway's own key (its private half goes into its state after a
	// successful join). Required.
	PublicKey wgtypes.Key
	// Endpoint is the new gateway's HOST:PORT, canonical (enroll.ParseEndpoint). Required.
	Endpoint string
	// Timeout bounds the whole join; zero: DefaultJoinTimeout.
	Timeout time.Duration
	// Resolve turns the token's endpoint HOST:PORT into an address; nil: the system resolver.
	Resolve func(ctx context.Context, hostport string) (netip.AddrPort, error)
	// Logf receives progress and the temporary device's verbose log; nil discards.
	Logf func(format string, args ...any)
	// Now is the clock the token's expiry is checked against; nil: time.Now.
	Now func() time.Time
}

// UnreachableError is a join that never reached the inviter's join port.
type UnreachableError struct {
	Endpoint string         // the token's endpoint, as written
	Addr     netip.AddrPort // what it resolved to
	Timeout  time.Duration
	// Handshake is true when WireGuard reached the inviter but its join port did not answer.
	Handshake bool
	Err       error
}

func (e *UnreachableError) Error() string {
	if e.Handshake {
		return fmt.Sprintf("join: the inviter at %s (%v) answered WireGuard but not its join port within %v: the invitation was probably withdrawn (the inviter restarted, or the token expired there); ask for a new token (%v)",
			e.Endpoint, e.Addr, e.Timeout, e.Err)
	}
	return fmt.Sprintf("join: inviter unreachable: no WireGuard handshake with %s (%v) within %v: is `printgate run` up there, and UDP port %d open to this machine? "+
		"An inviter also stops answering a token once it has expired, was used, or when the inviter restarted since `mesh invite` (%v)",
		e.Endpoint, e.Addr, e.Timeout, e.Addr.Port(), e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// JoinMesh joins the mesh that issued cfg.Token and returns the inviter's answer. An
// expired token is refused before any packet is sent.
func JoinMesh(ctx context.Context, cfg JoinConfig) (mesh.JoinAnswer, error) {
	now := time.Now
	if cfg.Now != nil {
		now = cfg.Now
	}
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	tok := cfg.Token
	if tok.Expired(now()) {
		return mesh.JoinAnswer{}, fmt.Errorf("join: %w: the token expired at %s; ask for a new one (`printgate mesh invite` on a gateway of the mesh)",
			mesh.ErrTokenExpired, tok.Expires.UTC().Format(time.RFC3339))
	}
	req := mesh.JoinRequest{Token: tok.PublicKey(), Name: cfg.Name, PublicKey: mesh.Key(cfg.PublicKey), Endpoint: cfg.Endpoint}
	if err := req.Check(); err != nil {
		return mesh.JoinAnswer{}, fmt.Errorf("join: %w", err)
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultJoinTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	resolve := cfg.Resolve
	if resolve == nil {
		resolve = func(ctx context.Context, hostport string) (netip.AddrPort, error) {
			return tunnel.ResolveEndpoint(ctx, nil, hostport)
		}
	}
	ep, err := resolve(ctx, tok.InviterEndpoint)
	if err != nil {
		return mesh.JoinAnswer{}, fmt.Errorf("join: inviter endpoint %s: %w", tok.InviterEndpoint, err)
	}

	// The temporary tunnel: the one-time address, the one-time key, the inviter alone.
	stack, err := netstack.New(netstack.Config{Addrs: []netip.Addr{tok.Address}, Logf: logf})
	if err != nil {
		return mesh.JoinAnswer{}, fmt.Errorf("join: %w", err)
	}
	defer stack.Close()
	dev, err := tunnel.New(tunnel.Config{PrivateKey: wgtypes.Key(tok.PrivateKey), TUN: stack.TUN(), Logf: logf})
	if err != nil {
		return mesh.JoinAnswer{}, fmt.Errorf("join: %w", err)
	}
	defer dev.Close() // before the stack (deferred earlier, runs later)
	inviter := netip.PrefixFrom(tok.InviterAddr, tok.InviterAddr.BitLen())
	if err := dev.Apply([]tunnel.Peer{{PublicKey: wgtypes.Key(tok.InviterKey), AllowedIPs: []netip.Prefix{inviter},
		Endpoint: ep, PersistentKeepalive: 5 * time.Second}}); err != nil {
		return mesh.JoinAnswer{}, fmt.Errorf("join: %w", err)
	}
	logf("join: temporary tunnel from %v to the inviter %v at %s (%v)", tok.Address, tok.InviterAddr, tok.InviterEndpoint, ep)

	// The conversation, again (same key, same name: the inviter answers a retry as the first
	// time) while the answer is lost or the mesh has no quorum yet, until the timeout. A
	// refusal ends it at once.
	var a mesh.JoinAnswer
	for attempt := 1; ; attempt++ {
		c, err := stack.DialTCP(ctx, netip.AddrPortFrom(tok.InviterAddr, JoinPort))
		if err != nil {
			return mesh.JoinAnswer{}, &UnreachableError{Endpoint: tok.InviterEndpoint, Addr: ep, Timeout: timeout, Handshake: handshaken(dev), Err: err}
		}
		a, err = mesh.Join(ctx, c, req)
		c.Close()
		if err == nil {
			break
		}
		retry := errors.Is(err, mesh.ErrNoQuorum) || !isRefusal(err)
		if !retry {
			return mesh.JoinAnswer{}, err
		}
		logf("join: attempt %d: %v; trying again", attempt, err)
		select {
		case <-ctx.Done():
			return mesh.JoinAnswer{}, fmt.Errorf("join: the inviter at %s gave no answer within %v (its mesh may have no quorum: are a majority of its gateways running?): %w", tok.InviterEndpoint, timeout, err)
		case <-time.After(joinRetry):
		}
	}
	if !hasGateway(a.Gateways, tok.InviterKey) {
		return mesh.JoinAnswer{}, fmt.Errorf("join: the answer does not list the inviter (key %v) among the mesh's gateways: %w", tok.InviterKey, mesh.ErrInvalid)
	}
	logf("join: joined as %s (%v, %v), %d gateways", a.Gateway.Name, a.Gateway.IPv4, a.Gateway.IPv6, len(a.Gateways))
	return a, nil
}

// isRefusal reports whether err is the inviter's answer rather than a failure to get one.
func isRefusal(err error) bool {
	for _, e := range []error{mesh.ErrTokenUsed, mesh.ErrTokenExpired, mesh.ErrNotFound, mesh.ErrExists, mesh.ErrNoQuorum, mesh.ErrNoMesh, mesh.ErrInvalid} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func handshaken(dev *tunnel.Device) bool {
	st, err := dev.Stats()
	if err != nil {
		return false
	}
	for _, s := range st {
		if !s.LastHandshake.IsZero() {
			return true
		}
	}
	return false
}

func hasGateway(gs []mesh.Gateway, k mesh.Key) bool {
	for _, g := range gs {
		if g.PublicKey == k {
			return true
		}
	}
	return false
}
