package enroll

import (
	"errors"
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// The registry's mesh additions: the gateway's name and allocated addresses persisted, and
// enrollments recorded with secrets and addresses fixed beforehand by the mesh.

func TestGatewayNameAndAddresses(t *testing.T) {
	p4 := netip.MustParsePrefix("10.77.0.0/22")
	p6 := netip.MustParsePrefix("fd77:1:2:3::/64")
	dir, g := newState(t, InitOptions{Prefix4: p4, Prefix6: p6, Name: "hall-b",
		Addr4: netip.MustParseAddr("10.77.0.2"), Addr6: netip.MustParseAddr("fd77:1:2:3::2")})
	if g.Name != "hall-b" || g.Addr4() != netip.MustParseAddr("10.77.0.2") || g.Addr6() != netip.MustParseAddr("fd77:1:2:3::2") {
		t.Fatalf("Init = %v name %q %v %v", g, g.Name, g.Addr4(), g.Addr6())
	}
	r := openState(t, dir, nil)
	if got := r.Gateway(); got.Name != "hall-b" || got.Addr4() != g.Addr4() || got.Addr6() != g.Addr6() {
		t.Errorf("reopened: name %q %v %v", got.Name, got.Addr4(), got.Addr6())
	}
	if _, err := r.SetName("bad name"); !errors.Is(err, ErrInvalid) {
		t.Errorf("SetName(bad name) = %v, want ErrInvalid", err)
	}
	if _, err := r.SetName("hall-c"); err != nil {
		t.Fatal(err)
	}
	r.Close()
	if got := openState(t, dir, nil).Gateway(); got.Name != "hall-c" || got.Addr4() != g.Addr4() {
		t.Errorf("after SetName: name %q %v", got.Name, got.Addr4())
	}

	// A key made beforehand (a joining gateway registers its public half first) is kept.
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, g := newState(t, InitOptions{Prefix4: p4, Prefix6: p6, PrivateKey: k}); g.PrivateKey != k {
		t.Error("Init did not keep the given private key")
	}

	// A state made before the mesh has no name and the first host addresses.
	dir, _ = newState(t, InitOptions{Prefix4: p4, Prefix6: p6})
	if got := openState(t, dir, nil).Gateway(); got.Name != "" || got.Addr4() != netip.MustParseAddr("10.77.0.1") {
		t.Errorf("plain state: name %q %v", got.Name, got.Addr4())
	}

	for _, bad := range []InitOptions{
		{Prefix4: p4, Prefix6: p6, Addr4: netip.MustParseAddr("10.78.0.2"), Addr6: netip.MustParseAddr("fd77:1:2:3::2")},
		{Prefix4: p4, Prefix6: p6, Addr4: netip.MustParseAddr("10.77.0.2"), Addr6: netip.MustParseAddr("fd77:1:2:3::3")},
		{Prefix4: p4, Prefix6: p6, Addr4: netip.MustParseAddr("10.77.0.2")},
		{Prefix4: p4, Prefix6: p6, Name: "-x"},
	} {
		if _, err := Init(t.TempDir(), InitOptions{Endpoint: testEndpoint, Prefix4: bad.Prefix4, Prefix6: bad.Prefix6,
			Name: bad.Name, Addr4: bad.Addr4, Addr6: bad.Addr6}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Init(%q %v %v) = %v, want ErrInvalid", bad.Name, bad.Addr4, bad.Addr6, err)
		}
	}
}

func TestSanitizeName(t *testing.T) {
	for in, want := range map[string]string{
		"pi":                                     "pi",
		"printgate-hall.local":                   "printgate-hall.local",
		"--weird host!":                          "weird-host-",
		"":                                       "gateway",
		"___":                                    "gateway",
		"a-very-long-host-name-that-goes-on-and": "a-very-long-host-name-that-goes-",
	} {
		got := SanitizeName(in)
		if got != want {
			t.Errorf("SanitizeName(%q) = %q, want %q", in, got, want)
		}
		if err := ValidateName(got); err != nil {
			t.Errorf("SanitizeName(%q) = %q: %v", in, got, err)
		}
	}
}

func TestEnrollPreset(t *testing.T) {
	p4 := netip.MustParsePrefix("10.77.0.0/22")
	p6 := netip.MustParsePrefix("fd77:1:2:3::/64")
	dir, _ := newState(t, InitOptions{Prefix4: p4, Prefix6: p6})
	r := openState(t, dir, nil)
	sec, err := NewSecrets(nil)
	if err != nil {
		t.Fatal(err)
	}
	a4, a6 := netip.MustParseAddr("10.77.0.140"), netip.MustParseAddr("fd77:1:2:3::8c")
	e := mustEnroll(t, r, Request{Name: "phone", Secrets: sec, IPv4: a4, IPv6: a6})
	if e.Peer.IPv4 != a4 || e.Peer.IPv6 != a6 || e.Peer.PublicKey != sec.PublicKey || e.APIKey != sec.APIKey || e.Peer.OwnKey {
		t.Errorf("preset enrollment = %v own %v", e.Peer, e.Peer.OwnKey)
	}
	if got := r.NextDeviceOffset(); got != 141 {
		t.Errorf("NextDeviceOffset = %d, want 141 (past the preset address)", got)
	}
	// The next local allocation goes above it; a preset address held before is refused.
	if e := mustEnroll(t, r, Request{Name: "laptop"}); e.Peer.IPv4 != netip.MustParseAddr("10.77.0.141") {
		t.Errorf("next allocation %v, want 10.77.0.141", e.Peer.IPv4)
	}
	if _, err := r.Enroll(Request{Name: "tablet", IPv4: a4, IPv6: a6}); !errors.Is(err, ErrExists) {
		t.Errorf("Enroll at a used address = %v, want ErrExists", err)
	}
	if _, err := r.Enroll(Request{Name: "tablet", IPv4: netip.MustParseAddr("10.77.0.20"), IPv6: netip.MustParseAddr("fd77:1:2:3::14")}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Enroll at a printer address = %v, want ErrInvalid", err)
	}
	own, _ := NewSecrets(&e.Peer.PublicKey)
	if own == nil || own.PrivateKey != nil {
		t.Fatal("NewSecrets with a public key made a private key")
	}
	r.Close()
	if p, ok := openState(t, dir, nil).Peer("phone"); !ok || p.IPv4 != a4 {
		t.Errorf("reopened: %v %v", p, ok)
	}
}
