package e2e

import (
	"strconv"
	"testing"
	"time"

	"github.com/printgate/printgate/cmd/printgate/gateway"
)

// TestMeshLab checks the mesh's bench with three separate single gateways: each on the LAN
// with one UDP socket and no TCP one, a LAN client and a client wired straight to gw3 each
// reaching a printer through their tunnel, and a partition of gw3 that cuts the LAN and not
// the direct wire.
//
// Run: go test -count=1 -v -run 'TestMeshLab' ./cmd/printgate/e2e/
func TestMeshLab(t *testing.T) {
	requireRoot(t, "ip", "wg", "wg-quick", "wireguard-go", "curl")
	if !gateway.SimAvailable {
		t.Skip("needs the in-process simulated printer (gateway.SimAvailable)")
	}
	m := newMeshLab(t, 3)
	for _, g := range m.gws {
		pgOK(t, "init", "--state", g.state, "--endpoint", g.endpoint(), "--listen-port", strconv.Itoa(listenPort))
		g.start(t)
		checkSockets(t, g.d.pid(), listenPort)
	}
	gw1, gw3 := m.gws[0], m.gws[2]
	phone := m.enrollDevice(t, t, gw1, "phone", "viewer", m.lanClient(t, "c"), "p")
	p1, _ := gw1.status(t).printer(gw1.printer)
	phone.waitReaches(t, "LAN client on gw1", p1.Address, 20*time.Second)

	tab := m.enrollDevice(t, t, gw3, "tab", "viewer", m.directClient(t, gw3, "d"), "t")
	p3, _ := gw3.status(t).printer(gw3.printer)
	tab.waitReaches(t, "direct client on gw3", p3.Address, 20*time.Second)

	ping := lanProbe
	if err := ping(phone.ns, gw3.ip); err != nil {
		t.Fatalf("LAN client cannot ping gw3 at %s before the partition: %v", gw3.ip, err)
	}
	m.partition(t, gw3)
	if err := ping(phone.ns, gw3.ip); err == nil {
		t.Errorf("LAN client pings gw3 at %s while gw3 is partitioned", gw3.ip)
	}
	if err := ping(gw1.ns, gw3.ip); err == nil {
		t.Errorf("gw1 pings gw3 at %s while gw3 is partitioned", gw3.ip)
	}
	if err := tab.reaches(p3.Address); err != nil {
		t.Errorf("direct client on gw3 during the partition: %v", err)
	}
	m.heal(t, gw3)
	waitFor(t, "gw3 back on the LAN", 10*time.Second, func() bool { return ping(gw1.ns, gw3.ip) == nil })
	for _, g := range m.gws {
		g.stop(t)
	}
}
