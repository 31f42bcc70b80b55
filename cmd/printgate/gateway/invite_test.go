package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/mesh"
)

// meshWait bounds what the mesh tests wait for: generous for a loaded 2-core machine under
// -race. Tests assert that things happen, never how fast.
const meshWait = 90 * time.Second

// newNamedState initializes a state directory for gateway name whose peers dial 127.0.0.1.
func newNamedState(t testing.TB, name string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	port := freeUDPPort(t)
	if _, err := enroll.Init(dir, enroll.InitOptions{Endpoint: fmt.Sprintf("127.0.0.1:%d", port), ListenPort: port, Name: name}); err != nil {
		t.Fatalf("enroll.Init: %v", err)
	}
	return dir
}

// joinState joins the mesh of tok as name and writes its state as `init --join` does.
func joinState(t *testing.T, tok mesh.Token, name string) (string, mesh.JoinAnswer) {
	t.Helper()
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	port := freeUDPPort(t)
	ep := fmt.Sprintf("127.0.0.1:%d", port)
	a, err := JoinMesh(context.Background(), JoinConfig{Token: tok, Name: name, PublicKey: key.PublicKey(), Endpoint: ep, Timeout: meshWait})
	if err != nil {
		t.Fatalf("join as %s: %v", name, err)
	}
	dir := filepath.Join(t.TempDir(), name)
	if err := WriteJoinFile(dir, JoinFile{Name: name, Gateways: a.Gateways}); err != nil {
		t.Fatal(err)
	}
	if _, err := enroll.Init(dir, enroll.InitOptions{Endpoint: ep, ListenPort: port, Prefix4: a.Prefix4, Prefix6: a.Prefix6,
		Name: name, Addr4: a.Gateway.IPv4, Addr6: a.Gateway.IPv6, PrivateKey: key}); err != nil {
		t.Fatal(err)
	}
	return dir, a
}

func waitMesh(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(meshWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mustInvite makes a join token on g, again while the mesh has no quorum yet (an election).
func mustInvite(t *testing.T, g *Gateway) mesh.Token {
	t.Helper()
	var tok mesh.Token
	waitMesh(t, "an invitation", func() bool {
		var err error
		tok, err = g.Invite(context.Background(), 0)
		if err != nil && !errors.Is(err, mesh.ErrNoQuorum) {
			t.Fatalf("Invite: %v", err)
		}
		return err == nil
	})
	return tok
}

func onDevice(t *testing.T, g *Gateway, k wgtypes.Key) bool {
	t.Helper()
	st, err := g.dev.Stats()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.PublicKey == k {
			return true
		}
	}
	return false
}

// TestInviteJoinRun: a gateway invites, a new one joins with the token and runs, and the two
// form a mesh that commits writes; the token works once; the join port serves only pending
// one-time peers.
func TestInviteJoinRun(t *testing.T) {
	a := startGateway(t, newNamedState(t, "gw1"))
	tok := mustInvite(t, a)
	if tok.InviterAddr != a.Addrs()[0] || tok.InviterKey != mesh.Key(a.PublicKey()) {
		t.Errorf("token names inviter %v %v, want %v %v", tok.InviterAddr, tok.InviterKey, a.Addrs()[0], a.PublicKey())
	}
	if off := int(tok.Address.As4()[3]) - int(a.gw.Prefix4.Addr().As4()[3]); off < firstInviteOffset || off > lastInviteOffset {
		t.Errorf("one-time address %v is not at offset 51 to 99", tok.Address)
	}
	recs, err := a.audit.Tail(10)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := json.Marshal(recs)
	if !strings.Contains(string(rb), `"mesh.invite"`) || strings.Contains(string(rb), mesh.TokenPrefix) {
		t.Errorf("audit log: %s; want a mesh.invite record without the token", rb)
	}
	one := wgtypes.Key(tok.PublicKey())
	if !onDevice(t, a, one) {
		t.Fatal("the one-time peer is not on the inviter's device")
	}

	dir, ans := joinState(t, tok, "gw2")
	if ans.Gateway.Name != "gw2" || !ans.Prefix4.Contains(ans.Gateway.IPv4) || len(ans.Gateways) != 2 {
		t.Fatalf("join answer %+v", ans)
	}

	// A second use of the token is refused as such while the used peer lingers.
	k3, _ := wgtypes.GeneratePrivateKey()
	_, err = JoinMesh(context.Background(), JoinConfig{Token: tok, Name: "gw3", PublicKey: k3.PublicKey(), Endpoint: "127.0.0.1:9", Timeout: meshWait})
	if !errors.Is(err, mesh.ErrTokenUsed) {
		t.Errorf("second use of the token = %v, want ErrTokenUsed", err)
	}
	t.Logf("second use: %v", err)

	b := startGateway(t, dir)
	if b.Addrs()[0] != ans.Gateway.IPv4 || b.Name() != "gw2" {
		t.Errorf("the joined gateway runs as %s at %v, want gw2 at %v", b.Name(), b.Addrs(), ans.Gateway.IPv4)
	}
	waitMesh(t, "two voters agreeing on a leader, with quorum", func() bool {
		sa, sb := a.node.Status(), b.node.Status()
		return len(sa.Servers) == 2 && len(sb.Servers) == 2 && sa.Leader != "" && sa.Leader == sb.Leader && sa.Quorum && sb.Quorum
	})
	// The new gateway enrolls through the mesh, and the inviter sees the device.
	waitMesh(t, "an enrollment on gw2", func() bool {
		_, err := b.Enroll(enroll.Request{Name: "phone", Role: enroll.Operator})
		if err != nil && !errors.Is(err, enroll.ErrUnavailable) {
			t.Fatalf("enroll on gw2: %v", err)
		}
		return err == nil
	})
	waitMesh(t, "the device on gw1's replica", func() bool {
		d, ok := a.node.Roster().Device("phone")
		return ok && d.Home == "gw2"
	})

	// The join port closes on anyone who is not a pending one-time peer: here gw2, a gateway.
	c, err := b.stack.DialTCP(context.Background(), netip.AddrPortFrom(a.Addrs()[0], JoinPort))
	if err == nil {
		c.SetDeadline(time.Now().Add(meshWait))
		n, rerr := c.Read(make([]byte, 1))
		c.Close()
		if n != 0 || rerr == nil {
			t.Errorf("join port from gw2: read %d, %v; want it closed", n, rerr)
		}
		if rerr != io.EOF {
			t.Logf("join port from gw2: %v", rerr)
		}
	}

	// The used one-time peer goes after its grace; withdraw is what its timer calls.
	var inv *invite
	waitMesh(t, "the used invitation pending its grace", func() bool {
		a.invites.Lock()
		defer a.invites.Unlock()
		inv = a.invites.byAddr[tok.Address]
		return inv != nil && inv.used
	})
	a.withdraw(inv, "test")
	if onDevice(t, a, one) {
		t.Error("the one-time peer is still on the inviter's device after its withdrawal")
	}
}

// TestInviteAddresses: one-time addresses are offsets 51 to 99 of the prefix, never two the
// same among pending invitations; past 49 pending, an invitation is refused.
func TestInviteAddresses(t *testing.T) {
	g := startGateway(t, newNamedState(t, "gw1"))
	seen := map[netip.Addr]bool{}
	base := g.gw.Prefix4.Masked().Addr().As4()
	for range lastInviteOffset - firstInviteOffset + 1 {
		inv, err := g.reserveInvite()
		if err != nil {
			t.Fatalf("reserve after %d: %v", len(seen), err)
		}
		if seen[inv.addr] {
			t.Fatalf("address %v handed out twice", inv.addr)
		}
		seen[inv.addr] = true
		a := inv.addr.As4()
		if off := int(a[3]) - int(base[3]); a[0] != base[0] || a[1] != base[1] || a[2] != base[2] || off < firstInviteOffset || off > lastInviteOffset {
			t.Errorf("one-time address %v is not at offset 51 to 99 of %v", inv.addr, g.gw.Prefix4)
		}
	}
	if _, err := g.reserveInvite(); err == nil {
		t.Error("a 50th pending invitation was not refused")
	}
	// A token shorter than a minute is refused before anything is recorded.
	if _, err := g.Invite(context.Background(), time.Second); !errors.Is(err, enroll.ErrInvalid) {
		t.Errorf("Invite with a 1s ttl = %v, want ErrInvalid", err)
	}
}

// TestJoinWaitsForQuorum: a join that meets a mesh without quorum (one of two gateways
// down) is asked again with the same key and name until the mesh can commit it, within the
// joiner's timeout.
func TestJoinWaitsForQuorum(t *testing.T) {
	a := startGateway(t, newNamedState(t, "gw1"))
	dirB, _ := joinState(t, mustInvite(t, a), "gw2")
	b := startGateway(t, dirB)
	// gw2 joined as a non-voter and promotes itself once caught up: wait for two voters, so
	// that stopping gw2 takes the quorum away.
	waitMesh(t, "a mesh of two voters with quorum", func() bool {
		voters := 0
		for _, s := range a.node.Status().Servers {
			if s.Voter {
				voters++
			}
		}
		return voters == 2 && a.node.Status().Quorum && b.node.Status().Quorum
	})
	tok := mustInvite(t, a)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// Without quorum an invitation is refused, saying so; nothing of it stays pending.
	if _, err := a.Invite(context.Background(), 0); !errors.Is(err, enroll.ErrUnavailable) || !strings.Contains(err.Error(), "quorum") {
		t.Errorf("invite without quorum = %v, want ErrUnavailable saying quorum", err)
	}
	a.invites.Lock()
	pending := 0
	for _, inv := range a.invites.byAddr {
		if !inv.used {
			pending++
		}
	}
	a.invites.Unlock()
	if pending != 1 {
		t.Errorf("%d unused invitations pending after a refused one, want 1 (the token made before)", pending)
	}

	refused := make(chan struct{})
	var once sync.Once
	key, _ := wgtypes.GeneratePrivateKey()
	done := make(chan error, 1)
	go func() {
		_, err := JoinMesh(context.Background(), JoinConfig{Token: tok, Name: "gw3", PublicKey: key.PublicKey(), Endpoint: "127.0.0.1:9",
			Timeout: meshWait, Logf: func(format string, args ...any) {
				if strings.HasPrefix(format, "join: attempt") {
					once.Do(func() { close(refused) })
				}
			}})
		done <- err
	}()
	select {
	case <-refused:
	case err := <-done:
		t.Fatalf("join while gw2 is down = %v, want it to wait for quorum", err)
	}
	b = startGateway(t, dirB)
	if err := <-done; err != nil {
		t.Fatalf("join once gw2 is back = %v", err)
	}
	waitMesh(t, "gw3 in gw2's replica", func() bool {
		_, ok := b.node.Roster().Gateway("gw3")
		return ok
	})
}
