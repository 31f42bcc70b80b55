package gateway

// Inviting a gateway into the mesh (`printgate mesh invite`), the inviter's side:
//
//  1. Invite: a one-time key pair and a one-time tunnel address (offset 51 to 99 of the IPv4
//     prefix, which the mesh's plan never hands out, unique among this gateway's pending
//     invitations), the token's public half recorded in the mesh (AddJoinToken: quorum), the
//     one-time peer put on this gateway's WireGuard device (AllowedIPs its /32) until the
//     token is used or expires, and the join port listening (lazily, on the first invite)
//  2. the join port, GATEWAYADDR4:7101 in the netstack: a connection from an address that is
//     not a pending one-time peer's is closed at once; from one, it runs the join protocol
//     (mesh.Node.ServeJoin) authenticated as that peer's key
//  3. the token's expiry (a timer) takes the one-time peer off the device, and so does a
//     refusal for good (expired, unknown); after a successful join the peer stays for
//     usedGrace at most, so that a joiner whose answer was lost can ask again (the same
//     answer) and a second use of the token is told it was used, instead of hearing nothing
//
// Pending invitations live in memory: a restart of the inviter withdraws them (the token is
// then refused as unreachable, and a new one is needed).

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/control"
	"github.com/printgate/printgate/mesh"
	"github.com/printgate/printgate/printerd/audit"
)

// DefaultInviteTTL is how long a join token lives when the caller gives no TTL.
const DefaultInviteTTL = 15 * time.Minute

// MaxInviteTTL bounds a join token's life: it is a secret that admits a gateway.
const MaxInviteTTL = 7 * 24 * time.Hour

// The one-time addresses: offsets the mesh's address plan leaves free (mesh/alloc.go).
const (
	firstInviteOffset = 51
	lastInviteOffset  = 99
)

// joinServeTimeout bounds one join conversation on the join port.
const joinServeTimeout = 60 * time.Second

// usedGrace is how long a used invitation's one-time peer stays (at most until its expiry).
const usedGrace = time.Minute

// invites are this gateway's pending invitations and the join port serving them.
type invites struct {
	sync.Mutex
	byAddr map[netip.Addr]*invite
	ln     net.Listener // the join port; nil until the first invitation
	closed bool
	wg     sync.WaitGroup // the accept loop and its connections
}

// invite is one pending invitation: a one-time peer waiting to join.
type invite struct {
	key     wgtypes.Key // the one-time public key
	addr    netip.Addr  // its one-time tunnel address
	expires time.Time
	timer   *time.Timer // withdraws it at expiry
	busy    bool        // a join conversation is running (or the mesh is recording it)
	conn    net.Conn    // the join conversation's connection while busy
	used    bool        // a gateway joined with it: withdrawn after usedGrace
}

// Invite makes a join token valid for ttl (zero: DefaultInviteTTL): recorded in the mesh
// (which needs quorum; without it the error wraps enroll.ErrUnavailable), its one-time peer
// on the device until used or expired. The audit log records it as done by the local
// operator (the control socket), the intent first; the token itself is never recorded.
func (g *Gateway) Invite(ctx context.Context, ttl time.Duration) (mesh.Token, error) {
	in, err := g.begin(audit.ActionMeshInvite, map[string]string{"ttl": ttl.String()})
	if err != nil {
		return mesh.Token{}, err
	}
	tok, err := g.invite(ctx, ttl)
	actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var extra map[string]string
	if err == nil {
		extra = map[string]string{"one_time_address": tok.Address.String(), "expires": tok.Expires.UTC().Format(time.RFC3339)}
	}
	if aerr := in.End(actx, err, extra); aerr != nil {
		g.logf("gateway: audit outcome: %v (the intent is on record)", aerr)
	}
	return tok, err
}

// invite is Invite without the audit record (printerd records its callers' own).
func (g *Gateway) invite(ctx context.Context, ttl time.Duration) (mesh.Token, error) {
	if ttl == 0 {
		ttl = DefaultInviteTTL
	}
	if ttl < time.Minute || ttl > MaxInviteTTL {
		return mesh.Token{}, fmt.Errorf("mesh invite: ttl %v: want 1m to %v: %w", ttl, MaxInviteTTL, enroll.ErrInvalid)
	}
	if g.node == nil {
		return mesh.Token{}, fmt.Errorf("mesh invite: %w", net.ErrClosed)
	}
	if !g.node.Roster().Initialized() {
		return mesh.Token{}, fmt.Errorf("mesh invite: this gateway is not a member of a mesh yet (it joined and waits to be reached by one): %w", mesh.ErrNoMesh)
	}
	// Reserve a one-time address (busy: the join port refuses it) while the mesh commits.
	inv, err := g.reserveInvite()
	if err != nil {
		return mesh.Token{}, err
	}
	addr := inv.addr
	tok, err := mesh.NewToken(g.now().Add(ttl), addr, mesh.Key(g.gw.PublicKey()), g.gw.Addr4(), g.gw.Endpoint)
	if err != nil {
		g.dropInvite(inv)
		return mesh.Token{}, fmt.Errorf("mesh invite: %w", err)
	}
	pub := wgtypes.Key(tok.PublicKey())
	g.invites.Lock()
	inv.key, inv.expires = pub, tok.Expires
	g.invites.Unlock()
	if _, err := g.node.AddJoinToken(ctx, mesh.AddTokenCmd{PublicKey: tok.PublicKey(), Inviter: g.gw.Name, Expires: tok.Expires}); err != nil {
		g.dropInvite(inv)
		return mesh.Token{}, fmt.Errorf("mesh invite: %w", meshError(err))
	}
	if err := g.addJoinPeer(pub, addr, tok.Expires); err != nil {
		g.dropInvite(inv)
		return mesh.Token{}, fmt.Errorf("mesh invite: one-time peer: %w", err)
	}
	g.invites.Lock()
	inv.busy = false
	inv.timer = time.AfterFunc(time.Until(tok.Expires), func() { g.withdraw(inv, "expired or used") })
	g.invites.Unlock()
	g.logf("gateway: mesh invite: join token for a one-time peer at %v, valid until %s", addr, tok.Expires.UTC().Format(time.RFC3339))
	return tok, nil
}

// reserveInvite picks a random free one-time address and records a busy invitation for it,
// and makes sure the join port listens.
func (g *Gateway) reserveInvite() (*invite, error) {
	p := g.gw.Prefix4.Masked()
	base := p.Addr().As4()
	n := binary.BigEndian.Uint32(base[:])
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		return nil, fmt.Errorf("mesh invite: %w", err)
	}
	span := uint32(lastInviteOffset - firstInviteOffset + 1)
	start := binary.BigEndian.Uint32(r[:]) % span

	g.invites.Lock()
	defer g.invites.Unlock()
	if g.invites.closed {
		return nil, fmt.Errorf("mesh invite: %w", net.ErrClosed)
	}
	var addr netip.Addr
	for i := range span {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], n+firstInviteOffset+(start+i)%span)
		if a := netip.AddrFrom4(b); g.invites.byAddr[a] == nil && p.Contains(a) {
			addr = a
			break
		}
	}
	if !addr.IsValid() {
		return nil, fmt.Errorf("mesh invite: %d invitations pending already; wait until some are used or expire", span)
	}
	if g.invites.ln == nil {
		ln, err := g.stack.ListenTCP(netip.AddrPortFrom(g.gw.Addr4(), JoinPort))
		if err != nil {
			return nil, fmt.Errorf("mesh invite: join port: %w", err)
		}
		g.invites.ln = ln
		g.invites.wg.Add(1)
		go g.serveJoins(ln)
	}
	if g.invites.byAddr == nil {
		g.invites.byAddr = map[netip.Addr]*invite{}
	}
	inv := &invite{addr: addr, busy: true}
	g.invites.byAddr[addr] = inv
	return inv, nil
}

// dropInvite forgets inv (its one-time peer was never added).
func (g *Gateway) dropInvite(inv *invite) {
	g.invites.Lock()
	defer g.invites.Unlock()
	if g.invites.byAddr[inv.addr] == inv {
		delete(g.invites.byAddr, inv.addr)
	}
}

// withdraw forgets inv and takes its one-time peer off the device (closing its connections).
func (g *Gateway) withdraw(inv *invite, why string) {
	g.invites.Lock()
	mine := g.invites.byAddr[inv.addr] == inv
	if mine {
		delete(g.invites.byAddr, inv.addr)
	}
	if inv.timer != nil {
		inv.timer.Stop()
	}
	g.invites.Unlock()
	if !mine {
		return
	}
	if err := g.removeJoinPeer(inv.key); err != nil && !errors.Is(err, net.ErrClosed) {
		g.logf("gateway: mesh invite: remove the one-time peer at %v: %v", inv.addr, err)
	}
	g.verbosef("gateway: mesh invite: one-time peer at %v withdrawn (%s)", inv.addr, why)
}

// serveJoins accepts on the join port until it closes. Owned by the Gateway (invites.wg).
func (g *Gateway) serveJoins(ln net.Listener) {
	defer g.invites.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		var a netip.Addr
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			a = ta.AddrPort().Addr().Unmap()
		}
		g.invites.Lock()
		inv, ok := g.invites.byAddr[a]
		if ok && (inv.busy || !g.now().Before(inv.expires)) {
			ok = false
		}
		if ok {
			inv.busy, inv.conn = true, c
			g.invites.wg.Add(1)
		}
		g.invites.Unlock()
		if !ok {
			g.verbosef("gateway: join port: connection from %v refused: not a pending one-time peer", a)
			c.Close()
			continue
		}
		go func() {
			defer g.invites.wg.Done()
			g.serveJoin(c, inv)
		}()
	}
}

// serveJoin runs one join conversation with the one-time peer inv.
func (g *Gateway) serveJoin(c net.Conn, inv *invite) {
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), joinServeTimeout)
	defer cancel()
	err := g.node.ServeJoin(ctx, c, mesh.Key(inv.key), func(gw mesh.Gateway) string {
		return netip.AddrPortFrom(gw.IPv4, MeshPort).String()
	})
	switch {
	case err == nil:
		g.logf("gateway: mesh invite: a gateway joined through the one-time peer at %v", inv.addr)
		g.invites.Lock()
		inv.busy, inv.conn = false, nil
		if !inv.used && inv.timer != nil {
			inv.used = true
			inv.timer.Reset(min(time.Until(inv.expires), usedGrace))
		}
		g.invites.Unlock()
	case errors.Is(err, mesh.ErrTokenExpired), errors.Is(err, mesh.ErrNotFound):
		g.logf("gateway: mesh invite: join from %v refused: %v", inv.addr, err)
		// Let the refusal reach the joiner before its peer goes (which resets the
		// connection): it hangs up once it has read it.
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, io.LimitReader(c, 1<<16))
		g.withdraw(inv, "refused")
	default:
		g.logf("gateway: mesh invite: join from %v failed (it may try again): %v", inv.addr, err)
		g.invites.Lock()
		inv.busy, inv.conn = false, nil
		g.invites.Unlock()
	}
}

// closeInvites stops the join port and every invitation's timer; Close calls it before the
// mesh node closes.
func (g *Gateway) closeInvites() {
	g.invites.Lock()
	g.invites.closed = true
	if g.invites.ln != nil {
		g.invites.ln.Close()
	}
	for _, inv := range g.invites.byAddr {
		if inv.timer != nil {
			inv.timer.Stop()
		}
		if inv.conn != nil {
			inv.conn.Close()
		}
	}
	g.invites.Unlock()
	g.invites.wg.Wait()
}

// inviteResult is the control socket's answer to mesh-invite.
func inviteResult(tok mesh.Token) control.InviteResult {
	return control.InviteResult{Token: tok.Encode(), Expires: tok.Expires, Address: tok.Address, Endpoint: tok.InviterEndpoint}
}

// meshInviter is the gateway's Invite as printerd's admin API calls it (printerd records
// the audit entry with the calling device).
type meshInviter struct{ g *Gateway }

func (m meshInviter) Invite(ctx context.Context, ttl time.Duration) (string, time.Time, error) {
	tok, err := m.g.invite(ctx, ttl)
	if err != nil {
		return "", time.Time{}, err
	}
	return tok.Encode(), tok.Expires, nil
}
