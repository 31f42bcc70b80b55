package enroll

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func fixedKey(b byte) wgtypes.Key {
	var k wgtypes.Key
	for i := range k {
		k[i] = b + byte(i)
	}
	return k
}

func TestRenderConfigExact(t *testing.T) {
	g := Gateway{
		PrivateKey: fixedKey(1), ListenPort: 51820,
		Prefix4:  netip.MustParsePrefix("10.77.0.0/22"),
		Prefix6:  netip.MustParsePrefix("fd12:3456:789a::/64"),
		Endpoint: "gw.example.test:51820",
	}
	p := Peer{PresharedKey: fixedKey(3), IPv4: netip.MustParseAddr("10.77.0.100"), IPv6: netip.MustParseAddr("fd12:3456:789a::64")}
	priv := fixedKey(2)
	want := "[Interface]\n" +
		"PrivateKey = " + priv.String() + "\n" +
		"Address = 10.77.0.100/32, fd12:3456:789a::64/128\n" +
		"\n[Peer]\n" +
		"PublicKey = " + g.PrivateKey.PublicKey().String() + "\n" +
		"PresharedKey = " + fixedKey(3).String() + "\n" +
		"AllowedIPs = 10.77.0.0/22, fd12:3456:789a::/64\n" +
		"Endpoint = gw.example.test:51820\n" +
		"PersistentKeepalive = 25\n"
	if got := RenderConfig(g, p, &priv, ConfigOptions{}); got != want {
		t.Errorf("RenderConfig =\n%s\nwant\n%s", got, want)
	}
	got := RenderConfig(g, p, nil, ConfigOptions{DNS: []netip.Addr{netip.MustParseAddr("10.77.0.1")}, MTU: 1380})
	for _, line := range []string{"PrivateKey = " + PrivateKeyPlaceholder + "\n", "DNS = 10.77.0.1\n", "MTU = 1380\n"} {
		if !strings.Contains(got, line) {
			t.Errorf("RenderConfig(pubkey, DNS, MTU) lacks %q:\n%s", line, got)
		}
	}
}

// appKeys are the keys both stock apps accept (reference/wireguard.md §d).
var appKeys = map[string][]string{
	"Interface": {"PrivateKey", "Address", "DNS", "MTU", "ListenPort"},
	"Peer":      {"PublicKey", "PresharedKey", "AllowedIPs", "Endpoint", "PersistentKeepalive"},
}

func TestEnrolledConfigOnlyAppKeys(t *testing.T) {
	dir, g := newState(t, InitOptions{})
	r := openState(t, dir, nil)
	e := mustEnroll(t, r, Request{Name: "phone"})
	section := ""
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSuffix(e.Config, "\n"), "\n") {
		switch {
		case line == "":
		case strings.HasPrefix(line, "#"):
			t.Errorf("config has a comment line %q", line)
		case line == "[Interface]" || line == "[Peer]":
			section = strings.Trim(line, "[]")
		default:
			key, _, ok := strings.Cut(line, " = ")
			if !ok || !slices.Contains(appKeys[section], key) {
				t.Errorf("config line %q in [%s] is not one both apps accept", line, section)
			}
			seen[key] = true
		}
	}
	for _, k := range []string{"PrivateKey", "Address", "PublicKey", "PresharedKey", "AllowedIPs", "Endpoint", "PersistentKeepalive"} {
		if !seen[k] {
			t.Errorf("config lacks %s:\n%s", k, e.Config)
		}
	}
	if !strings.Contains(e.Config, "AllowedIPs = "+g.Prefix4.String()+", "+g.Prefix6.String()+"\n") {
		t.Errorf("AllowedIPs is not the split tunnel of the mesh prefixes:\n%s", e.Config)
	}
	if strings.Contains(e.Config, "0.0.0.0/0") || strings.Contains(e.Config, "::/0") {
		t.Errorf("config routes everything:\n%s", e.Config)
	}
}

// TestConfigWgQuickStrip feeds rendered configs to Debian's wg-quick parser.
func TestConfigWgQuickStrip(t *testing.T) {
	wgq, err := exec.LookPath("wg-quick")
	if err != nil {
		t.Skip("wg-quick not installed (Debian wireguard-tools)")
	}
	if os.Geteuid() != 0 {
		t.Skip("wg-quick strip re-executes itself with sudo unless run as root")
	}
	dir, _ := newState(t, InitOptions{})
	r := openState(t, dir, nil)
	e := mustEnroll(t, r, Request{Name: "phone"})
	pub, _ := wgtypes.GeneratePrivateKey()
	pk := pub.PublicKey()
	e2 := mustEnroll(t, r, Request{Name: "laptop", PublicKey: &pk})
	for _, tc := range []struct {
		name, conf string
	}{{"generated", e.Config}, {"pubkey", e2.Config}} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "pgtest0.conf")
			if err := os.WriteFile(path, []byte(tc.conf), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(wgq, "strip", path).CombinedOutput()
			if err != nil {
				t.Fatalf("wg-quick strip = %v:\n%s", err, out)
			}
			s := string(out)
			for _, k := range []string{"PrivateKey", "PublicKey", "PresharedKey", "AllowedIPs", "Endpoint", "PersistentKeepalive"} {
				if !strings.Contains(s, k+" = ") {
					t.Errorf("wg-quick strip output lacks %s:\n%s", k, s)
				}
			}
			if strings.Contains(s, "Address") {
				t.Errorf("wg-quick strip kept Address, so it did not parse the file as wg-quick:\n%s", s)
			}
		})
	}
}
