package e2e

// The mesh's test bench: a virtual LAN (a bridge in a namespace of its own) with a veth to
// each gateway's namespace and to client namespaces, plus clients wired straight to one
// gateway (they keep reaching it while that gateway is cut from the LAN). A partition is a
// bridge port taken down, inside the test's own namespaces (`ip link` works everywhere; the CI
// image has neither nft nor iptables to drop packets with). Everything goes with the test,
// also when it fails.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// meshLab is the LAN and the namespaces on it.
type meshLab struct {
	prefix string // "pgm" + random: names of everything the lab makes
	lan    netns  // holds the bridge
	net    string // the LAN's first three octets, 10.249.x
	direct string // the direct links' first two octets and a third, 10.248.x
	gws    []*meshGW
	links  int // client links made so far
}

// meshGW is one gateway: its namespace, LAN address and state directory, and the daemon
// running it (nil while stopped).
type meshGW struct {
	name    string // gateway name in the mesh, gw1…
	ns      netns
	ip      string // LAN address
	port    string // its veth's end on the bridge, in the LAN namespace (the partition switch)
	state   string
	iface   string // UAPI name for `wg show`
	printer string // its simulated printer
	d       *daemon
	starts  int
}

// newMeshLab makes the LAN namespace with its bridge and n gateway namespaces on it.
func newMeshLab(t *testing.T, n int) *meshLab {
	t.Helper()
	id := randHex(3)
	x := 1 + int(id[0])%250
	m := &meshLab{prefix: "pgm" + id, net: fmt.Sprintf("10.249.%d", x), direct: fmt.Sprintf("10.248.%d", x)}
	m.lan = m.addNS(t, "l")
	m.lan.sh(t, "ip", "link", "add", "br0", "type", "bridge")
	m.lan.sh(t, "ip", "link", "set", "br0", "up")
	dir := t.TempDir()
	for i := 1; i <= n; i++ {
		g := &meshGW{
			name:    fmt.Sprintf("gw%d", i),
			ip:      fmt.Sprintf("%s.%d", m.net, i),
			state:   filepath.Join(dir, fmt.Sprintf("gw%d", i)),
			iface:   fmt.Sprintf("%sw%d", m.prefix, i),
			printer: fmt.Sprintf("p%d", i),
		}
		g.ns = m.addNS(t, fmt.Sprintf("g%d", i))
		g.port = m.plug(t, g.ns, fmt.Sprintf("g%d", i), g.ip)
		m.gws = append(m.gws, g)
	}
	return m
}

// addNS makes a namespace named after the lab, with loopback up.
func (m *meshLab) addNS(t *testing.T, suffix string) netns {
	t.Helper()
	ns := netns{m.prefix + suffix}
	sh(t, "ip", "netns", "add", ns.name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns.name).Run() })
	ns.sh(t, "ip", "link", "set", "lo", "up")
	return ns
}

// plug connects ns to the bridge with a veth, addr/24 on ns's end, and returns the name of
// the bridge's end.
func (m *meshLab) plug(t *testing.T, ns netns, tag, addr string) string {
	t.Helper()
	br, dev := m.prefix+tag+"b", m.prefix+tag+"e"
	sh(t, "ip", "link", "add", br, "netns", m.lan.name, "type", "veth", "peer", "name", dev, "netns", ns.name)
	m.lan.sh(t, "ip", "link", "set", br, "master", "br0")
	m.lan.sh(t, "ip", "link", "set", br, "up")
	ns.sh(t, "ip", "addr", "add", addr+"/24", "dev", dev)
	ns.sh(t, "ip", "link", "set", dev, "up")
	return br
}

// lanClient makes a client namespace on the LAN.
func (m *meshLab) lanClient(t *testing.T, tag string) netns {
	t.Helper()
	m.links++
	ns := m.addNS(t, tag)
	m.plug(t, ns, tag, fmt.Sprintf("%s.%d", m.net, 100+m.links))
	return ns
}

// directClient makes a client namespace wired straight to g's namespace, not to the LAN, with
// a route to g's LAN address over that wire: its WireGuard endpoint stays reachable while g is
// cut from the LAN.
func (m *meshLab) directClient(t *testing.T, g *meshGW, tag string) netns {
	t.Helper()
	m.links++
	ns := m.addNS(t, tag)
	gwEnd, clEnd := m.prefix+tag+"g", m.prefix+tag+"c"
	gwIP, clIP := fmt.Sprintf("%s.%d", m.direct, 2*m.links), fmt.Sprintf("%s.%d", m.direct, 2*m.links+1)
	sh(t, "ip", "link", "add", gwEnd, "netns", g.ns.name, "type", "veth", "peer", "name", clEnd, "netns", ns.name)
	// A /31 per link: several direct clients of one gateway do not share a subnet.
	g.ns.sh(t, "ip", "addr", "add", gwIP+"/31", "dev", gwEnd)
	ns.sh(t, "ip", "addr", "add", clIP+"/31", "dev", clEnd)
	g.ns.sh(t, "ip", "link", "set", gwEnd, "up")
	ns.sh(t, "ip", "link", "set", clEnd, "up")
	ns.sh(t, "ip", "route", "add", g.ip+"/32", "via", gwIP)
	return ns
}

// partition cuts g from the LAN (its bridge port down); heal puts it back.
func (m *meshLab) partition(t *testing.T, g *meshGW) {
	t.Helper()
	m.lan.sh(t, "ip", "link", "set", g.port, "down")
}

func (m *meshLab) heal(t *testing.T, g *meshGW) {
	t.Helper()
	m.lan.sh(t, "ip", "link", "set", g.port, "up")
}

func (g *meshGW) endpoint() string { return fmt.Sprintf("%s:%d", g.ip, listenPort) }

// start runs the gateway's daemon with its simulated printer and waits until its control
// socket answers. The log is kept as gwN.log (gwN-2.log… after restarts).
func (g *meshGW) start(t *testing.T) {
	t.Helper()
	g.starts++
	args := []string{"run", "--state", g.state, "--interface", g.iface, "--stats-interval", "200ms", "--printer", g.printer + "=sim"}
	d := &daemon{state: g.state, iface: g.iface, stderr: &syncBuffer{}, done: make(chan struct{})}
	d.cmd = g.ns.cmd(binPath, args...)
	d.cmd.Stdout, d.cmd.Stderr = d.stderr, d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	keepLog(t, g.name+".log", d.stderr)
	t.Cleanup(func() { d.stop(t) })
	g.d = d
	waitFor(t, g.name+" daemon answering on its control socket", 20*time.Second, func() bool {
		select {
		case <-d.done:
			t.Fatalf("%s: printgate run exited: %v\n%s", g.name, d.err, tailLines(d.stderr.String(), 30))
		default:
		}
		out, _, code := pg(t, "status", "--state", g.state, "--json")
		var st struct{ Running bool }
		return code == 0 && json.Unmarshal([]byte(out), &st) == nil && st.Running
	})
}

// stop ends the daemon with SIGTERM and expects a clean exit.
func (g *meshGW) stop(t *testing.T) {
	t.Helper()
	if err := g.d.stop(t); err != nil {
		t.Errorf("%s: printgate run exit on SIGTERM: %v", g.name, err)
	}
	g.d = nil
}

// kill ends the daemon with SIGKILL: no shutdown path runs.
func (g *meshGW) kill(t *testing.T) {
	t.Helper()
	g.d.cmd.Process.Signal(syscall.SIGKILL)
	<-g.d.done
	g.d = nil
}

// meshPGIn runs the printgate binary inside ns (for what dials the network itself, such as
// init --join) and returns stdout, stderr and the exit code.
func meshPGIn(t *testing.T, ns netns, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := ns.cmd(binPath, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("printgate %v in %s: %v", args, ns.name, err)
		}
		code = ee.ExitCode()
	}
	return out.String(), errb.String(), code
}

// meshPrinter is one printer of `status --json` as the mesh lists it.
type meshPrinter struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Gateway string `json:"gateway"`
	State   string `json:"state"`
}

// meshStatusView is the part of `status --json` these tests read.
type meshStatusView struct {
	Running   bool          `json:"running"`
	PublicKey string        `json:"public_key"`
	Addresses []string      `json:"addresses"`
	Prefix4   string        `json:"prefix4"`
	Printers  []meshPrinter `json:"printers"`
}

func (g *meshGW) status(t *testing.T) meshStatusView {
	t.Helper()
	var st meshStatusView
	out := pgOK(t, "status", "--state", g.state, "--json")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("%s: status --json: %v\n%s", g.name, err, out)
	}
	return st
}

// printer returns the printer called name in st.
func (st meshStatusView) printer(name string) (meshPrinter, bool) {
	for _, p := range st.Printers {
		if p.Name == name {
			return p, true
		}
	}
	return meshPrinter{}, false
}

// meshGateway is one gateway of `mesh status --json`.
type meshGateway struct {
	Name      string `json:"name"`
	Address   string `json:"address"`
	Endpoint  string `json:"endpoint"`
	Leader    bool   `json:"leader"`
	Reachable bool   `json:"reachable"`
	Voter     bool   `json:"voter"`
}

type meshMembership struct {
	Gateways []meshGateway `json:"gateways"`
	Quorum   bool          `json:"quorum"`
}

// leader is the gateway this view calls leader; "" when none.
func (ms meshMembership) leader() string {
	for _, g := range ms.Gateways {
		if g.Leader {
			return g.Name
		}
	}
	return ""
}

// reachable counts the gateways this view reaches.
func (ms meshMembership) reachable() int {
	n := 0
	for _, g := range ms.Gateways {
		if g.Reachable {
			n++
		}
	}
	return n
}

// voters counts the gateways this view has as voting members (a joined gateway promotes
// itself once it runs and has caught up).
func (ms meshMembership) voters() int {
	n := 0
	for _, g := range ms.Gateways {
		if g.Voter {
			n++
		}
	}
	return n
}

// membership runs `mesh status --json`; ok is false when the command fails (a daemon that is
// not there).
func (g *meshGW) membership(t *testing.T) (meshMembership, bool) {
	t.Helper()
	var ms meshMembership
	out, _, code := pg(t, "mesh", "status", "--state", g.state, "--json")
	if code != 0 || json.Unmarshal([]byte(out), &ms) != nil {
		return ms, false
	}
	return ms, true
}

// roster is `peers --json` reduced to what every gateway of a mesh must agree on, sorted by
// name, one device a line. Handshake times, endpoints, byte counts and a device's pending
// state (its TTL before the first handshake) are its home gateway's own facts (mesh-wiring:
// the mesh holds active or revoked), so pending is shown as active.
func (g *meshGW) roster(t *testing.T) string {
	t.Helper()
	out := pgOK(t, "peers", "--state", g.state, "--json")
	var peers []map[string]any
	if err := json.Unmarshal([]byte(out), &peers); err != nil {
		t.Fatalf("%s: peers --json: %v\n%s", g.name, err, out)
	}
	var lines []string
	for _, p := range peers {
		if p["state"] == "pending" {
			p["state"] = "active"
		}
		lines = append(lines, fmt.Sprintf("%v %v %v %v %v %v home=%v", p["name"], p["role"], p["state"], p["address"], p["address6"], p["public_key"], p["gateway"]))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// peersJSON is `printgate peers --json` on g as it prints it, but for the handshake ages,
// which change with the moment of asking: every gateway of a mesh prints the same.
func (g *meshGW) peersJSON(t *testing.T) string {
	t.Helper()
	out := pgOK(t, "peers", "--state", g.state, "--json")
	var peers []map[string]any
	if err := json.Unmarshal([]byte(out), &peers); err != nil {
		t.Fatalf("%s: peers --json: %v\n%s", g.name, err, out)
	}
	for _, p := range peers {
		delete(p, "last_handshake_age_seconds")
	}
	b, err := json.MarshalIndent(peers, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// meshLastLine is the last non-empty line of s.
func meshLastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// meshDecodeQR reads the WireGuard config from a QR PNG with zbarimg.
func meshDecodeQR(t *testing.T, png string) string {
	t.Helper()
	// stdout only: zbarimg may complain on stderr (no D-Bus in a container).
	raw, err := exec.Command("zbarimg", "--raw", "-q", png).Output()
	if err != nil {
		t.Fatalf("zbarimg %s: %v", png, err)
	}
	return strings.TrimSuffix(string(raw), "\n")
}

// meshDevice is an enrolled device behind its own wg-quick interface.
type meshDevice struct {
	name string
	ns   netns
	key  string // its API key
	addr string // its tunnel IPv4 address
	conf string // its config as enroll wrote it
	wg   *wgClient
}

// enrollDevice enrolls name on g with the CLI (the config file, no QR) and brings the config
// up with wg-quick in ns as interface m.prefix+tag. top owns the interface.
func (m *meshLab) enrollDevice(t, top *testing.T, g *meshGW, name, role string, ns netns, tag string) *meshDevice {
	t.Helper()
	conf := filepath.Join(t.TempDir(), name+".conf")
	out := pgOK(t, "enroll", "--state", g.state, name, "--role", role, "--conf", conf, "--qr", "none")
	dev := &meshDevice{name: name, ns: ns}
	if k := uiAPIKeyRE.FindStringSubmatch(out); k != nil {
		dev.key = k[1]
	}
	text, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	dev.conf = string(text)
	if a := regexp.MustCompile(`(?m)^Address = ([0-9.]+)`).FindStringSubmatch(dev.conf); a != nil {
		dev.addr = a[1]
	}
	dev.wg = newWGClient(top, ns, m.prefix+tag, dev.conf)
	dev.wg.up(t)
	return dev
}

// reaches tells whether dev gets an answer from the printer API at addr (a new connection).
func (dev *meshDevice) reaches(addr string) error {
	out, err := dev.ns.cmd("curl", "-sS", "--max-time", "3", "-o", "/dev/null", "-w", "%{http_code}", "http://"+addr+"/api/version").CombinedOutput()
	if err != nil {
		return fmt.Errorf("curl http://%s/api/version from %s: %v: %s", addr, dev.name, err, out)
	}
	if code := strings.TrimSpace(string(out)); code != "200" {
		return fmt.Errorf("curl http://%s/api/version from %s: HTTP %s", addr, dev.name, code)
	}
	return nil
}

// waitReaches polls until dev reaches the printer at addr.
func (dev *meshDevice) waitReaches(t *testing.T, what, addr string, timeout time.Duration) {
	t.Helper()
	var last error
	deadline := time.Now().Add(timeout)
	for {
		if last = dev.reaches(addr); last == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s cannot reach %s after %v: %v", what, dev.name, addr, timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// meshLANProbe tells whether ns reaches ip on the LAN: a TCP connection to a closed port gets a
// reset (refused) from a reachable host, nothing from a cut one. (No ping in the image.)
func meshLANProbe(ns netns, ip string) error {
	var err error
	ns.do(func() error {
		var c net.Conn
		c, err = net.DialTimeout("tcp", net.JoinHostPort(ip, "9"), time.Second)
		if err == nil {
			c.Close()
		}
		return nil
	})
	if errors.Is(err, syscall.ECONNREFUSED) {
		return nil
	}
	if err == nil {
		return fmt.Errorf("%s:9 accepted a TCP connection", ip)
	}
	return err
}

// byName is the gateway called name; nil when none is.
func (m *meshLab) byName(name string) *meshGW {
	for _, g := range m.gws {
		if g.name == name {
			return g
		}
	}
	return nil
}

// waitSameRoster polls until every running gateway's `peers --json` prints the same, byte for
// byte but for the handshake ages: replicated facts and the home gateways' live ones.
func (m *meshLab) waitSameRoster(t *testing.T, what string) {
	t.Helper()
	// Generous: a gateway that comes back waits for WireGuard handshakes (seconds) before raft
	// reaches it, more on a loaded machine.
	const timeout = 30 * time.Second
	deadline := time.Now().Add(timeout)
	for {
		var first string
		same, seen := true, map[string]string{}
		for _, g := range m.gws {
			if g.d == nil {
				continue
			}
			r := g.peersJSON(t)
			seen[g.name] = r
			if len(seen) == 1 {
				first = r
			} else if r != first {
				same = false
			}
		}
		if same {
			return
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, g := range m.gws {
				if r, ok := seen[g.name]; ok {
					fmt.Fprintf(&b, "--- %s:\n%s\n", g.name, r)
				}
			}
			t.Fatalf("%s: the gateways' peers --json still differ after %v (handshake ages left out):\n%s", what, timeout, b.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// revokeEverywhere revokes dev on gw while dev holds an open keep-alive connection to every
// printer, and measures how long after `printgate revoke` started the device gets no answer
// from any printer, on its open connections or on new ones. The goal is 200 ms; more than
// 2 s fails.
func (m *meshLab) revokeEverywhere(t *testing.T, gw *meshGW, dev *meshDevice, printers map[string]meshPrinter) {
	t.Helper()
	type probe struct {
		name, addr string
		conn       net.Conn
		br         *bufio.Reader
		dead       time.Duration
		answered   int // probes after the revoke that got an answer
	}
	request := func(c net.Conn, br *bufio.Reader, host string, wait time.Duration) error {
		c.SetDeadline(time.Now().Add(wait))
		if _, err := fmt.Fprintf(c, "GET /api/version HTTP/1.1\r\nHost: %s\r\n\r\n", host); err != nil {
			return err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %s", resp.Status)
		}
		return nil
	}
	dial := func(addr string, wait time.Duration) (net.Conn, error) {
		var c net.Conn
		err := dev.ns.do(func() error {
			var err error
			c, err = net.DialTimeout("tcp", net.JoinHostPort(addr, "80"), wait)
			return err
		})
		return c, err
	}
	var probes []*probe
	for _, name := range slices.Sorted(maps.Keys(printers)) {
		p := &probe{name: name, addr: printers[name].Address}
		c, err := dial(p.addr, 5*time.Second)
		if err != nil {
			t.Fatalf("%s: connect to printer %s at %s before the revoke: %v", dev.name, name, p.addr, err)
		}
		defer c.Close()
		p.conn, p.br = c, bufio.NewReader(c)
		if err := request(p.conn, p.br, p.addr, 5*time.Second); err != nil {
			t.Fatalf("%s: keep-alive request to printer %s before the revoke: %v", dev.name, name, err)
		}
		probes = append(probes, p)
	}

	const wait = 250 * time.Millisecond // a probe with no answer in this time counts as dead
	start := time.Now()
	out := pgOK(t, "revoke", "--state", gw.state, dev.name)
	returned := time.Since(start)
	var wg sync.WaitGroup
	for _, p := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			openDead := false
			for time.Since(start) < 5*time.Second {
				at := time.Since(start)
				if !openDead && request(p.conn, p.br, p.addr, wait) != nil {
					openDead = true
				}
				newDead := true
				if c, err := dial(p.addr, wait); err == nil {
					br := bufio.NewReader(c)
					newDead = request(c, br, p.addr, wait) != nil
					c.Close()
				}
				if openDead && newDead {
					p.dead = at
					return
				}
				p.answered++
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	var worst time.Duration
	var each []string
	for _, p := range probes {
		if p.dead == 0 {
			t.Errorf("%s revoked on %s: printer %s at %s still answers it 5 s later", dev.name, gw.name, p.name, p.addr)
			continue
		}
		worst = max(worst, p.dead)
		each = append(each, fmt.Sprintf("%s %v after %d answered probes", p.name, p.dead.Round(time.Millisecond), p.answered))
	}
	t.Logf("revoke %s on %s (%s): the command returned after %v; no printer answers after %v (%s; probes time out after %v)",
		dev.name, gw.name, strings.TrimSpace(out), returned.Round(time.Millisecond), worst.Round(time.Millisecond), strings.Join(each, ", "), wait)
	if worst > 2*time.Second {
		t.Errorf("%s revoked on %s: printers answered it until %v after the revoke, want within 2 s (goal 200 ms)", dev.name, gw.name, worst)
	}
	for _, p := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if body, err := curlFail(dev.ns, "http://"+p.addr+"/api/version"); err == nil {
				t.Errorf("%s revoked on %s: a new request to printer %s was answered: %s", dev.name, gw.name, p.name, body)
			}
		}()
	}
	wg.Wait()
}
