package gateway

import (
	"context"
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/mesh"
)

// TestRelayPredicate: a device homed here to another gateway's printer or gateway address
// and back is relayed; device to device, this gateway's own printers, other gateways among
// themselves, revoked or foreign devices are not.
func TestRelayPredicate(t *testing.T) {
	dir := t.TempDir()
	n, err := mesh.Open(mesh.Config{ID: "gw-a", Dir: dir, Listener: mesh.OfflineListener("10.77.0.1:7100"), Dial: mesh.OfflineDial})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx := context.Background()
	key := func() mesh.Key {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		return mesh.Key(k.PublicKey())
	}
	if _, err := n.Bootstrap(ctx, mesh.InitCmd{Prefix4: netip.MustParsePrefix("10.77.0.0/22"),
		Gateway: mesh.AddGatewayCmd{Name: "gw-a", PublicKey: key(), Endpoint: "a.test:51820"}}); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err = n.AddGateway(ctx, mesh.AddGatewayCmd{Name: "gw-b", PublicKey: key(), Endpoint: "b.test:51820"})
	must(err)
	_, err = n.AddGateway(ctx, mesh.AddGatewayCmd{Name: "gw-c", PublicKey: key(), Endpoint: "c.test:51820"})
	must(err)
	pa, err := n.AddPrinter(ctx, "a-mk4", "gw-a")
	must(err)
	pb, err := n.AddPrinter(ctx, "b-mk4", "gw-b")
	must(err)
	here, err := n.Enroll(ctx, mesh.EnrollCmd{Name: "phone", Role: mesh.Viewer, PublicKey: key(), Home: "gw-a"})
	must(err)
	here2, err := n.Enroll(ctx, mesh.EnrollCmd{Name: "tablet", Role: mesh.Viewer, PublicKey: key(), Home: "gw-a"})
	must(err)
	there, err := n.Enroll(ctx, mesh.EnrollCmd{Name: "laptop", Role: mesh.Viewer, PublicKey: key(), Home: "gw-b"})
	must(err)
	r := n.Roster()
	gb, _ := r.Gateway("gw-b")
	gc, _ := r.Gateway("gw-c")
	ga, _ := r.Gateway("gw-a")

	applied := map[wgtypes.Key]enroll.DevicePeer{}
	for _, d := range []mesh.Device{here, here2} {
		applied[wgtypes.Key(d.PublicKey)] = enroll.DevicePeer{Name: d.Name, PublicKey: wgtypes.Key(d.PublicKey),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(d.IPv4, 32)}}
	}
	tab := buildRelayTable(r, "gw-a", applied)
	for _, c := range []struct {
		what     string
		src, dst netip.Addr
		want     bool
	}{
		{"device here to a printer of B", here.IPv4, pb.IPv4, true},
		{"printer of B back to the device here", pb.IPv4, here.IPv4, true},
		{"device here to gateway B", here.IPv4, gb.IPv4, true},
		{"gateway C back to the device here", gc.IPv4, here.IPv4, true},
		{"device to device here", here.IPv4, here2.IPv4, false},
		{"device here to a device homed on B", here.IPv4, there.IPv4, false},
		{"device homed on B to a printer of B", there.IPv4, pb.IPv4, false},
		{"gateway B to gateway C", gb.IPv4, gc.IPv4, false},
		{"device here to this gateway's own printer", here.IPv4, pa.IPv4, false},
		{"device here to this gateway", here.IPv4, ga.IPv4, false},
		{"an address outside the mesh", here.IPv4, netip.MustParseAddr("192.0.2.1"), false},
	} {
		if got := tab.allow(c.src, c.dst); got != c.want {
			t.Errorf("%s (%v → %v): allow = %v, want %v", c.what, c.src, c.dst, got, c.want)
		}
	}
	// A device off the device (revoked, expired) is not in the table any more.
	delete(applied, wgtypes.Key(here.PublicKey))
	if buildRelayTable(r, "gw-a", applied).allow(here.IPv4, pb.IPv4) {
		t.Error("a device no longer on the device is still relayed")
	}
	var nilTable *relayTable
	if nilTable.allow(here.IPv4, pb.IPv4) {
		t.Error("no table relays")
	}
}
