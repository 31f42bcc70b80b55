package gateway

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/control"
	"github.com/printgate/printgate/netstack"
)

// freeUDPPort returns a loopback UDP port that was free a moment ago.
func freeUDPPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// newState initializes a state directory whose devices dial 127.0.0.1.
func newState(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	port := freeUDPPort(t)
	if _, err := enroll.Init(dir, enroll.InitOptions{Endpoint: fmt.Sprintf("127.0.0.1:%d", port), ListenPort: port}); err != nil {
		t.Fatalf("enroll.Init: %v", err)
	}
	return dir
}

func startGateway(t *testing.T, dir string) *Gateway {
	t.Helper()
	g, err := Start(context.Background(), Config{StateDir: dir, StatsInterval: 50 * time.Millisecond, Logf: t.Logf})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// client is an in-process WireGuard client built from an enrollment's wg-quick config: a
// plain wireguard-go device (the gateway's tunnel.Device only takes host routes) over a stack.
type client struct {
	stack *netstack.Stack
	dev   *device.Device
	addr  netip.Addr
	once  sync.Once
}

func (c *client) close() {
	c.once.Do(func() {
		c.dev.Close()
		c.stack.Close()
	})
}

// parseConfig reads the keys a client needs out of a wg-quick config.
func parseConfig(t *testing.T, text string) (priv, peer, psk wgtypes.Key, addr netip.Addr, allowed []netip.Prefix, ep netip.AddrPort) {
	t.Helper()
	for line := range strings.Lines(text) {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		var err error
		switch k {
		case "PrivateKey":
			priv, err = wgtypes.ParseKey(v)
		case "PublicKey":
			peer, err = wgtypes.ParseKey(v)
		case "PresharedKey":
			psk, err = wgtypes.ParseKey(v)
		case "Address":
			p, perr := netip.ParsePrefix(strings.TrimSpace(strings.Split(v, ",")[0]))
			addr, err = p.Addr(), perr
		case "AllowedIPs":
			for _, s := range strings.Split(v, ",") {
				p, perr := netip.ParsePrefix(strings.TrimSpace(s))
				if perr != nil {
					err = perr
				}
				allowed = append(allowed, p)
			}
		case "Endpoint":
			ep, err = netip.ParseAddrPort(v)
		}
		if err != nil {
			t.Fatalf("config line %q: %v", line, err)
		}
	}
	return
}

func newClient(t *testing.T, config string) *client {
	t.Helper()
	priv, peer, psk, addr, allowed, ep := parseConfig(t, config)
	st, err := netstack.New(netstack.Config{Addrs: []netip.Addr{addr}})
	if err != nil {
		t.Fatal(err)
	}
	dev := device.NewDevice(st.TUN(), conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	c := &client{stack: st, dev: dev, addr: addr}
	t.Cleanup(c.close)
	var b strings.Builder
	fmt.Fprintf(&b, "private_key=%s\nlisten_port=0\npublic_key=%s\npreshared_key=%s\nendpoint=%s\npersistent_keepalive_interval=1\n",
		hex.EncodeToString(priv[:]), hex.EncodeToString(peer[:]), hex.EncodeToString(psk[:]), ep)
	for _, p := range allowed {
		fmt.Fprintf(&b, "allowed_ip=%s\n", p)
	}
	if err := dev.IpcSet(b.String()); err != nil {
		t.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *client) httpClient(keepAlive bool) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: !keepAlive,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				ap, err := netip.ParseAddrPort(addr)
				if err != nil {
					return nil, err
				}
				return c.stack.DialTCP(ctx, ap)
			},
		},
	}
}

func get(hc *http.Client, url string) (string, error) {
	resp, err := hc.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return string(b), fmt.Errorf("status %s", resp.Status)
	}
	return string(b), nil
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func peerState(g *Gateway, name string) string {
	for _, p := range g.Peers() {
		if p.Name == name {
			return string(p.State)
		}
	}
	return ""
}

// checkNoLeaks fails when goroutines started during the test outlive it.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutines: %d before, %d after Close\n%s", before, n, buf)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// TestGatewayEndToEndInProcess: a wireguard-go client in the test, configured from the
// enrollment's wg-quick text, reaches the gateway's HTTP service through the tunnel; the peer
// becomes active; revocation closes its open keep-alive connection and refuses new ones;
// Close leaves no goroutine behind.
func TestGatewayEndToEndInProcess(t *testing.T) {
	checkNoLeaks(t)
	dir := newState(t)
	g, err := Start(context.Background(), Config{StateDir: dir, StatsInterval: 50 * time.Millisecond, Logf: t.Logf})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer g.Close()

	en, err := g.Enroll(enroll.Request{Name: "phone", Role: enroll.Operator})
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	c := newClient(t, en.Config)
	defer c.close()
	url := "http://" + g.Addrs()[0].String() + "/api/v1/whoami"
	hc := c.httpClient(true)
	var body string
	waitFor(t, "first GET through the tunnel", func() bool {
		body, err = get(hc, url)
		return err == nil
	})
	var who struct{ Name, Role string }
	if err := json.Unmarshal([]byte(body), &who); err != nil || who.Name != "phone" || who.Role != "operator" {
		t.Errorf("GET %s = %q, want phone as operator, named from the tunnel address", url, body)
	}
	waitFor(t, "peer active", func() bool { return peerState(g, "phone") == "active" })

	// An open keep-alive connection, held outside the HTTP client so we see it die.
	conn, err := c.stack.DialTCP(context.Background(), netip.AddrPortFrom(g.Addrs()[0], 80))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	fmt.Fprintf(conn, "GET /api/v1/whoami HTTP/1.1\r\nHost: %s\r\n\r\n", g.Addrs()[0])
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("keep-alive GET: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	res, err := g.Revoke("phone")
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if res.ClosedConns < 1 {
		t.Errorf("Revoke closed %d connections, want at least the open keep-alive", res.ClosedConns)
	}
	conn.SetDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(conn, "GET /api/v1/whoami HTTP/1.1\r\nHost: %s\r\n\r\n", g.Addrs()[0])
	if _, err := http.ReadResponse(br, nil); err == nil {
		t.Errorf("keep-alive connection still served after revocation")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if nc, err := c.stack.DialTCP(ctx, netip.AddrPortFrom(g.Addrs()[0], 80)); err == nil {
		nc.Close()
		t.Errorf("new connection after revocation succeeded")
	}
	if got := peerState(g, "phone"); got != "revoked" {
		t.Errorf("peer state after Revoke = %q, want revoked", got)
	}
	c.close()
	if err := g.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := os.Stat(control.Path(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket left after Close: %v", err)
	}
	if err := g.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
}

// TestPendingExpiry: a pending peer whose TTL passes without a handshake leaves the device.
func TestPendingExpiry(t *testing.T) {
	dir := newState(t)
	g := startGateway(t, dir)
	en, err := g.Enroll(enroll.Request{Name: "photo", TTL: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	onDevice := func() bool {
		st, err := g.dev.Stats()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range st {
			if s.PublicKey == en.Peer.PublicKey {
				return true
			}
		}
		return false
	}
	if !onDevice() {
		t.Fatalf("pending peer not on the device after Enroll")
	}
	waitFor(t, "expired peer off the device", func() bool { return !onDevice() })
	if got := peerState(g, "photo"); got != "expired" {
		t.Errorf("state = %q, want expired", got)
	}
}

// TestControlSocket: mode 0600, every operation, bad requests refused.
func TestControlSocket(t *testing.T) {
	dir := newState(t)
	startGateway(t, dir)
	fi, err := os.Stat(control.Path(dir))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket mode = %v, want socket 0600", fi.Mode())
	}
	ctx := context.Background()
	resp, err := control.Unix(dir).Call(ctx, control.Request{Op: control.OpEnroll, Name: "laptop", Role: "admin", TTL: "1h"})
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	if resp.Enrollment == nil || !strings.Contains(resp.Enrollment.Config, "PrivateKey = ") || len(resp.Enrollment.APIKey) != 43 {
		t.Fatalf("enroll reply = %+v, want a config and a 43-character API key", resp.Enrollment)
	}
	resp, err = control.Unix(dir).Call(ctx, control.Request{Op: control.OpPeers})
	if err != nil || len(resp.Peers) != 1 || resp.Peers[0].Name != "laptop" || resp.Peers[0].State != "pending" || resp.Peers[0].Address == "" {
		t.Fatalf("peers = %+v, %v; want laptop pending with an address", resp, err)
	}
	resp, err = control.Unix(dir).Call(ctx, control.Request{Op: control.OpStatus})
	if err != nil || resp.Status == nil || !resp.Status.Running || len(resp.Status.Addresses) != 2 {
		t.Fatalf("status = %+v, %v", resp, err)
	}
	resp, err = control.Unix(dir).Call(ctx, control.Request{Op: control.OpRevoke, Name: "laptop"})
	if err != nil || resp.Revoked == nil || resp.Revoked.Peer.State != "revoked" {
		t.Fatalf("revoke = %+v, %v", resp, err)
	}
	for _, req := range []control.Request{
		{Op: "shutdown"},
		{Op: control.OpEnroll, Name: "bad=name"},
		{Op: control.OpEnroll, Name: "x", Role: "root"},
		{Op: control.OpEnroll, Name: "x", TTL: "-1s"},
		{Op: control.OpEnroll, Name: "x", PublicKey: "not-a-key"},
		{Op: control.OpRevoke, Name: "nobody"},
	} {
		if _, err := control.Unix(dir).Call(ctx, req); err == nil {
			t.Errorf("Call(%+v) succeeded, want an error", req)
		}
	}
	resp, err = control.Unix(dir).Call(ctx, control.Request{Op: control.OpPeers})
	if err != nil || len(resp.Peers) != 1 {
		t.Errorf("roster changed by refused requests: %+v, %v", resp, err)
	}
}

// TestCorruptRosterFailsClosed: a corrupt roster stops Start with enroll's message, and no
// UDP port is bound.
func TestCorruptRosterFailsClosed(t *testing.T) {
	dir := newState(t)
	reg, err := enroll.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	port := reg.Gateway().ListenPort
	reg.Close()
	if err := os.WriteFile(filepath.Join(dir, enroll.FileRoster), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Start(context.Background(), Config{StateDir: dir})
	if !errors.Is(err, enroll.ErrCorrupt) {
		t.Fatalf("Start on a corrupt roster = %v, want enroll.ErrCorrupt", err)
	}
	if !strings.Contains(err.Error(), "recover") && !strings.Contains(err.Error(), "backup") {
		t.Errorf("error %q names no recovery", err)
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{Port: port})
	if err != nil {
		t.Errorf("UDP port %d still bound after a refused start: %v", port, err)
	} else {
		c.Close()
	}
}

func TestParsePrinterSpec(t *testing.T) {
	tests := []struct {
		in      string
		want    PrinterSpec
		wantErr bool
	}{
		{"mk4=/dev/ttyACM0", PrinterSpec{Name: "mk4", Port: "/dev/ttyACM0"}, false},
		{"mk4=/dev/ttyACM0,baud=115200", PrinterSpec{Name: "mk4", Port: "/dev/ttyACM0", Baud: 115200}, false},
		{"s1=sim", PrinterSpec{Name: "s1", Port: "sim"}, false},
		{"mk4=/dev/ttyACM0,window=1", PrinterSpec{Name: "mk4", Port: "/dev/ttyACM0", Window: 1}, false},
		{"mk4=/dev/x,window=0", PrinterSpec{}, true},
		{"mk4=/dev/x,window=17", PrinterSpec{}, true},
		{"mk4=/dev/x,cancel-script=/etc/printgate/cancel.gcode", PrinterSpec{Name: "mk4", Port: "/dev/x", CancelScript: "/etc/printgate/cancel.gcode"}, false},
		{"mk4=/dev/x,cancel-script=cancel.gcode", PrinterSpec{}, true},
		{"mk4", PrinterSpec{}, true},
		{"=/dev/x", PrinterSpec{}, true},
		{"mk4=", PrinterSpec{}, true},
		{"mk4=ttyACM0", PrinterSpec{}, true},
		{"mk4=/dev/x,baud=fast", PrinterSpec{}, true},
		{"mk4=/dev/x,speed=1", PrinterSpec{}, true},
		{"bad\x01name=/dev/x", PrinterSpec{}, true},
	}
	for _, tt := range tests {
		got, err := ParsePrinterSpec(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParsePrinterSpec(%q) = %+v, %v; want %+v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestSimPrinter: a NAME=sim printer gets its own tunnel address, connects, and Close stops the
// controller (its heaters-off path) and the simulator with no goroutine left behind.
func TestSimPrinter(t *testing.T) {
	checkNoLeaks(t)
	dir := newState(t)
	g, err := Start(context.Background(), Config{StateDir: dir, Printers: []PrinterSpec{{Name: "mk", Port: SimPort}}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	waitFor(t, "simulated printer operational", func() bool {
		st := g.Status()
		return len(st.Printers) == 1 && st.Printers[0].State == "operational"
	})
	st := g.Status()
	if p := st.Printers[0]; p.Name != "mk" || p.Address == "" || p.Address == st.Addresses[0] {
		t.Errorf("printer = %+v, want mk with an address of its own", p)
	}
	if err := g.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestAdminRevokeThroughTunnel: an admin revokes a device with the native API inside the
// tunnel (printerd → the gateway's revoke path): the device's open connection is closed and
// the audit log holds one revoke record, the admin's.
func TestAdminRevokeThroughTunnel(t *testing.T) {
	dir := newState(t)
	g := startGateway(t, dir)
	adminEn, err := g.Enroll(enroll.Request{Name: "admin", Role: enroll.Admin})
	if err != nil {
		t.Fatal(err)
	}
	victimEn, err := g.Enroll(enroll.Request{Name: "victim", Role: enroll.Viewer})
	if err != nil {
		t.Fatal(err)
	}
	admin, victim := newClient(t, adminEn.Config), newClient(t, victimEn.Config)
	gw := g.Addrs()[0]
	base := "http://" + gw.String()
	vc := victim.httpClient(true)
	waitFor(t, "victim through the tunnel", func() bool { _, err := get(vc, base+"/api/v1/whoami"); return err == nil })
	conn, err := victim.stack.DialTCP(context.Background(), netip.AddrPortFrom(gw, 80))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	ac := admin.httpClient(false)
	req, _ := http.NewRequest("DELETE", base+"/api/v1/devices/victim", nil)
	req.Header.Set("X-Printgate", "1")
	var resp *http.Response
	waitFor(t, "admin's DELETE answered", func() bool {
		resp, err = ac.Do(req)
		return err == nil
	})
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE /api/v1/devices/victim = %s, want 204", resp.Status)
	}
	conn.SetDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(conn, "GET /api/v1/whoami HTTP/1.1\r\nHost: %s\r\n\r\n", gw)
	if _, err := http.ReadResponse(bufio.NewReader(conn), nil); err == nil {
		t.Errorf("revoked device's open connection still served")
	}
	if got := peerState(g, "victim"); got != "revoked" {
		t.Errorf("victim state %q, want revoked", got)
	}
	g.Close()
	b, err := os.ReadFile(filepath.Join(dir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, `"action":"revoke"`) && !strings.Contains(line, `"result":"intent"`) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("audit log has %d revoke outcomes, want 1:\n%s", n, b)
	}
}

// TestEndpointUpdate: Config.Endpoint replaces the endpoint that new configs carry.
func TestEndpointUpdate(t *testing.T) {
	dir := newState(t)
	g, err := Start(context.Background(), Config{StateDir: dir, Endpoint: "gw.example.org:4444", Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if got := g.Status().Endpoint; got != "gw.example.org:4444" {
		t.Errorf("status endpoint = %q, want gw.example.org:4444", got)
	}
	en, err := g.Enroll(enroll.Request{Name: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(en.Config, "Endpoint = gw.example.org:4444\n") {
		t.Errorf("config after the endpoint change:\n%s", en.Config)
	}
	g.Close()
	if _, err := Start(context.Background(), Config{StateDir: dir, Endpoint: "bad host:x"}); err == nil {
		t.Errorf("Start with a malformed endpoint succeeded")
	}
}

func FuzzParsePrinterSpec(f *testing.F) {
	for _, s := range []string{
		"mk4=/dev/serial/by-id/usb-Prusa-if00,baud=115200", "sim1=sim",
		"cam=sim,webcam=http://127.0.0.1:8080/?action=stream,snapshot=http://127.0.0.1:8080/?action=snapshot",
		"x=relative/path", "=", "a=/dev/ttyACM0,baud=9e9", "a=/dev/x,unknown=1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := ParsePrinterSpec(s)
		if err != nil {
			return
		}
		if spec.Port != SimPort && !strings.HasPrefix(spec.Port, "/") {
			t.Fatalf("ParsePrinterSpec(%q) accepted a relative serial path %q", s, spec.Port)
		}
		if spec.Baud != 0 && (spec.Baud < 300 || spec.Baud > 4_000_000) {
			t.Fatalf("ParsePrinterSpec(%q) accepted baud %d", s, spec.Baud)
		}
		if spec.Window < 0 || spec.Window > 16 {
			t.Fatalf("ParsePrinterSpec(%q) accepted window %d", s, spec.Window)
		}
		back, err := ParsePrinterSpec(spec.String())
		if err != nil || back != spec {
			t.Fatalf("ParsePrinterSpec(%q) = %+v; round trip through %q = %+v, %v", s, spec, spec.String(), back, err)
		}
	})
}

// TestControlSocketBeforePort: by the time the UDP port is bound (what a script or a unit
// takes for "up"), the control socket accepts, and a call made then is answered once the
// gateway is up, not refused and not sent to the locked state directory.
func TestControlSocketBeforePort(t *testing.T) {
	dir := newState(t)
	type answer struct {
		resp *control.Response
		err  error
	}
	done := make(chan answer, 1)
	cfg := Config{StateDir: dir, StatsInterval: 50 * time.Millisecond, Logf: t.Logf}
	cfg.onDeviceUp = func() {
		fi, err := os.Stat(control.Path(dir))
		if err != nil || fi.Mode()&os.ModeSocket == 0 {
			t.Errorf("UDP port bound while the control socket is missing: %v", err)
		}
		go func() {
			resp, err := control.Unix(dir).Call(context.Background(), control.Request{Op: control.OpStatus})
			done <- answer{resp, err}
		}()
	}
	g, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer g.Close()
	a := <-done
	if a.err != nil || a.resp.Status == nil || !a.resp.Status.Running {
		t.Fatalf("status called while starting = %+v, %v; want the running gateway's answer", a.resp, a.err)
	}
}
