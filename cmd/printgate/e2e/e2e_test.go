package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/printgate/printgate/cmd/printgate/gateway"
	"github.com/printgate/printgate/enroll/control"
)

const listenPort = 51820

// wgClient is a Debian wg-quick interface in the client namespace.
type wgClient struct {
	ns    netns
	iface string
	conf  string
}

func newWGClient(t *testing.T, ns netns, iface, config string) *wgClient {
	t.Helper()
	dir := t.TempDir()
	c := &wgClient{ns: ns, iface: iface, conf: filepath.Join(dir, iface+".conf")}
	if err := os.WriteFile(c.conf, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.ns.cmd("wg-quick", "down", c.conf).Run()
		exec.Command("ip", "-n", ns.name, "link", "del", iface).Run()
		os.Remove("/var/run/wireguard/" + iface + ".sock")
	})
	return c
}

func (c *wgClient) up(t *testing.T) {
	t.Helper()
	cmd := c.ns.cmd("wg-quick", "up", c.conf)
	// Debian's wireguard-go when the kernel has no WireGuard module; it refuses to run on
	// Linux without the second variable.
	cmd.Env = append(os.Environ(), "WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go", "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("wg-quick up %s: %v\n%s", c.conf, err, out)
	} else {
		t.Logf("wg-quick up %s:\n%s", c.iface, out)
	}
}

func (c *wgClient) down(t *testing.T) {
	t.Helper()
	if c == nil {
		return // the subtest that brings it up was not run (go test -run)
	}
	if out, err := c.ns.cmd("wg-quick", "down", c.conf).CombinedOutput(); err != nil {
		t.Fatalf("wg-quick down: %v\n%s", err, out)
	}
	// wireguard-go exits when its TUN goes; wait for its UAPI socket to go with it.
	waitFor(t, "client wireguard-go gone", 10*time.Second, func() bool {
		_, err := os.Stat("/var/run/wireguard/" + c.iface + ".sock")
		return os.IsNotExist(err)
	})
}

// latestHandshake returns the latest handshake of the interface's only peer (zero: none).
func latestHandshake(t *testing.T, iface string) int64 {
	t.Helper()
	out := sh(t, "wg", "show", iface, "latest-handshakes")
	var max int64
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			max = max0(max, n)
		}
	}
	return max
}

func max0(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// curlFail is curl where failure is expected: a shorter wait.
func curlFail(ns netns, url string) (string, error) {
	out, err := ns.cmd("curl", "-sS", "--max-time", "2", url).CombinedOutput()
	return string(out), err
}

// whoami asks the gateway, through the tunnel from ns, who the caller is.
func whoami(ns netns, base string) (name, role string, err error) {
	out, err := curl(ns, base+"api/v1/whoami")
	if err != nil {
		return "", "", fmt.Errorf("%v: %s", err, out)
	}
	var w struct{ Name, Role string }
	if err := json.Unmarshal([]byte(out), &w); err != nil {
		return "", "", fmt.Errorf("whoami %q: %v", out, err)
	}
	return w.Name, w.Role, nil
}

func curl(ns netns, url string) (string, error) {
	out, err := ns.cmd("curl", "-sS", "--max-time", "5", url).CombinedOutput()
	return string(out), err
}

// TestGatewayEndToEnd is issue 2's and issue 3's acceptance with the real binary and Debian's
// WireGuard tools, in two namespaces the test makes: the gateway in one, a wg-quick client in
// the other, a veth pair between them. One gateway serves the subtests in order.
func TestGatewayEndToEnd(t *testing.T) {
	requireRoot(t, "ip", "wg", "wg-quick", "wireguard-go", "zbarimg", "curl")
	top := t // what outlives a subtest (the daemon, the client interface) is cleaned up by top
	l := newLab(t)
	state := filepath.Join(t.TempDir(), "state")
	out := pgOK(t, "init", "--state", state, "--endpoint", fmt.Sprintf("%s:%d", l.gwIP, listenPort), "--listen-port", strconv.Itoa(listenPort))
	t.Logf("init:\n%s", out)
	gwIface := l.prefix + "w"
	var printerArgs []string
	if gateway.SimAvailable {
		printerArgs = []string{"--printer", "mk=sim"}
	}
	d := startDaemon(t, l.gw, state, gwIface, printerArgs...)

	var st control.Status
	if err := json.Unmarshal([]byte(pgOK(t, "status", "--state", state, "--json")), &st); err != nil {
		t.Fatal(err)
	}
	gwURL := "http://" + st.Addresses[0] + "/"

	t.Run("StatusJSON", func(t *testing.T) {
		if !st.Running || st.ListenPort != listenPort || st.PublicKey == "" || len(st.Addresses) != 2 || st.Addresses[0] != "10.77.0.1" || st.Printers == nil {
			t.Errorf("status --json = %+v; want running, port %d, a key, 10.77.0.1 and an IPv6 address, a printers list", st, listenPort)
		}
		fi, err := os.Stat(control.Path(state))
		if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
			t.Errorf("control socket: %v, mode %v; want a 0600 socket", err, fi.Mode())
		}
	})

	t.Run("NoHostListener", func(t *testing.T) {
		checkSockets(t, d.pid(), listenPort)
	})

	phoneDir := t.TempDir()
	png := filepath.Join(phoneDir, "phone.png")
	var phone *wgClient
	var config, apiKey string
	ok := t.Run("RealClient", func(t *testing.T) {
		out := pgOK(t, "enroll", "--state", state, "phone", "--role", "admin", "--png", png, "--qr", "none")
		m := regexp.MustCompile(`API key .*: ([A-Za-z0-9_-]{43})`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("enroll printed no API key:\n%s", out)
		}
		apiKey = m[1]
		fi, err := os.Stat(png)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("PNG %s: %v, mode %v; want 0600", png, err, fi.Mode())
		}
		// stdout only: zbarimg may complain on stderr (no D-Bus in a container).
		rawb, err := exec.Command("zbarimg", "--raw", "-q", png).Output()
		if err != nil {
			t.Fatalf("zbarimg %s: %v", png, err)
		}
		raw := string(rawb)
		config = strings.TrimSuffix(raw, "\n")
		if !strings.HasPrefix(config, "[Interface]\nPrivateKey = ") || strings.Contains(config, "DNS") {
			t.Fatalf("QR decodes to an unexpected config:\n%s", config)
		}
		phone = newWGClient(top, l.cl, l.prefix+"c", config)
		phone.up(t)
		if name, role, err := whoami(l.cl, gwURL); err != nil || name != "phone" || role != "admin" {
			t.Fatalf("curl %s through the tunnel: %s %s %v", gwURL, name, role, err)
		}
		url6 := "http://[" + st.Addresses[1] + "]/"
		if name, _, err := whoami(l.cl, url6); err != nil || name != "phone" {
			t.Errorf("curl %s through the tunnel: %s %v", url6, name, err)
		}
		hs := latestHandshake(t, gwIface)
		if hs == 0 || time.Since(time.Unix(hs, 0)) > time.Minute {
			t.Errorf("wg show %s: latest handshake %d, want a recent one", gwIface, hs)
		}
		waitFor(t, "phone active in peers --json", 10*time.Second, func() bool {
			p, ok := peerByName(peersJSON(t, state), "phone")
			return ok && p.State == "active" && p.LastHandshake != nil && p.Endpoint != ""
		})
		p, _ := peerByName(peersJSON(t, state), "phone")
		if p.Address != "10.77.0.100" || p.Role != "admin" || p.Clone {
			t.Errorf("peers --json phone = %+v", p)
		}
	})
	if !ok {
		t.Fatalf("real client failed; the remaining subtests need it\n%s", d.stderr)
	}

	t.Run("PrinterThroughTunnel", func(t *testing.T) {
		if !gateway.SimAvailable {
			t.Skip("this build has no simulated printer (printerd/marlinsim)")
		}
		if len(st.Printers) != 1 || st.Printers[0].Name != "mk" || st.Printers[0].Address != "10.77.0.11" {
			t.Fatalf("status printers = %+v, want mk at 10.77.0.11", st.Printers)
		}
		printerFlow(t, l, st.Printers[0].Address, gwURL, apiKey)
	})

	t.Run("Silence", func(t *testing.T) {
		silence(t, l, st.PublicKey, d.pid())
	})

	t.Run("PendingExpiry", func(t *testing.T) {
		pgOK(t, "enroll", "--state", state, "ghost", "--ttl", "1s", "--qr", "none")
		ghost, _ := peerByName(peersJSON(t, state), "ghost")
		if !strings.Contains(sh(t, "wg", "show", gwIface, "peers"), ghost.PublicKey) {
			t.Errorf("pending peer not on the device after enroll")
		}
		waitFor(t, "ghost expired", 15*time.Second, func() bool {
			p, ok := peerByName(peersJSON(t, state), "ghost")
			return ok && p.State == "expired"
		})
		// The stats loop (every 200 ms here) takes it off the device.
		waitFor(t, "expired peer off the device", 5*time.Second, func() bool {
			return !strings.Contains(sh(t, "wg", "show", gwIface, "peers"), ghost.PublicKey)
		})
	})

	t.Run("Restart", func(t *testing.T) {
		before := peersJSON(t, state)
		if err := d.stop(t); err != nil {
			t.Errorf("printgate run exit on SIGTERM: %v\n%s", err, d.stderr)
		}
		for _, p := range []string{control.Path(state), "/var/run/wireguard/" + gwIface + ".sock"} {
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Errorf("%s left after shutdown: %v", p, err)
			}
		}
		// enroll with the daemon stopped: the state directory directly.
		pgOK(t, "enroll", "--state", state, "offline", "--qr", "none")
		offline, _ := peerByName(peersJSON(t, state), "offline")

		d = startDaemon(top, l.gw, state, gwIface)
		var st2 control.Status
		json.Unmarshal([]byte(pgOK(t, "status", "--state", state, "--json")), &st2)
		if st2.PublicKey != st.PublicKey || st2.ListenPort != st.ListenPort || !slices.Equal(st2.Addresses, st.Addresses) {
			t.Errorf("after restart status = %+v, want key, port and addresses of %+v", st2, st)
		}
		after := peersJSON(t, state)
		for _, b := range before {
			a, ok := peerByName(after, b.Name)
			if !ok || a.Address != b.Address || a.Address6 != b.Address6 || a.PublicKey != b.PublicKey {
				t.Errorf("after restart peer %s = %+v, want %+v", b.Name, a, b)
			}
		}
		if peers := sh(t, "wg", "show", gwIface, "peers"); !strings.Contains(peers, offline.PublicKey) {
			t.Errorf("peer enrolled while stopped is not on the device after restart:\n%s", peers)
		}
		phone.down(t)
		phone.up(t)
		if name, _, err := whoami(l.cl, gwURL); err != nil || name != "phone" {
			t.Errorf("old config after restart: %s %v", name, err)
		}
	})

	// One client interface at a time holds the mesh route in the client namespace.
	phone.down(t)

	t.Run("OwnKey", func(t *testing.T) {
		// A laptop keeps its own key: the gateway never has a private key for it.
		priv := strings.TrimSpace(sh(t, "wg", "genkey"))
		cmd := exec.Command("wg", "pubkey")
		cmd.Stdin = strings.NewReader(priv + "\n")
		pubb, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(t.TempDir(), "laptop.conf")
		pgOK(t, "enroll", "--state", state, "laptop", "--pubkey", strings.TrimSpace(string(pubb)), "--conf", conf, "--qr", "none")
		text, err := os.ReadFile(conf)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(text), "PrivateKey = REPLACE-WITH-YOUR-PRIVATE-KEY") {
			t.Fatalf("--pubkey config does not leave the private key to the owner:\n%s", text)
		}
		filled := strings.Replace(string(text), "REPLACE-WITH-YOUR-PRIVATE-KEY", priv, 1)
		laptop := newWGClient(t, l.cl, l.prefix+"k", filled)
		laptop.up(t)
		if name, role, err := whoami(l.cl, gwURL); err != nil || name != "laptop" || role != "viewer" {
			t.Errorf("own-key laptop through the tunnel: %s %s %v", name, role, err)
		}
		laptop.down(t)
	})

	t.Run("Revocation", func(t *testing.T) {
		revocationTrials(t, top, l, state, 20)
	})

	t.Run("RevokedNeverHandshakes", func(t *testing.T) {
		phone.up(t)
		if _, _, err := whoami(l.cl, gwURL); err != nil {
			t.Fatalf("phone before revocation: %v", err)
		}
		out := pgOK(t, "revoke", "--state", state, "phone")
		t.Logf("%s", out)
		if _, err := curlFail(l.cl, gwURL); err == nil {
			t.Errorf("revoked phone still reaches the gateway")
		}
		// The same config, brought up again: a fresh device that never had a session.
		phone.down(t)
		phone.up(t)
		if body, err := curlFail(l.cl, gwURL); err == nil {
			t.Errorf("revoked config reaches the gateway: %s", body)
		}
		if hs := latestHandshake(t, phone.iface); hs != 0 {
			t.Errorf("wg show %s: latest handshake %d after revocation, want none", phone.iface, hs)
		}
		p, _ := peerByName(peersJSON(t, state), "phone")
		if p.State != "revoked" {
			t.Errorf("phone state %q, want revoked", p.State)
		}
	})

	if err := d.stop(t); err != nil {
		t.Errorf("printgate run exit on SIGTERM: %v\n%s", err, d.stderr)
	}
	// Every enrollment and revocation above is in the hash-chained audit log.
	if out := pgOK(t, "audit", "verify", "--state", state); !strings.Contains(out, "chain intact") {
		t.Errorf("audit verify: %s", out)
	}
	if t.Failed() {
		t.Logf("gateway log:\n%s", d.stderr)
	}
}

// checkSockets is invariant 1: the process owns no TCP socket at all and no UDP socket but
// the WireGuard port; every other socket it holds is a Unix or netlink socket.
func checkSockets(t *testing.T, pid, udpPort int) {
	t.Helper()
	held := func() map[string]bool {
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			t.Fatal(err)
		}
		inodes := map[string]bool{}
		for _, fd := range fds {
			target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if err != nil {
				continue
			}
			if ino, ok := strings.CutPrefix(target, "socket:["); ok {
				inodes[strings.TrimSuffix(ino, "]")] = true
			}
		}
		return inodes
	}
	inodes := held()
	if len(inodes) == 0 {
		t.Fatalf("process %d holds no sockets: wrong process?", pid)
	}
	seen := map[string]string{}
	udpSeen := 0
	for _, proto := range []string{"tcp", "tcp6", "udp", "udp6", "unix", "netlink"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, proto))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")[1:]
		for _, line := range lines {
			f := strings.Fields(line)
			var ino string
			switch proto {
			case "unix":
				if len(f) < 7 {
					continue
				}
				ino = f[6]
			case "netlink":
				if len(f) < 10 {
					continue
				}
				ino = f[9]
			default:
				if len(f) < 10 {
					continue
				}
				ino = f[9]
			}
			if !inodes[ino] {
				continue
			}
			seen[ino] = proto
			switch proto {
			case "tcp", "tcp6":
				t.Errorf("process has a %s socket %s (state %s): no TCP socket may exist on the host", proto, f[1], f[3])
			case "udp", "udp6":
				_, portHex, _ := strings.Cut(f[1], ":")
				port, _ := strconv.ParseUint(portHex, 16, 16)
				if int(port) != udpPort {
					t.Errorf("process has a UDP socket on port %d (%s), want only %d", port, f[1], udpPort)
				}
				udpSeen++
			}
		}
	}
	// A socket missing from every table may have been closed between the two reads (a
	// short-lived netlink or Unix socket): only one the process still holds is an error.
	still := held()
	for ino := range inodes {
		if seen[ino] != "" {
			continue
		}
		if !still[ino] {
			t.Logf("socket inode %s was closed during the check", ino)
			continue
		}
		t.Errorf("socket inode %s is neither TCP, UDP, Unix nor netlink (raw or packet socket?)", ino)
	}
	if udpSeen == 0 {
		t.Errorf("no UDP socket on port %d found: the check reads the wrong namespace", udpPort)
	}
	t.Logf("sockets: %d (%d UDP on port %d)", len(inodes), udpSeen, udpPort)
}

// revocationTrials measures revoke-to-dead with a real client: per trial a fresh peer is
// enrolled, the client interface takes its key and address, an HTTP keep-alive connection is
// opened, and `printgate revoke` runs. When it returns, the open connection must get no answer
// and a new connection must fail.
func revocationTrials(t, top *testing.T, l *lab, state string, trials int) {
	var st control.Status
	json.Unmarshal([]byte(pgOK(t, "status", "--state", state, "--json")), &st)
	gwAddr := net.JoinHostPort(st.Addresses[0], "80")
	var rc *wgClient
	var prevAddr string
	var wall, applied []time.Duration
	dir := t.TempDir()
	for i := range trials {
		name := fmt.Sprintf("rev%02d", i)
		conf := filepath.Join(dir, name+".conf")
		pgOK(t, "enroll", "--state", state, name, "--qr", "none", "--conf", conf)
		text, _ := os.ReadFile(conf)
		field := func(k string) string {
			m := regexp.MustCompile(`(?m)^` + k + ` = (.+)$`).FindStringSubmatch(string(text))
			if m == nil {
				t.Fatalf("config has no %s", k)
			}
			return m[1]
		}
		addr := strings.TrimSpace(strings.Split(field("Address"), ",")[0])
		if rc == nil {
			rc = newWGClient(top, l.cl, l.prefix+"r", string(text))
			rc.up(t)
		} else {
			key := filepath.Join(dir, name+".key")
			psk := filepath.Join(dir, name+".psk")
			os.WriteFile(key, []byte(field("PrivateKey")+"\n"), 0o600)
			os.WriteFile(psk, []byte(field("PresharedKey")+"\n"), 0o600)
			l.cl.sh(t, "wg", "set", rc.iface, "private-key", key, "peer", field("PublicKey"), "preshared-key", psk)
			l.cl.sh(t, "ip", "addr", "add", addr, "dev", rc.iface)
			l.cl.sh(t, "ip", "addr", "del", prevAddr, "dev", rc.iface)
			l.cl.sh(t, "ip", "route", "replace", st.Prefix4, "dev", rc.iface)
		}
		prevAddr = addr

		// An open keep-alive connection from this peer.
		var conn net.Conn
		waitFor(t, name+" connects through the tunnel", 15*time.Second, func() bool {
			l.cl.do(func() error {
				var err error
				conn, err = net.DialTimeout("tcp", gwAddr, time.Second)
				return err
			})
			return conn != nil
		})
		br := bufio.NewReader(conn)
		request := func() error {
			conn.SetDeadline(time.Now().Add(time.Second))
			if _, err := fmt.Fprintf(conn, "GET /api/v1/whoami HTTP/1.1\r\nHost: %s\r\n\r\n", st.Addresses[0]); err != nil {
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
		if err := request(); err != nil {
			t.Fatalf("%s: keep-alive request before revocation: %v", name, err)
		}

		start := time.Now()
		out := pgOK(t, "revoke", "--state", state, name)
		took := time.Since(start)
		m := regexp.MustCompile(`in (\S+), (\d+) open connections closed`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("revoke output %q", out)
		}
		ap, _ := time.ParseDuration(m[1])
		if n, _ := strconv.Atoi(m[2]); n < 1 {
			t.Errorf("%s: revoke closed %d connections, want the open keep-alive one", name, n)
		}
		// Within a second of the command returning: the open connection gets no answer, and
		// a new one cannot be made.
		newConn := make(chan error, 1)
		go func() {
			newConn <- l.cl.do(func() error {
				c, err := net.DialTimeout("tcp", gwAddr, time.Second)
				if err == nil {
					c.Close()
				}
				return err
			})
		}()
		if err := request(); err == nil {
			t.Errorf("%s: the open keep-alive connection was still served after revoke returned", name)
		}
		if err := <-newConn; err == nil {
			t.Errorf("%s: a new connection succeeded after revoke returned", name)
		}
		conn.Close()
		wall = append(wall, took)
		applied = append(applied, ap)
	}
	rc.down(t)
	slices.Sort(wall)
	slices.Sort(applied)
	pct := func(s []time.Duration, p float64) time.Duration { return s[int(p*float64(len(s)-1)+0.5)] }
	t.Logf("revoke-to-dead over %d trials (printgate revoke wall time, process start to return; nothing served after): p50 %v, p99 %v, max %v",
		len(wall), pct(wall, 0.5), pct(wall, 0.99), wall[len(wall)-1])
	t.Logf("daemon revoke-to-applied (roster, device, connections closed): p50 %v, p99 %v", pct(applied, 0.5), pct(applied, 0.99))
	// The pass criterion is functional (checked per trial above): nothing is served once
	// revoke returns. The time is reported against the goal, not asserted: a loaded CI disk
	// (the roster's fsync) must not fail the build.
	if p99 := pct(wall, 0.99); p99 > time.Second {
		t.Logf("revoke-to-dead p99 %v misses the 1 s goal", p99)
	}
}
