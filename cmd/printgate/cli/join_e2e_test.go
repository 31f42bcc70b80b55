package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/printgate/printgate/cmd/printgate/gateway"
	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/control"
	"github.com/printgate/printgate/mesh"
)

// meshWait bounds what the mesh tests wait for: generous for a loaded 2-core machine under
// -race. Tests assert that things happen, never how fast.
const meshWait = 90 * time.Second

func freePort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// runDaemonCLI runs `printgate run --state dir` in this process until the test ends, and
// waits for it to be ready.
func runDaemonCLI(t *testing.T, dir string, extra ...string) *signalWriter {
	t.Helper()
	errw := &signalWriter{want: "ready:", seen: make(chan struct{})}
	seen := errw.seen
	ctx, cancel := context.WithCancel(context.Background())
	e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: errw, getenv: func(string) string { return "" },
		signals: func(context.Context) (context.Context, context.CancelFunc) { return ctx, cancel }}
	code := make(chan int, 1)
	args := append([]string{"run", "--state", dir, "--interface", "none"}, extra...)
	go func() { code <- run(context.Background(), e, args) }()
	t.Cleanup(func() {
		cancel()
		if c := <-code; c != 0 {
			t.Errorf("run --state %s exited %d:\n%s", dir, c, errw)
		}
	})
	select {
	case <-seen:
	case c := <-code:
		code <- c
		t.Fatalf("run --state %s exited %d before it was ready:\n%s", dir, c, errw)
	case <-time.After(meshWait):
		t.Fatalf("run --state %s not ready:\n%s", dir, errw)
	}
	return errw
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// retryCLI runs the command until it exits 0 or the mesh has had time to settle: a write right
// after a join may meet a mesh still electing (refused with "quorum").
func retryCLI(t *testing.T, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(meshWait)
	for {
		out, errOut, code := runCLI(t, args...)
		if code == 0 {
			return out
		}
		if !strings.Contains(errOut, "quorum") || time.Now().After(deadline) {
			t.Fatalf("printgate %q: exit %d\n%s%s", args, code, out, errOut)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestMeshInviteAndJoin is the join path as a user types it, in one process over loopback:
// `mesh invite` on a running gateway, `init --join` on a new state directory, `run` there;
// the two form a mesh (`mesh status` on each shows both; a device enrolled on the new gateway
// is listed on the first); a second use of the token is refused; a third gateway joins
// through the second.
func TestMeshInviteAndJoin(t *testing.T) {
	base := t.TempDir()
	a, b := filepath.Join(base, "a"), filepath.Join(base, "b")
	pa, pb := freePort(t), freePort(t)
	if _, errOut, code := runCLI(t, "init", "--state", a, "--endpoint", fmt.Sprintf("127.0.0.1:%d", pa), "--listen-port", strconv.Itoa(pa), "--name", "gw1"); code != 0 {
		t.Fatalf("init gw1: %s", errOut)
	}
	// Without a running gateway there is nobody to hold the one-time peer.
	if _, errOut, code := runCLI(t, "mesh", "invite", "--state", a); code != exitError || !strings.Contains(errOut, "printgate run") {
		t.Errorf("mesh invite without a daemon: exit %d, %q; want exit 1 telling to run the gateway", code, errOut)
	}
	runDaemonCLI(t, a)

	out, errOut, code := runCLI(t, "mesh", "invite", "--state", a, "--ttl", "10m")
	if code != 0 {
		t.Fatalf("mesh invite: exit %d: %s", code, errOut)
	}
	token := lastLine(out)
	if strings.Count(out, "\n") != 1 || !strings.HasPrefix(token, mesh.TokenPrefix) {
		t.Fatalf("mesh invite printed %q, want the token alone", out)
	}
	if !strings.Contains(errOut, "init --state DIR --join TOKEN") {
		t.Errorf("mesh invite's advice on stderr: %q", errOut)
	}
	tok, err := mesh.ParseToken(token)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(tok.Expires); d < 9*time.Minute || d > 10*time.Minute {
		t.Errorf("token expires in %v, want 10m", d)
	}

	start := time.Now()
	out, errOut, code = runCLI(t, "init", "--state", b, "--join", token, "--endpoint", fmt.Sprintf("127.0.0.1:%d", pb),
		"--listen-port", strconv.Itoa(pb), "--name", "gw2")
	if code != 0 {
		t.Fatalf("init --join: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("init --join took %v (temporary tunnel, join, state written)", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(out, "joined the mesh as gw2") || !strings.Contains(out, "gw1, gw2") {
		t.Errorf("init --join printed:\n%s", out)
	}
	jf, err := gateway.ReadJoinFile(b)
	if err != nil || jf == nil || jf.Name != "gw2" || len(jf.Gateways) != 2 {
		t.Fatalf("join file: %+v, %v", jf, err)
	}
	reg, err := enroll.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	g := reg.Gateway()
	reg.Close()
	if g.Name != "gw2" || g.Addr4().String() != "10.77.0.2" || g.Prefix4 != enroll.DefaultPrefix4 {
		t.Errorf("gw2's state: name %q, address %v, prefix %v", g.Name, g.Addr4(), g.Prefix4)
	}

	// The token works once.
	c := filepath.Join(base, "c")
	_, errOut, code = runCLI(t, "init", "--state", c, "--join", token, "--endpoint", "127.0.0.1:9", "--name", "gw3")
	if code != exitError || !strings.Contains(errOut, "already used") {
		t.Errorf("second use of the token: exit %d, %q; want exit 1 saying it was used", code, errOut)
	}
	if _, err := os.Stat(c); err == nil {
		t.Errorf("a refused join left %s behind", c)
	}

	runDaemonCLI(t, b)
	// mesh status on either gateway shows both, reachable, one leader, quorum.
	for _, dir := range []string{a, b} {
		waitMeshStatus(t, dir, 2)
	}
	out, _, _ = runCLI(t, "mesh", "status", "--state", b)
	for _, want := range []string{"mesh of 2", "quorum yes", "gw1", "gw2 (this)", "10.77.0.2", fmt.Sprintf("127.0.0.1:%d", pa)} {
		if !strings.Contains(out, want) {
			t.Errorf("mesh status on gw2 lacks %q:\n%s", want, out)
		}
	}
	t.Logf("mesh status on gw2:\n%s", out)
	retryCLI(t, "enroll", "--state", b, "tablet", "--qr", "none")

	// A third gateway joins through the second, a follower: the invitation and the join are
	// forwarded to the leader.
	pc := freePort(t)
	token3 := lastLine(retryCLI(t, "mesh", "invite", "--state", b))
	if out, errOut, code := runCLI(t, "init", "--state", c, "--join", token3, "--endpoint", fmt.Sprintf("127.0.0.1:%d", pc),
		"--listen-port", strconv.Itoa(pc), "--name", "gw3"); code != 0 {
		t.Fatalf("init --join through gw2: exit %d\n%s%s", code, out, errOut)
	}
	runDaemonCLI(t, c)
	for _, dir := range []string{a, b, c} {
		waitMeshStatus(t, dir, 3)
	}
	var peers []enroll.PeerView
	deadline := time.Now().Add(meshWait)
	for {
		out, errOut, code := runCLI(t, "peers", "--state", a, "--json")
		if code != 0 {
			t.Fatalf("peers on gw1: %s", errOut)
		}
		if err := json.Unmarshal([]byte(out), &peers); err != nil {
			t.Fatalf("peers --json: %v\n%s", err, out)
		}
		if len(peers) == 1 && peers[0].Name == "tablet" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gw1 never listed the tablet enrolled on gw2: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitMeshStatus waits until `mesh status --json` on dir shows n gateways, every one a
// reachable voter, one leader, and quorum.
func waitMeshStatus(t *testing.T, dir string, n int) {
	t.Helper()
	deadline := time.Now().Add(meshWait)
	for {
		out, errOut, code := runCLI(t, "mesh", "status", "--state", dir, "--json")
		if code != 0 {
			t.Fatalf("mesh status: exit %d: %s", code, errOut)
		}
		var ms control.MeshStatus
		if err := json.Unmarshal([]byte(out), &ms); err != nil {
			t.Fatalf("mesh status --json: %v\n%s", err, out)
		}
		reachable, leaders := 0, 0
		for _, g := range ms.Gateways {
			if g.Reachable && g.Voter {
				reachable++
			}
			if g.Leader {
				leaders++
			}
		}
		if ms.Quorum && len(ms.Gateways) == n && reachable == n && leaders == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("mesh status on %s never showed %d reachable voters, a leader and quorum:\n%s", dir, n, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestFirstBootJoinsTheMesh: an appliance's first boot with join= in printgate.txt joins the
// running mesh instead of making its own, comes up as a member, and shows no admin QR (the
// mesh's admins are its admins).
func TestFirstBootJoinsTheMesh(t *testing.T) {
	base := t.TempDir()
	a, b, boot := filepath.Join(base, "a"), filepath.Join(base, "b"), filepath.Join(base, "boot")
	pa, pb := freePort(t), freePort(t)
	if _, errOut, code := runCLI(t, "init", "--state", a, "--endpoint", fmt.Sprintf("127.0.0.1:%d", pa), "--listen-port", strconv.Itoa(pa), "--name", "gw1"); code != 0 {
		t.Fatalf("init gw1: %s", errOut)
	}
	runDaemonCLI(t, a)
	token := lastLine(retryCLI(t, "mesh", "invite", "--state", a))
	settings := fmt.Sprintf("# the workshop's second gateway\nendpoint=127.0.0.1:%d\nlisten-port=%d\nname=workshop\njoin=%s\n", pb, pb, token)
	if err := os.MkdirAll(boot, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(boot, "printgate.txt"), []byte(settings), 0o644); err != nil {
		t.Fatal(err)
	}
	log := runDaemonCLI(t, b, "--init", "--boot-dir", boot)
	for _, dir := range []string{a, b} {
		waitMeshStatus(t, dir, 2)
	}
	out, _, _ := runCLI(t, "mesh", "status", "--state", a)
	if !strings.Contains(out, "workshop") {
		t.Errorf("gw1's mesh status does not list the appliance as workshop:\n%s", out)
	}
	for _, name := range []string{"printgate-admin.conf", "printgate-admin.png"} {
		if _, err := os.Stat(filepath.Join(boot, name)); err == nil {
			t.Errorf("a joined appliance wrote %s: its admins are the mesh's", name)
		}
	}
	if !strings.Contains(log.String(), "joining the mesh through") {
		t.Errorf("the appliance's log does not say it joined:\n%s", log)
	}
}
