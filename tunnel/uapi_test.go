package tunnel

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func key(b byte) wgtypes.Key {
	var k wgtypes.Key
	for i := range k {
		k[i] = b
	}
	return k
}

func host(s string) netip.Prefix {
	a := netip.MustParseAddr(s)
	return netip.PrefixFrom(a, a.BitLen())
}

func peer(b byte, ips ...string) Peer {
	p := Peer{PublicKey: key(b)}
	for _, s := range ips {
		p.AllowedIPs = append(p.AllowedIPs, host(s))
	}
	return p
}

func TestValidate(t *testing.T) {
	self := key(0xee)
	good := []Peer{peer(1, "10.0.0.2", "fd00::2"), peer(2, "10.0.0.3", "fd00::3")}
	with := func(f func(ps []Peer) []Peer) []Peer {
		ps := make([]Peer, len(good))
		for i, p := range good {
			p.AllowedIPs = append([]netip.Prefix(nil), p.AllowedIPs...)
			ps[i] = p
		}
		return f(ps)
	}
	for _, tc := range []struct {
		name  string
		peers []Peer
		want  string // substring of the error; "" means valid
	}{
		{"empty", nil, ""},
		{"good", good, ""},
		{"endpoint and keepalive", with(func(ps []Peer) []Peer {
			ps[0].Endpoint = netip.MustParseAddrPort("127.0.0.1:51820")
			ps[0].PersistentKeepalive = 25 * time.Second
			return ps
		}), ""},
		{"zero key", with(func(ps []Peer) []Peer { ps[0].PublicKey = wgtypes.Key{}; return ps }), "zero public key"},
		{"own key", with(func(ps []Peer) []Peer { ps[1].PublicKey = self; return ps }), "own public key"},
		{"duplicate key", with(func(ps []Peer) []Peer { ps[1].PublicKey = ps[0].PublicKey; return ps }), "duplicate public key"},
		{"no allowed ips", with(func(ps []Peer) []Peer { ps[0].AllowedIPs = nil; return ps }), "no allowed IPs"},
		{"subnet v4", with(func(ps []Peer) []Peer {
			ps[0].AllowedIPs[0] = netip.MustParsePrefix("10.0.0.0/24")
			return ps
		}), "not a host route"},
		{"subnet v6", with(func(ps []Peer) []Peer {
			ps[0].AllowedIPs[1] = netip.MustParsePrefix("fd00::/64")
			return ps
		}), "not a host route"},
		{"default route", with(func(ps []Peer) []Peer {
			ps[0].AllowedIPs[0] = netip.MustParsePrefix("0.0.0.0/0")
			return ps
		}), "not a host route"},
		{"overlap across peers", with(func(ps []Peer) []Peer { ps[1].AllowedIPs[0] = host("10.0.0.2"); return ps }), "overlaps peer 0"},
		{"duplicate within peer", with(func(ps []Peer) []Peer {
			ps[0].AllowedIPs = append(ps[0].AllowedIPs, host("10.0.0.2"))
			return ps
		}), "duplicate allowed IP"},
		{"invalid prefix", with(func(ps []Peer) []Peer { ps[0].AllowedIPs[0] = netip.Prefix{}; return ps }), "invalid allowed IP"},
		{"mapped v4", with(func(ps []Peer) []Peer { ps[0].AllowedIPs[0] = host("::ffff:10.0.0.9"); return ps }), "invalid allowed IP"},
		{"unspecified", with(func(ps []Peer) []Peer { ps[0].AllowedIPs[0] = host("0.0.0.0"); return ps }), "not unicast"},
		{"multicast", with(func(ps []Peer) []Peer { ps[0].AllowedIPs[1] = host("ff02::1"); return ps }), "not unicast"},
		{"endpoint no port", with(func(ps []Peer) []Peer {
			ps[0].Endpoint = netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), 0)
			return ps
		}), "invalid endpoint"},
		{"keepalive negative", with(func(ps []Peer) []Peer { ps[0].PersistentKeepalive = -time.Second; return ps }), "keepalive"},
		{"keepalive fraction", with(func(ps []Peer) []Peer { ps[0].PersistentKeepalive = 1500 * time.Millisecond; return ps }), "keepalive"},
		{"keepalive too long", with(func(ps []Peer) []Peer { ps[0].PersistentKeepalive = 65536 * time.Second; return ps }), "keepalive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(tc.peers, self)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate(%s) = %v, want nil", tc.name, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate(%s) = %v, want error containing %q", tc.name, err, tc.want)
			}
		})
	}
}

func TestDiffUAPI(t *testing.T) {
	same, changed, gone, added := peer(1, "10.0.0.2"), peer(2, "10.0.0.3"), peer(3, "10.0.0.4"), peer(4, "10.0.0.5")
	changed2 := changed
	changed2.AllowedIPs = []netip.Prefix{host("10.0.0.3"), host("fd00::3")}
	changed2.PersistentKeepalive = 25 * time.Second
	added.Endpoint = netip.MustParseAddrPort("[::1]:51820")
	added.PresharedKey = key(9)

	prev := map[wgtypes.Key]Peer{same.PublicKey: same, changed.PublicKey: changed, gone.PublicKey: gone}
	next := map[wgtypes.Key]Peer{same.PublicKey: same, changed2.PublicKey: changed2, added.PublicKey: added}
	text, n := diffUAPI(prev, next)
	if n != (diffCount{added: 1, changed: 1, removed: 1}) {
		t.Errorf("diffUAPI counts = %+v, want 1 added, 1 changed, 1 removed", n)
	}
	want := "public_key=" + hexKey(gone.PublicKey) + "\nremove=true\n" +
		"public_key=" + hexKey(changed.PublicKey) + "\nupdate_only=true\n" +
		"preshared_key=" + hexKey(wgtypes.Key{}) + "\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\n" +
		"allowed_ip=10.0.0.3/32\nallowed_ip=fd00::3/128\n" +
		"public_key=" + hexKey(added.PublicKey) + "\n" +
		"preshared_key=" + hexKey(key(9)) + "\nendpoint=[::1]:51820\npersistent_keepalive_interval=0\nreplace_allowed_ips=true\n" +
		"allowed_ip=10.0.0.5/32\n"
	if text != want {
		t.Errorf("diffUAPI text =\n%s\nwant\n%s", text, want)
	}
	if strings.Contains(text, hexKey(same.PublicKey)) {
		t.Errorf("diffUAPI touches the unchanged peer:\n%s", text)
	}
	if strings.Contains(text, "replace_peers") {
		t.Errorf("diffUAPI emits replace_peers:\n%s", text)
	}
	if text, n := diffUAPI(next, next); text != "" || n.total() != 0 {
		t.Errorf("diffUAPI(same, same) = %q, %+v, want nothing", text, n)
	}
	// Allowed IPs in another order are the same peer.
	reordered := changed2
	reordered.AllowedIPs = []netip.Prefix{host("fd00::3"), host("10.0.0.3")}
	if !samePeer(changed2, reordered) {
		t.Errorf("samePeer(reordered allowed IPs) = false, want true")
	}
}

const getReply = `private_key=e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a
listen_port=12912
public_key=b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33
preshared_key=188515093e952f5f22e865cef3012e72f8b5f0b598ac0309d5dacce3b70fcf52
allowed_ip=192.168.4.4/32
endpoint=[abcd:23::33%2]:51820
last_handshake_time_sec=1700000000
last_handshake_time_nsec=5
tx_bytes=38333
rx_bytes=2224
persistent_keepalive_interval=0
public_key=58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceb7e19321376
endpoint=182.122.22.19:3233
last_handshake_time_sec=0
last_handshake_time_nsec=0
rx_bytes=0
tx_bytes=0
allowed_ip=192.168.4.6/32
errno=0

`

func TestParseStats(t *testing.T) {
	got, err := ParseStats(strings.NewReader(getReply))
	if err != nil {
		t.Fatalf("ParseStats: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("ParseStats = %d peers, want 2", len(got))
	}
	p := got[0]
	if hexKey(p.PublicKey) != "b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33" ||
		p.Endpoint != netip.MustParseAddrPort("[abcd:23::33%2]:51820") ||
		!p.LastHandshake.Equal(time.Unix(1700000000, 5)) || p.TxBytes != 38333 || p.RxBytes != 2224 {
		t.Errorf("ParseStats peer 0 = %+v", p)
	}
	if !got[1].LastHandshake.IsZero() {
		t.Errorf("ParseStats peer 1 LastHandshake = %v, want zero (never)", got[1].LastHandshake)
	}
	for _, bad := range []string{
		"public_key=zz\n",
		"public_key=b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33\nrx_bytes=-1\n",
		"public_key=b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33\nlast_handshake_time_nsec=1000000000\n",
		"public_key=b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33\nendpoint=nope\n",
		"no equals sign\n",
		"errno=1\n",
	} {
		if got, err := ParseStats(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseStats(%q) = %+v, want error", bad, got)
		}
	}
}

func FuzzParseStats(f *testing.F) {
	f.Add(getReply)
	f.Add("public_key=" + hexKey(key(1)) + "\nlast_handshake_time_sec=9223372036854775807\nlast_handshake_time_nsec=999999999\n")
	f.Add("listen_port=1\n\n")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseStats(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, p := range got {
			if p.RxBytes < 0 || p.TxBytes < 0 {
				t.Errorf("ParseStats(%q): negative counters %+v", s, p)
			}
		}
		if n := strings.Count(s, "public_key="); len(got) > n {
			t.Errorf("ParseStats(%q) = %d peers from %d public_key lines", s, len(got), n)
		}
	})
}

func TestValidateClient(t *testing.T) {
	self := key(0xee)
	mesh := Peer{PublicKey: key(1), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.77.0.0/22"), netip.MustParsePrefix("fd12::/64")}}
	for _, tc := range []struct {
		name  string
		peers []Peer
		want  string // substring of the error; "" means valid
	}{
		{"mesh prefix", []Peer{mesh}, ""},
		{"two disjoint", []Peer{mesh, {PublicKey: key(2), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.78.0.0/16")}}}, ""},
		{"overlap", []Peer{mesh, {PublicKey: key(2), AllowedIPs: []netip.Prefix{host("10.77.0.9")}}}, "overlaps peer 0"},
		{"host bits", []Peer{{PublicKey: key(2), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.77.0.1/22")}}}, "host bits"},
		{"own key", []Peer{{PublicKey: self, AllowedIPs: mesh.AllowedIPs}}, "own public key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateClient(tc.peers, self)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("ValidateClient(%s) = %v, want nil", tc.name, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("ValidateClient(%s) = %v, want error containing %q", tc.name, err, tc.want)
			}
		})
	}
	if err := Validate([]Peer{mesh}, self); err == nil {
		t.Errorf("Validate(mesh prefix) = nil, want a gateway to refuse a prefix")
	}
}
