package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
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

	ping := meshLANProbe
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
	// The revocation probe the mesh test uses, on one gateway.
	m.revokeEverywhere(t, gw1, phone, map[string]meshPrinter{p1.Name: p1})
	for _, g := range m.gws {
		g.stop(t)
	}
}

// TestMeshEndToEnd is issue 12's acceptance with the real binary (and issue 13's "works with a
// mesh"): three gateways in their own namespaces on one bridged LAN form a mesh by token, each
// with its own simulated printer; a phone enrolled on gw1 before the others joined, brought up
// by Debian's wg-quick + wireguard-go from the decoded QR, reaches every printer through gw1; `printgate connect` as
// nobody reaches a printer on gw3; a revoke on gw3 stops the phone everywhere within 2 s; a
// partitioned gw3 refuses enrollments for want of quorum (CLI and web API) while serving its
// own device, then catches up; a kill -9 of the leader leaves a mesh that enrolls within 10 s; a restart of
// every gateway keeps the roster.
//
// Run: go test -count=1 -v -run 'TestMeshEndToEnd' ./cmd/printgate/e2e/
func TestMeshEndToEnd(t *testing.T) {
	requireRoot(t, "ip", "wg", "wg-quick", "wireguard-go", "zbarimg", "curl", "setpriv")
	if !gateway.SimAvailable {
		t.Skip("needs the in-process simulated printer (gateway.SimAvailable)")
	}
	if _, _, code := pg(t, "mesh", "--help"); code != 0 {
		t.Skip("`printgate mesh` has not landed (the daemon's mesh wiring: helper mcore; mesh invite / init --join: helper join)")
	}
	if out, errOut, _ := pg(t, "init", "--help"); !strings.Contains(out+errOut, "--join") {
		t.Skip("`printgate init --join` has not landed (helper join)")
	}
	top := t
	m := newMeshLab(t, 3)
	gw1, gw2, gw3 := m.gws[0], m.gws[1], m.gws[2]
	// missing names a piece of the mesh this build lacks: the step that finds it skips, and so
	// does the rest of the test.
	var missing string
	need := func(t *testing.T, piece string) {
		t.Helper()
		missing = piece
		t.Skip(piece)
	}
	step := func(name string, f func(t *testing.T)) {
		t.Helper()
		ok := t.Run(name, f)
		if missing != "" {
			t.Skipf("step %s: %s", name, missing)
		}
		if !ok {
			t.Fatalf("step %s failed; the steps after it need it", name)
		}
	}

	phonePNG := filepath.Join(t.TempDir(), "phone.png")
	step("Form", func(t *testing.T) {
		pgOK(t, "init", "--state", gw1.state, "--endpoint", gw1.endpoint(), "--listen-port", strconv.Itoa(listenPort), "--name", gw1.name)
		gw1.start(top)
		if out, errOut, code := pg(t, "mesh", "status", "--state", gw1.state, "--json"); code != 0 {
			if strings.Contains(errOut, "not defined") || strings.Contains(errOut, "unknown subcommand") || strings.Contains(errOut, "unknown operation") {
				need(t, "`printgate mesh status --json` has not landed (the daemon's mesh wiring, helper mcore): "+strings.TrimSpace(errOut))
			}
			t.Fatalf("mesh status --json on gw1 (a mesh of one): exit %d\n%s%s", code, out, errOut)
		}
		// The phone is enrolled while gw1 is a mesh of one: its QR reaches the printers of the
		// gateways that join later with no new config.
		pgOK(t, "enroll", "--state", gw1.state, "phone", "--role", "admin", "--png", phonePNG, "--qr", "none")
		for _, g := range []*meshGW{gw2, gw3} {
			out, errOut, code := pg(t, "mesh", "invite", "--state", gw1.state)
			if code != 0 && strings.Contains(errOut, "unknown operation") {
				need(t, "the daemon does not answer `printgate mesh invite` (the inviter's side of the join, helper join): "+strings.TrimSpace(errOut))
			}
			if code != 0 {
				t.Fatalf("mesh invite on gw1: exit %d\n%s%s", code, out, errOut)
			}
			token := meshLastLine(out)
			if out, errOut, code := meshPGIn(t, g.ns, "init", "--state", g.state, "--endpoint", g.endpoint(), "--join", token, "--name", g.name); code != 0 {
				t.Fatalf("%s: init --join (token from gw1's mesh invite): exit %d\nstdout:\n%s\nstderr:\n%s", g.name, code, out, errOut)
			}
			g.start(top)
			waitFor(t, g.name+" reachable in gw1's mesh status, with quorum", 30*time.Second, func() bool {
				ms, ok := gw1.membership(t)
				if !ok || !ms.Quorum {
					return false
				}
				for _, x := range ms.Gateways {
					if x.Name == g.name && x.Reachable {
						return true
					}
				}
				return false
			})
		}
		for _, g := range m.gws {
			waitFor(t, g.name+": mesh status with three reachable voters, a leader and quorum", 30*time.Second, func() bool {
				ms, ok := g.membership(t)
				return ok && ms.Quorum && len(ms.Gateways) == 3 && ms.reachable() == 3 && ms.voters() == 3 && ms.leader() != ""
			})
		}
		ms, _ := gw2.membership(t)
		for _, x := range ms.Gateways {
			g := m.byName(x.Name)
			if g == nil || x.Endpoint != g.endpoint() || x.Address == "" {
				t.Errorf("mesh status --json on gw2: gateway %+v; want gw1..gw3 with their LAN endpoints and a tunnel address", x)
			}
		}
		t.Logf("mesh formed; leader %s", ms.leader())
	})

	t.Run("OneSocketEach", func(t *testing.T) {
		for _, g := range m.gws {
			t.Run(g.name, func(t *testing.T) { checkSockets(t, g.d.pid(), listenPort) })
		}
	})

	// printers: every printer of the mesh as gw3 lists it, by name.
	printers := map[string]meshPrinter{}
	step("EveryPrinterEverywhere", func(t *testing.T) {
		for _, g := range m.gws {
			waitFor(t, g.name+"'s status --json listing the three printers", 30*time.Second, func() bool {
				return len(g.status(t).Printers) == 3
			})
		}
		for _, p := range gw3.status(t).Printers {
			printers[p.Name] = p
		}
		for _, g := range m.gws {
			if p := printers[g.printer]; p.Gateway != g.name || p.Address == "" {
				t.Errorf("status --json on gw3: printer %s = %+v, want an address and gateway %s", g.printer, p, g.name)
			}
		}
	})

	var phone *meshDevice
	step("OneQRReachesEveryPrinter", func(t *testing.T) {
		config := meshDecodeQR(t, phonePNG)
		prefix := gw1.status(t).Prefix4
		if n := strings.Count(config, "[Peer]"); n != 1 {
			t.Errorf("the phone's config has %d peers, want one (its home gateway):\n%s", n, config)
		}
		if allowed := regexp.MustCompile(`(?m)^AllowedIPs = (.*)$`).FindStringSubmatch(config); allowed == nil || !strings.Contains(allowed[1], prefix) {
			t.Errorf("the phone's AllowedIPs do not hold the mesh prefix %s:\n%s", prefix, config)
		}
		if !strings.Contains(config, "Endpoint = "+gw1.endpoint()) {
			t.Errorf("the phone's config does not dial gw1 at %s:\n%s", gw1.endpoint(), config)
		}
		phone = &meshDevice{name: "phone", ns: m.lanClient(top, "c"), conf: config}
		phone.wg = newWGClient(top, phone.ns, m.prefix+"p", config)
		phone.wg.up(t)
		for _, g := range m.gws {
			phone.waitReaches(t, "the phone (home gw1, enrolled before gw2 and gw3 joined) to "+g.printer+" on "+g.name, printers[g.printer].Address, 20*time.Second)
		}
		// Each printer's own gateway knows who the relayed phone is.
		for _, g := range m.gws {
			r, err := uiCurl(phone.ns, "--max-time", "5", "http://"+printers[g.printer].Address+"/api/currentuser")
			if err != nil || r.code != 200 || r.json()["name"] != "phone" {
				t.Errorf("GET /api/currentuser on %s (on %s) from the phone = %v %v, want 200 naming the phone", g.printer, g.name, r, err)
			}
		}
		m.waitSameRoster(t, "peers --json with the phone")
		if r := gw3.roster(t); !regexp.MustCompile(`(?m)^phone admin active .* home=gw1$`).MatchString(r) {
			t.Errorf("peers --json on gw3 does not show the phone active, homed on gw1:\n%s", r)
		}
	})

	t.Run("ConnectAsNobody", func(t *testing.T) {
		pub := publicDir(t, false)
		conf := filepath.Join(pub, "laptop.conf")
		out := pgOK(t, "enroll", "--state", gw1.state, "laptop", "--role", "operator", "--conf", conf, "--qr", "none")
		km := uiAPIKeyRE.FindStringSubmatch(out)
		if km == nil {
			t.Fatalf("enroll printed no API key:\n%s", out)
		}
		os.Chmod(conf, 0o644)
		bin := filepath.Join(pub, "printgate")
		if b, err := os.ReadFile(binPath); err != nil || os.WriteFile(bin, b, 0o755) != nil {
			t.Fatalf("copy the binary for nobody: %v", err)
		}
		ns := m.lanClient(t, "n")
		p3 := printers[gw3.printer]
		p := startConnect(t, ns, bin, publicDir(t, true), "--conf", conf,
			"--forward", "18080="+p3.Address, "--forward", "18081="+p3.Name, "--socks", "11080", "--status-interval", "0")
		keepLog(t, "connect.log", p.stderr)
		defer p.interrupt(t)
		if links := ns.sh(t, "ip", "-o", "link"); strings.Count(links, "\n") != 2 {
			t.Errorf("the laptop's namespace has a link beyond lo and its veth:\n%s", links)
		}
		get := func(args ...string) (uiResp, error) {
			return uiCurl(ns, append([]string{"--max-time", "5", "-H", "X-Api-Key: " + km[1]}, args...)...)
		}
		waitFor(t, "p3 (on gw3) through the laptop's forward to its address, by way of its home gw1", 30*time.Second, func() bool {
			r, err := get("http://127.0.0.1:18080/api/version")
			return err == nil && r.code == 200
		})
		t.Run("ByName", func(t *testing.T) {
			// connect resolves names from its home gateway's GET /api/v1/printers.
			list, err := uiCurl(phone.ns, "--max-time", "5", "http://"+gw1.status(t).Addresses[0]+"/api/v1/printers")
			if err != nil || list.code != 200 {
				t.Fatalf("GET /api/v1/printers on gw1 from the phone: %v %v", list, err)
			}
			// The mesh's other printers are listed under "mesh", with their gateway.
			var listed struct {
				Mesh []struct{ Name, Gateway string }
			}
			if err := json.Unmarshal(list.body, &listed); err != nil {
				t.Fatalf("GET /api/v1/printers on gw1: %v: %s", err, list.body)
			}
			if !slices.ContainsFunc(listed.Mesh, func(p struct{ Name, Gateway string }) bool { return p.Name == p3.Name && p.Gateway == "gw3" }) {
				t.Fatalf("GET /api/v1/printers on gw1 lists %+v under mesh, want %s on gw3", listed.Mesh, p3.Name)
			}
			waitFor(t, "p3 (on gw3) through the laptop's forward by name", 10*time.Second, func() bool {
				r, err := get("http://127.0.0.1:18081/api/version")
				return err == nil && r.code == 200
			})
			r, err := get("--socks5-hostname", "127.0.0.1:11080", "http://"+p3.Name+"/api/version")
			if err != nil || r.code != 200 || !strings.Contains(string(r.body), `"api"`) {
				t.Errorf("curl --socks5-hostname http://%s/api/version (a printer on gw3) = %v %v, want 200", p3.Name, r, err)
			}
		})
	})

	t.Run("RevokeOnGw3StopsThePhoneEverywhere", func(t *testing.T) {
		m.revokeEverywhere(t, gw3, phone, printers)
		m.waitSameRoster(t, "peers --json after the revoke")
		if r := gw1.roster(t); !regexp.MustCompile(`(?m)^phone admin revoked `).MatchString(r) {
			t.Errorf("peers --json on gw1 (the phone's home) does not show it revoked:\n%s", r)
		}
	})

	var tab *meshDevice
	step("PartitionedGw3", func(t *testing.T) {
		// A tablet homed on gw3, wired straight to it: the partition does not cut it off.
		// An admin, so it can also try the web API's enrollment.
		tab = m.enrollDevice(t, top, gw3, "tab", "admin", m.directClient(top, gw3, "d"), "t")
		tab.waitReaches(t, "the tablet (home gw3) before the partition", printers[gw3.printer].Address, 20*time.Second)
		gw3URL := "http://" + gw3.status(t).Addresses[0] + "/api/v1/devices"
		m.partition(t, gw3)
		// The web API and the CLI at once: both refused for want of quorum.
		type answer struct {
			r    uiResp
			err  error
			took time.Duration
		}
		api := make(chan answer, 1)
		start := time.Now()
		go func() {
			r, err := uiDo(tab.ns, "POST", gw3URL, map[string]string{"name": "lateweb", "role": "viewer"})
			api <- answer{r, err, time.Since(start)}
		}()
		out, errOut, code := pg(t, "enroll", "--state", gw3.state, "late", "--qr", "none")
		took := time.Since(start)
		if a := <-api; a.err != nil || a.r.code != 503 || a.took > 8*time.Second {
			t.Errorf("POST /api/v1/devices on partitioned gw3 from the tablet = %v %v after %v, want 503 within about 5 s", a.r, a.err, a.took.Round(time.Millisecond))
		} else {
			t.Logf("web API enrollment on partitioned gw3: %v after %v", a.r, a.took.Round(time.Millisecond))
		}
		t.Logf("enroll on partitioned gw3: exit %d in %v: %s", code, took.Round(time.Millisecond), strings.TrimSpace(out+errOut))
		if code == 0 || !strings.Contains(out+errOut, "quorum") {
			t.Errorf("enroll on partitioned gw3: exit %d\n%s%s\nwant a non-zero exit with a message containing \"quorum\"", code, out, errOut)
		}
		if took > 8*time.Second {
			t.Errorf("enroll on partitioned gw3 took %v to be refused, want about 5 s at most", took)
		}
		if err := tab.reaches(printers[gw3.printer].Address); err != nil {
			t.Errorf("the tablet (home gw3) during the partition: %v", err)
		}
		waitFor(t, "gw3's mesh status without quorum", 15*time.Second, func() bool {
			ms, ok := gw3.membership(t)
			return ok && !ms.Quorum
		})
		// The majority side goes on: an enrollment on gw1 commits while gw3 is away.
		waitFor(t, "gw1 with a leader other than gw3, and quorum", 15*time.Second, func() bool {
			ms, ok := gw1.membership(t)
			return ok && ms.Quorum && ms.leader() != "" && ms.leader() != gw3.name
		})
		pgOK(t, "enroll", "--state", gw1.state, "meanwhile", "--qr", "none")
		m.heal(t, gw3)
		healed := time.Now()
		m.waitSameRoster(t, "gw3 caught up after the partition (peers --json with meanwhile)")
		t.Logf("gw3 caught up %v after the heal", time.Since(healed).Round(time.Millisecond))
		waitFor(t, "gw3's mesh status with quorum again", 15*time.Second, func() bool {
			ms, ok := gw3.membership(t)
			return ok && ms.Quorum
		})
	})

	step("KillTheLeader", func(t *testing.T) {
		ms, _ := gw1.membership(t)
		leader := m.byName(ms.leader())
		if leader == nil {
			t.Fatalf("gw1's mesh status names no leader: %+v", ms)
		}
		var survivors []*meshGW
		for _, g := range m.gws {
			if g != leader {
				survivors = append(survivors, g)
			}
		}
		// Throughout, the tablet (homed on gw3) keeps reaching the survivors' printers: its own
		// gateway's and, relayed, the other survivor's.
		var targets []meshPrinter
		if leader != gw3 {
			for _, g := range survivors {
				targets = append(targets, printers[g.printer])
			}
		}
		stopProbe, probed := make(chan struct{}), make(chan []string)
		go func() {
			var failed []string
			defer func() { probed <- failed }()
			for {
				for _, p := range targets {
					if err := tab.reaches(p.Address); err != nil {
						failed = append(failed, fmt.Sprintf("%s at %v: %v", p.Name, time.Now().Format("15:04:05.000"), err))
					}
				}
				select {
				case <-stopProbe:
					return
				case <-time.After(200 * time.Millisecond):
				}
			}
		}()
		start := time.Now()
		leader.kill(t)
		t.Logf("killed the leader %s (kill -9)", leader.name)
		var newLeader string
		waitFor(t, "a new leader among the survivors", 20*time.Second, func() bool {
			ms, ok := survivors[0].membership(t)
			newLeader = ms.leader()
			return ok && ms.Quorum && newLeader != "" && newLeader != leader.name
		})
		elected := time.Since(start)
		// Enroll on a survivor until it commits; a refusal (quorum) is retried with a new name.
		var enrolled time.Duration
		var last string
		for i := 0; enrolled == 0; i++ {
			name := fmt.Sprintf("afterkill%d", i)
			out, errOut, code := pg(t, "enroll", "--state", survivors[0].state, name, "--qr", "none")
			if code == 0 {
				enrolled = time.Since(start)
				break
			}
			last = out + errOut
			if time.Since(start) > 20*time.Second {
				t.Fatalf("no enrollment on %s within 20 s of killing the leader; last: %s", survivors[0].name, last)
			}
		}
		t.Logf("leader %s killed: new leader %s after %v, an enrollment on %s committed after %v",
			leader.name, newLeader, elected.Round(time.Millisecond), survivors[0].name, enrolled.Round(time.Millisecond))
		if enrolled > 10*time.Second {
			t.Errorf("the first enrollment after killing the leader committed after %v, want within 10 s", enrolled)
		}
		close(stopProbe)
		if failed := <-probed; len(failed) > 0 {
			t.Errorf("the tablet (home gw3, a survivor) lost a survivor's printer after the leader's kill:\n%s", strings.Join(failed, "\n"))
		} else if len(targets) > 0 {
			t.Logf("the tablet (home gw3) reached %s and %s throughout", targets[0].Name, targets[1].Name)
		}
		leader.start(top)
		restarted := time.Now()
		m.waitSameRoster(t, leader.name+" caught up after its restart")
		t.Logf("%s caught up %v after its restart", leader.name, time.Since(restarted).Round(time.Millisecond))
	})

	step("RestartEveryGateway", func(t *testing.T) {
		before := gw1.roster(t)
		keys := map[string]meshStatusView{}
		var stops []string
		for _, g := range m.gws {
			keys[g.name] = g.status(t)
			start := time.Now()
			g.stop(t)
			stops = append(stops, fmt.Sprintf("%s %v", g.name, time.Since(start).Round(time.Millisecond)))
		}
		t.Logf("stopped one by one (SIGTERM to exit): %s", strings.Join(stops, ", "))
		start := time.Now()
		for _, g := range m.gws {
			g.start(top)
		}
		for _, g := range m.gws {
			waitFor(t, g.name+": mesh status with three reachable gateways and quorum after the restart", 30*time.Second, func() bool {
				ms, ok := g.membership(t)
				return ok && ms.Quorum && ms.reachable() == 3
			})
			if got := g.roster(t); got != before {
				t.Errorf("%s: peers --json after restarting every gateway:\n%s\nwant (before):\n%s", g.name, got, before)
			}
			if st, was := g.status(t), keys[g.name]; !slices.Equal(st.Addresses, was.Addresses) || st.PublicKey != was.PublicKey {
				t.Errorf("%s: key %s, addresses %v after the restart, want %s, %v", g.name, st.PublicKey, st.Addresses, was.PublicKey, was.Addresses)
			}
		}
		t.Logf("every gateway restarted: quorum and all three reachable everywhere %v after the first start", time.Since(start).Round(time.Millisecond))
		// The tablet's old session died with gw3's process: a fresh interface handshakes at once
		// (the one left up would wait out WireGuard's rekey timers).
		tab.wg.down(t)
		tab.wg.up(t)
		tab.waitReaches(t, "the tablet (home gw3) after restarting every gateway, with its old config", printers[gw3.printer].Address, 20*time.Second)
	})
}
