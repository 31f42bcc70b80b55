package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestCorruptRosterRefusesToStart: invariant 7's fail-closed half with the real binary. A
// corrupt roster makes `printgate run` exit non-zero with a message naming the recovery,
// before any UDP socket is opened.
func TestCorruptRosterRefusesToStart(t *testing.T) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	c.Close()
	state := filepath.Join(t.TempDir(), "state")
	pgOK(t, "init", "--state", state, "--endpoint", "127.0.0.1:"+strconv.Itoa(port), "--listen-port", strconv.Itoa(port))
	pgOK(t, "enroll", "--state", state, "phone", "--qr", "none")
	pgOK(t, "enroll", "--state", state, "tablet", "--qr", "none")
	roster := filepath.Join(state, "roster.json")
	b, err := os.ReadFile(roster)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"truncated": b[:len(b)/2],
		"empty":     {},
		"edited":    []byte(strings.Replace(string(b), "phone", "phonx", 1)),
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(roster, data, 0o600); err != nil {
				t.Fatal(err)
			}
			out, errOut, code := pg(t, "run", "--state", state, "--interface", "none")
			if code == 0 {
				t.Fatalf("run on a %s roster exited 0\n%s%s", name, out, errOut)
			}
			if !strings.Contains(errOut, "corrupt") || !(strings.Contains(errOut, "printgate recover") || strings.Contains(errOut, "backup")) {
				t.Errorf("run on a %s roster: message names no recovery:\n%s", name, errOut)
			}
			if strings.Contains(errOut, "udp port") {
				t.Errorf("run on a %s roster brought the device up:\n%s", name, errOut)
			}
			c, err := net.ListenUDP("udp", &net.UDPAddr{Port: port})
			if err != nil {
				t.Errorf("UDP port %d taken after a refused start: %v", port, err)
			} else {
				c.Close()
			}
		})
	}
	// The named recovery works: the previous generation comes back and run starts.
	os.WriteFile(roster, []byte("{"), 0o600)
	out := pgOK(t, "recover", "--state", state)
	if !strings.Contains(out, "restored") {
		t.Errorf("recover: %s", out)
	}
	peers := pgOK(t, "peers", "--state", state)
	if !strings.Contains(peers, "phone") {
		t.Errorf("after recover, peers:\n%s", peers)
	}
}
