package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/printgate/printgate/cmd/printgate/gateway"
	"github.com/printgate/printgate/enroll/control"
)

// TestMeshCommands: `mesh status` before the first run says so; with a gateway running (a
// mesh of one) it lists it as leader and reachable with quorum, in text and JSON; `mesh
// remove` refuses this gateway and an unknown name; stopped, `mesh status` shows the last
// copy and offline writes go through the mesh node.
func TestMeshCommands(t *testing.T) {
	if _, _, code := runCLI(t, "mesh"); code != exitUsage {
		t.Errorf("mesh without a subcommand: exit %d, want %d", code, exitUsage)
	}
	if _, _, code := runCLI(t, "mesh", "bogus", "--state", "x"); code != exitUsage {
		t.Errorf("mesh bogus: exit %d, want %d", code, exitUsage)
	}
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	c.Close()
	dir := t.TempDir() + "/st"
	if _, errOut, code := runCLI(t, "init", "--state", dir, "--endpoint", fmt.Sprintf("127.0.0.1:%d", port), "--listen-port", fmt.Sprint(port)); code != 0 {
		t.Fatalf("init: %s", errOut)
	}
	if _, errOut, code := runCLI(t, "mesh", "status", "--state", dir); code != exitError || !strings.Contains(errOut, "never ran") {
		t.Errorf("mesh status before the first run: exit %d, %q", code, errOut)
	}

	g, err := gateway.Start(context.Background(), gateway.Config{StateDir: dir, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCLI(t, "mesh", "status", "--state", dir, "--json")
	if code != 0 {
		t.Fatalf("mesh status --json: exit %d: %s", code, errOut)
	}
	var st control.MeshStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("mesh status --json: %v\n%s", err, out)
	}
	if !st.Running || !st.Quorum || len(st.Gateways) != 1 || !st.Gateways[0].Leader || !st.Gateways[0].Reachable ||
		st.Gateways[0].Name != g.Name() || st.Gateways[0].Address != "10.77.0.1" || st.Gateways[0].Endpoint == "" {
		t.Errorf("mesh status --json = %+v", st)
	}
	if out, _, code := runCLI(t, "mesh", "status", "--state", dir); code != 0 || !strings.Contains(out, "quorum yes") {
		t.Errorf("mesh status: exit %d\n%s", code, out)
	}
	if _, errOut, code := runCLI(t, "mesh", "remove", "--state", dir, g.Name()); code != exitError || !strings.Contains(errOut, "this gateway") {
		t.Errorf("mesh remove of itself: exit %d, %q", code, errOut)
	}
	if _, errOut, code := runCLI(t, "mesh", "remove", "--state", dir, "nowhere"); code != exitError || !strings.Contains(errOut, g.Name()) {
		t.Errorf("mesh remove of an unknown gateway: exit %d, %q; want the list", code, errOut)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}

	// Stopped: the last copy, nothing reachable; an offline enrollment commits in the mesh
	// of one, and peers shows it with its home.
	if out, _, code := runCLI(t, "mesh", "status", "--state", dir); code != 0 || !strings.Contains(out, "not running") {
		t.Errorf("mesh status of a stopped gateway: exit %d\n%s", code, out)
	}
	if _, errOut, code := runCLI(t, "enroll", "--state", dir, "tablet", "--qr", "none"); code != 0 {
		t.Fatalf("offline enroll after the mesh: exit %d: %s", code, errOut)
	}
	out, _, _ = runCLI(t, "peers", "--state", dir, "--json")
	if !strings.Contains(out, `"gateway": "`+g.Name()+`"`) || !strings.Contains(out, `"tablet"`) {
		t.Errorf("peers --json after an offline enrollment:\n%s", out)
	}
	if _, errOut, code := runCLI(t, "mesh", "remove", "--state", dir, "x"); code != exitError || !strings.Contains(errOut, "printgate run") {
		t.Errorf("mesh remove offline: exit %d, %q", code, errOut)
	}
}
