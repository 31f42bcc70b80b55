package enroll

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestParseConfigRoundTrip(t *testing.T) {
	g := Gateway{
		PrivateKey: fixedKey(1), ListenPort: 51820,
		Prefix4:  netip.MustParsePrefix("10.77.0.0/22"),
		Prefix6:  netip.MustParsePrefix("fd12:3456:789a::/64"),
		Endpoint: "gw.example.test:51820",
	}
	p := Peer{PresharedKey: fixedKey(3), IPv4: netip.MustParseAddr("10.77.0.100"), IPv6: netip.MustParseAddr("fd12:3456:789a::64")}
	priv := fixedKey(2)
	text := RenderConfig(g, p, &priv, ConfigOptions{DNS: []netip.Addr{netip.MustParseAddr("10.77.0.1")}, MTU: 1380})
	got, err := ParseConfig([]byte(text))
	if err != nil {
		t.Fatalf("ParseConfig(RenderConfig) = %v", err)
	}
	want := DeviceConfig{
		PrivateKey: priv,
		Addresses:  []netip.Prefix{netip.MustParsePrefix("10.77.0.100/32"), netip.MustParsePrefix("fd12:3456:789a::64/128")},
		DNS:        []netip.Addr{netip.MustParseAddr("10.77.0.1")},
		MTU:        1380,
		Peers: []ConfigPeer{{
			PublicKey:           g.PrivateKey.PublicKey(),
			PresharedKey:        fixedKey(3),
			AllowedIPs:          []netip.Prefix{g.Prefix4, g.Prefix6},
			Endpoint:            "gw.example.test:51820",
			PersistentKeepalive: Keepalive,
		}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseConfig(RenderConfig) =\n%+v\nwant\n%+v", got, want)
	}
}

func TestParseConfigForms(t *testing.T) {
	priv, pub := fixedKey(2).String(), fixedKey(1).String()
	text := "\ufeff# exported by some app\r\n[interface]\r\nprivatekey=" + priv + "\r\n" +
		"Address = 10.0.0.2\nDNS = 10.0.0.1, home.arpa\nPostUp = iptables -A ...\nTable = off\n" +
		"[Peer] # the gateway\nPublicKey = " + pub + "\nAllowedIPs = 10.0.0.1/24,fd00::/64\n" +
		"Endpoint = [2001:db8::1]:51820\nPersistentKeepalive = off\n"
	c, err := ParseConfig([]byte(text))
	if err != nil {
		t.Fatalf("ParseConfig = %v", err)
	}
	if got := c.Addresses[0].String(); got != "10.0.0.2/32" {
		t.Errorf("Address = %s, want 10.0.0.2/32", got)
	}
	if got := c.Peers[0].AllowedIPs[0].String(); got != "10.0.0.0/24" {
		t.Errorf("AllowedIPs[0] = %s, want the masked 10.0.0.0/24", got)
	}
	if got := c.Peers[0].Endpoint; got != "[2001:db8::1]:51820" {
		t.Errorf("Endpoint = %s", got)
	}
	if len(c.DNS) != 1 {
		t.Errorf("DNS = %v, want the one address (the search domain dropped)", c.DNS)
	}
}

func TestParseConfigRefuses(t *testing.T) {
	priv, pub := fixedKey(2).String(), fixedKey(1).String()
	good := "[Interface]\nPrivateKey = " + priv + "\nAddress = 10.0.0.2/32\n[Peer]\nPublicKey = " + pub + "\nAllowedIPs = 10.0.0.0/24\n"
	if _, err := ParseConfig([]byte(good)); err != nil {
		t.Fatalf("ParseConfig(good) = %v", err)
	}
	for _, tc := range []struct{ name, text, want string }{
		{"empty", "", "no [Interface]"},
		{"placeholder", strings.Replace(good, priv, PrivateKeyPlaceholder, 1), "placeholder"},
		{"no peer", good[:strings.Index(good, "[Peer]")], "no [Peer]"},
		{"no address", strings.Replace(good, "Address = 10.0.0.2/32\n", "", 1), "no Address"},
		{"unknown key", strings.Replace(good, "Address", "Adress", 1), "unknown [Interface] key"},
		{"unknown section", good + "[Peers]\n", "unknown section"},
		{"bad key", strings.Replace(good, pub, "AAAA", 1), "PublicKey"},
		{"two interfaces", good + "[Interface]\n", "once"},
		{"bare line", strings.Replace(good, "Address = ", "Address ", 1), "KEY = VALUE"},
		{"bad endpoint", good + "Endpoint = gw.example.test\n", "HOST:PORT"},
		{"bad mtu", strings.Replace(good, "[Peer]", "MTU = 9\n[Peer]", 1), "MTU"},
		{"huge", good + strings.Repeat("#", MaxConfigSize), "bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.text))
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseConfig(%q) = %v, want an ErrInvalid naming %q", clipText(tc.text, 60), err, tc.want)
			}
		})
	}
}

func FuzzParseConfig(f *testing.F) {
	priv := fixedKey(2)
	f.Add([]byte(RenderConfig(fuzzGateway, Peer{PresharedKey: fixedKey(3), IPv4: netip.MustParseAddr("10.77.0.100"),
		IPv6: netip.MustParseAddr("fd12:3456:789a::64")}, &priv, ConfigOptions{MTU: 1380})))
	f.Add([]byte("[Interface]\nAddress=10.0.0.2\n[Peer]\nAllowedIPs=0.0.0.0/0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			return
		}
		if len(c.Addresses) == 0 || len(c.Peers) == 0 {
			t.Fatalf("ParseConfig accepted a config without addresses or peers: %+v", c)
		}
		for _, p := range c.Peers {
			for _, a := range p.AllowedIPs {
				if a != a.Masked() {
					t.Fatalf("AllowedIPs %v not canonical", a)
				}
			}
		}
	})
}
