package gateway

import (
	"fmt"
	"strings"
	"testing"

	"github.com/printgate/printgate/enroll"
)

// TestMeshOfEight: eight real gateways (WireGuard on loopback UDP, raft inside the tunnel,
// a simulated printer each) come up as one mesh with eight voters; a device homed on the
// last reaches the first one's printer through its home's relay; the leader stops and the
// others elect a new one and commit an enrollment, while the device keeps working.
//
// The eighth gateway is the one that failed before mesh dials were bound to the gateway's
// own address: the stack dialled 10.77.0.8 from the printer address 10.77.0.11 (a longer
// common prefix), which the new gateway's peer for the leader did not allow yet.
func TestMeshOfEight(t *testing.T) {
	if testing.Short() {
		t.Skip("eight gateways with raft: not in -short")
	}
	const n = 8
	printers := map[string][]PrinterSpec{}
	for i := range n {
		printers[fmt.Sprintf("gw-%c", 'a'+i)] = []PrinterSpec{{Name: fmt.Sprintf("p-%c", 'a'+i), Port: SimPort}}
	}
	m := newTestMesh(t, n, printers)
	for _, gw := range m.gws {
		r := gw.node.Roster()
		if len(r.Gateways()) != n || len(r.Printers()) != n {
			t.Fatalf("%s sees %d gateways and %d printers, want %d of each", gw.name, len(r.Gateways()), len(r.Printers()), n)
		}
	}
	voters := func(gw *meshGW) int {
		v := 0
		for _, s := range gw.node.Status().Servers {
			if s.Voter {
				v++
			}
		}
		return v
	}
	waitFor(t, "eight voters", func() bool { return voters(m.gws[0]) == n })

	home := m.gws[n-1]
	var en *enroll.Enrollment
	retry(t, "enroll on "+home.name, func() (err error) {
		en, err = home.Enroll(enroll.Request{Name: "phone", Role: enroll.Operator})
		return err
	})
	hc := newClient(t, en.Config).httpClient(false)
	pa, ok := home.node.Roster().Printer("p-a")
	if !ok {
		t.Fatal("p-a not in the last gateway's replica")
	}
	reach := func(what string) {
		t.Helper()
		url := "http://" + pa.IPv4.String() + "/api/currentuser"
		waitFor(t, what, func() bool {
			body, err := get(hc, url)
			return err == nil && strings.Contains(body, "phone")
		})
	}
	reach("p-a (on gw-a) through gw-h's relay")

	var leader *meshGW
	for _, gw := range m.gws {
		if gw.node.Status().State == "leader" {
			leader = gw
		}
	}
	if leader == nil {
		t.Fatal("no leader among eight")
	}
	leader.Close()
	var survivor *meshGW
	for _, gw := range m.gws {
		if gw != leader && gw != home {
			survivor = gw
		}
	}
	retry(t, "enroll on "+survivor.name+" after "+leader.name+" stopped", func() error {
		_, err := survivor.Enroll(enroll.Request{Name: "after"})
		return err
	})
	st := survivor.node.Status()
	if st.Leader == "" || st.Leader == leader.name {
		t.Errorf("after %s stopped, %s sees leader %q", leader.name, survivor.name, st.Leader)
	}
	if leader != home && leader.name != "gw-a" {
		reach("p-a through gw-h's relay after the leader stopped")
	}
	t.Logf("eight gateways: leader %s stopped, new leader %s", leader.name, st.Leader)
}
