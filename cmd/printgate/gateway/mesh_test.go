package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/mesh"
)

// TestUpgradeInPlace: a state directory made and used before the mesh (devices active,
// pending, revoked, a name enrolled again after its revocation, printers) becomes a mesh of
// one at its first start, keeping every name, key, address, API key and printer address;
// a second start finds the mesh and changes nothing.
func TestUpgradeInPlace(t *testing.T) {
	dir := newState(t)
	reg, err := enroll.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	must := func(e *enroll.Enrollment, err error) *enroll.Enrollment {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	phone := must(reg.Enroll(enroll.Request{Name: "phone", Role: enroll.Operator, APIKeyRole: enroll.Viewer}))
	old := must(reg.Enroll(enroll.Request{Name: "laptop", Role: enroll.Admin}))
	if _, err := reg.Revoke("laptop"); err != nil {
		t.Fatal(err)
	}
	laptop := must(reg.Enroll(enroll.Request{Name: "laptop", Role: enroll.Admin}))
	gone := must(reg.Enroll(enroll.Request{Name: "tablet"}))
	if _, err := reg.Revoke("tablet"); err != nil {
		t.Fatal(err)
	}
	mk4, err := reg.AllocatePrinterAddr("mk4")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.AllocatePrinterAddr("spare"); err != nil {
		t.Fatal(err)
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}

	g, err := Start(context.Background(), Config{StateDir: dir, StatsInterval: 50 * time.Millisecond, Logf: t.Logf,
		Printers: []PrinterSpec{{Name: "mk4", Port: SimPort}}})
	if err != nil {
		t.Fatal(err)
	}
	check := func(g *Gateway) {
		t.Helper()
		r := g.node.Roster()
		if gws := r.Gateways(); len(gws) != 1 || gws[0].Name != g.Name() || gws[0].IPv4 != g.Addrs()[0] || gws[0].PublicKey != mesh.Key(g.PublicKey()) {
			t.Errorf("gateways %+v, want this one at %v", gws, g.Addrs()[0])
		}
		for _, want := range []struct {
			e     *enroll.Enrollment
			name  string
			state mesh.State
		}{{phone, "phone", mesh.Active}, {laptop, "laptop", mesh.Active}, {old, "laptop.1", mesh.Revoked}, {gone, "tablet", mesh.Revoked}} {
			d, ok := r.Device(want.name)
			if !ok || d.State != want.state || d.PublicKey != mesh.Key(want.e.Peer.PublicKey) || d.IPv4 != want.e.Peer.IPv4 ||
				d.IPv6 != want.e.Peer.IPv6 || string(d.APIKeyHash) != string(want.e.Peer.APIKeyHash) || d.Home != g.Name() {
				t.Errorf("device %s = %+v, %v; want %s with the registry's key, addresses and API key hash", want.name, d, ok, want.state)
			}
		}
		if d, _ := r.Device("phone"); d.APIKeyRole != mesh.Viewer {
			t.Errorf("phone's API key role %q, want viewer", d.APIKeyRole)
		}
		if p, ok := r.Printer("mk4"); !ok || p.IPv4 != mk4.IPv4 || p.IPv6 != mk4.IPv6 {
			t.Errorf("printer mk4 = %+v, want %v", p, mk4)
		}
		if _, ok := r.Printer("spare"); !ok {
			t.Error("printer spare not carried")
		}
		if role, ok := (identity{g}).CheckAPIKey("phone", phone.APIKey); !ok || role != enroll.Viewer {
			t.Errorf("phone's API key after the upgrade: %v, %v", role, ok)
		}
	}
	check(g)
	// The next enrollment comes from the mesh's allocation, above every address the
	// registry handed out.
	e, err := g.Enroll(enroll.Request{Name: "watch"})
	if err != nil {
		t.Fatal(err)
	}
	if e.Peer.IPv4.Compare(gone.Peer.IPv4) <= 0 {
		t.Errorf("new enrollment at %v, not above the old high-water mark %v", e.Peer.IPv4, gone.Peer.IPv4)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}

	g, err = Start(context.Background(), Config{StateDir: dir, StatsInterval: 50 * time.Millisecond, Logf: t.Logf,
		Printers: []PrinterSpec{{Name: "mk4", Port: SimPort}}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	check(g)
	if st := g.Status(); len(st.Printers) != 1 || st.Printers[0].Address != mk4.IPv4.String() || st.Printers[0].Gateway != g.Name() {
		t.Errorf("status printers %+v", st.Printers)
	}
}

// TestEnrollWithoutQuorum: a gateway whose mesh lost its majority refuses an enrollment with
// a message that says "quorum" (ErrUnavailable: 503 on the web API), keeps serving what it
// has, and still revokes.
func TestEnrollWithoutQuorum(t *testing.T) {
	dir := newState(t)
	g := startGateway(t, dir)
	if _, err := g.Enroll(enroll.Request{Name: "phone"}); err != nil {
		t.Fatal(err)
	}
	adminEn, err := g.Enroll(enroll.Request{Name: "admin", Role: enroll.Admin})
	if err != nil {
		t.Fatal(err)
	}
	admin := newClient(t, adminEn.Config)
	ac := admin.httpClient(false)
	ac.Timeout = time.Minute // an enrollment without quorum takes the commit bound to fail
	base := "http://" + g.Addrs()[0].String()
	waitFor(t, "admin through the tunnel", func() bool { _, err := get(ac, base+"/api/v1/whoami"); return err == nil })
	// A second member that never answers: the mesh of two has no majority without it.
	k := mesh.Key(g.PublicKey())
	k[0] ^= 1
	ctx := context.Background()
	if _, err := g.node.AddGateway(ctx, mesh.AddGatewayCmd{Name: "away", PublicKey: k, Endpoint: "127.0.0.1:9"}); err != nil {
		t.Fatal(err)
	}
	away, _ := g.node.Roster().Gateway("away")
	if err := g.node.AddVoter(ctx, "away", netip.AddrPortFrom(away.IPv4, MeshPort).String()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an enrollment refused for want of quorum", func() bool {
		_, err = g.Enroll(enroll.Request{Name: "late"})
		return err != nil
	})
	if !errors.Is(err, enroll.ErrUnavailable) || !strings.Contains(err.Error(), "quorum") {
		t.Errorf("enroll without quorum = %v, want ErrUnavailable saying quorum", err)
	}
	// The web API answers 503, saying quorum.
	req, _ := http.NewRequest("POST", base+"/api/v1/devices", strings.NewReader(`{"name":"web-late","role":"viewer"}`))
	req.Header.Set("X-Printgate", "1")
	req.Header.Set("Content-Type", "application/json")
	resp, err := ac.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "quorum") {
		t.Errorf("POST /api/v1/devices without quorum = %s %s, want 503 saying quorum", resp.Status, body)
	}
	ph, _ := g.node.Roster().Device("phone")
	if p, ok := g.WhoIs(ph.IPv4); !ok || p.Name != "phone" {
		t.Errorf("WhoIs(phone) without quorum = %v, %v; want phone still served", p, ok)
	}
	res, err := g.Revoke("phone")
	if err != nil || !res.MeshPending {
		t.Errorf("revoke without quorum = %+v, %v; want applied here, pending in the mesh", res, err)
	}
	if _, ok := g.WhoIs(ph.IPv4); ok {
		t.Error("phone still identified after its revocation")
	}
	if _, err := os.Stat(filepath.Join(dir, MeshDir, mesh.FileRevocations)); err != nil {
		t.Errorf("no pending revocation on disk: %v", err)
	}
}

// TestOfflineAfterMesh: with the gateway stopped, the CLI's writes go through the mesh node
// opened in-process: a mesh of one commits, and the gateway started again serves the device
// enrolled meanwhile and not the one revoked.
func TestOfflineAfterMesh(t *testing.T) {
	dir := newState(t)
	g := startGateway(t, dir)
	if _, err := g.Enroll(enroll.Request{Name: "phone"}); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	reg, err := enroll.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	off, err := OpenOffline(reg, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	e, err := off.Enroll(enroll.Request{Name: "laptop", Role: enroll.Admin})
	if err != nil {
		t.Fatalf("offline enroll in a mesh of one: %v", err)
	}
	if _, pending, err := off.Revoke("phone"); err != nil || pending {
		t.Fatalf("offline revoke in a mesh of one = pending %v, %v", pending, err)
	}
	if err := off.Close(); err != nil {
		t.Fatal(err)
	}
	peers := OfflinePeers(reg)
	states := map[string]enroll.State{}
	for _, p := range peers {
		states[p.Name] = p.State
	}
	if states["phone"] != enroll.Revoked || states["laptop"] != enroll.Pending {
		t.Errorf("offline peers %v", states)
	}
	reg.Close()

	g = startGateway(t, dir)
	d, ok := g.node.Roster().Device("laptop")
	if !ok || d.IPv4 != e.Peer.IPv4 || d.State != mesh.Active {
		t.Errorf("laptop in the mesh after restart = %+v, %v", d, ok)
	}
	if p, ok := g.WhoIs(e.Peer.IPv4); !ok || p.Name != "laptop" {
		t.Errorf("WhoIs(laptop) after restart = %v, %v", p, ok)
	}
	if !g.view().onDev[e.Peer.PublicKey] {
		t.Error("laptop, enrolled offline, is not on the device after restart")
	}
}

// TestJoinPeerHook: a one-time join peer stays on the device across re-applies until it is
// removed or expires, and only its address passes isJoinAddr.
func TestJoinPeerHook(t *testing.T) {
	g := startGateway(t, newState(t))
	onDevice := func(k wgtypes.Key) bool {
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
	priv, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	k, addr := priv.PublicKey(), netip.MustParseAddr("10.77.0.60")
	if err := g.addJoinPeer(k, addr, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	g.tick() // a re-apply
	if !onDevice(k) || !g.isJoinAddr(addr) || g.isJoinAddr(netip.MustParseAddr("10.77.0.61")) {
		t.Errorf("join peer: on device %v, isJoinAddr %v", onDevice(k), g.isJoinAddr(addr))
	}
	if err := g.removeJoinPeer(k); err != nil {
		t.Fatal(err)
	}
	if onDevice(k) || g.isJoinAddr(addr) {
		t.Error("join peer still there after removeJoinPeer")
	}
	if err := g.addJoinPeer(k, addr, time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if onDevice(k) || g.isJoinAddr(addr) {
		t.Error("an expired join peer is on the device")
	}
}

// TestStaleHomedDeviceRevoked: a device the mesh has homed here without a local record (an
// enrollment whose local write never happened) is revoked in the mesh by the gateway.
func TestStaleHomedDeviceRevoked(t *testing.T) {
	dir := newState(t)
	g := startGateway(t, dir)
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	reg, err := enroll.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	off, err := OpenOffline(reg, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	priv, _ := wgtypes.GeneratePrivateKey()
	name := reg.Gateway().Name
	if _, err := off.node.Enroll(context.Background(), mesh.EnrollCmd{Name: "ghost", Role: mesh.Viewer, PublicKey: mesh.Key(priv.PublicKey()), Home: name}); err != nil {
		t.Fatal(err)
	}
	off.Close()
	reg.Close()
	g = startGateway(t, dir)
	waitFor(t, "the unfinished enrollment revoked in the mesh", func() bool {
		d, ok := g.node.Roster().Device("ghost")
		return ok && d.State == mesh.Revoked
	})
}

// TestAnnounceEndpoint: a gateway started with a new endpoint tells the mesh.
func TestAnnounceEndpoint(t *testing.T) {
	dir := newState(t)
	g := startGateway(t, dir)
	g.Close()
	g, err := Start(context.Background(), Config{StateDir: dir, Endpoint: "gw.example.org:4444", StatsInterval: 50 * time.Millisecond, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	waitFor(t, "the new endpoint in the mesh", func() bool {
		self, ok := g.node.Roster().Gateway(g.Name())
		return ok && self.Endpoint == "gw.example.org:4444"
	})
}

// TestRestartWithoutReplicaFile: a mesh of one whose replica file is gone (a crash right after
// its bootstrap) starts again from raft's own state, devices kept.
func TestRestartWithoutReplicaFile(t *testing.T) {
	dir := newState(t)
	g := startGateway(t, dir)
	e, err := g.Enroll(enroll.Request{Name: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	g.Close()
	if err := os.Remove(filepath.Join(dir, MeshDir, mesh.FileReplica)); err != nil {
		t.Fatal(err)
	}
	g = startGateway(t, dir)
	waitFor(t, "phone back from raft's log", func() bool {
		d, ok := g.node.Roster().Device("phone")
		return ok && d.IPv4 == e.Peer.IPv4 && d.State == mesh.Active
	})
}

// TestOfflineJoinedNotAdded: a state directory that joined a mesh (join.json) but was never
// reached refuses an offline enrollment instead of recording a device the mesh never saw.
func TestOfflineJoinedNotAdded(t *testing.T) {
	dir := newState(t)
	if err := WriteJoinFile(dir, JoinFile{Name: "gw-b"}); err != nil {
		t.Fatal(err)
	}
	if jf, err := ReadJoinFile(dir); err != nil || jf.Name != "gw-b" {
		t.Fatalf("ReadJoinFile = %+v, %v", jf, err)
	}
	reg, err := enroll.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if _, err := reg.SetName("gw-b"); err != nil {
		t.Fatal(err)
	}
	off, err := OpenOffline(reg, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer off.Close()
	_, err = off.Enroll(enroll.Request{Name: "phone"})
	if err == nil || !strings.Contains(err.Error(), "quorum") || !strings.Contains(err.Error(), "joined a mesh") {
		t.Errorf("offline enroll on a joined gateway never added = %v", err)
	}
	if _, ok := reg.Peer("phone"); ok {
		t.Error("the registry recorded a device the mesh never saw")
	}
}
