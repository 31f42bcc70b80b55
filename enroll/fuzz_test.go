package enroll

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// fuzzGateway is a fixed gateway for decoder fuzzing.
var fuzzGateway = Gateway{
	PrivateKey: fixedKey(1), ListenPort: 51820,
	Prefix4:  netip.MustParsePrefix("10.77.0.0/22"),
	Prefix6:  netip.MustParsePrefix("fd12:3456:789a::/64"),
	Endpoint: "gw.example.test:51820",
}

// sampleRoster is a valid roster file for fuzzGateway, with a peer of every state.
func sampleRoster(t testing.TB) []byte {
	now := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	h := HashAPIKey("k")
	peers := []Peer{
		{Name: "phone", Role: Admin, State: Active, PublicKey: fixedKey(10), PresharedKey: fixedKey(11),
			IPv4: offsetAddr4(fuzzGateway.Prefix4, 100), IPv6: offsetAddr6(fuzzGateway.Prefix6, 100),
			APIKeyHash: h[:], Created: now, ExpiresAt: now.Add(DefaultTTL), FirstHandshake: now, LastHandshake: now,
			Endpoint: netip.MustParseAddrPort("198.51.100.1:4000")},
		{Name: "lost", Role: Viewer, State: Revoked, PublicKey: fixedKey(20), PresharedKey: fixedKey(21),
			IPv4: offsetAddr4(fuzzGateway.Prefix4, 101), IPv6: offsetAddr6(fuzzGateway.Prefix6, 101),
			Created: now, ExpiresAt: now.Add(DefaultTTL), RevokedAt: now},
		{Name: "new", Role: Operator, State: Pending, PublicKey: fixedKey(30), PresharedKey: fixedKey(31),
			IPv4: offsetAddr4(fuzzGateway.Prefix4, 102), IPv6: offsetAddr6(fuzzGateway.Prefix6, 102),
			Created: now, ExpiresAt: now.Add(DefaultTTL), OwnKey: true, APIKeyRole: Viewer},
	}
	r := &Registry{gw: fuzzGateway}
	body := r.bodyLocked(7, peers, []PrinterAddr{{Name: "mk4", IPv4: offsetAddr4(fuzzGateway.Prefix4, 11), IPv6: offsetAddr6(fuzzGateway.Prefix6, 11)}}, 103)
	data, err := seal(kindRoster, body)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func FuzzDecodeRoster(f *testing.F) {
	good := sampleRoster(f)
	f.Add(good)
	f.Add([]byte{})
	f.Add(good[:len(good)/2])
	f.Add([]byte(`{"format":"printgate-roster","version":1,"sha256":"","body":{}}`))
	f.Add(bytes.Replace(good, []byte(`"version": 1`), []byte(`"version": 2`), 1))
	f.Fuzz(func(t *testing.T, data []byte) {
		body, err := decodeRoster(data, fuzzGateway)
		if err != nil {
			if body != nil {
				t.Fatal("error with a body")
			}
			return
		}
		// Whatever decodes must validate and survive a write/read round trip unchanged.
		if err := body.validate(fuzzGateway); err != nil {
			t.Fatalf("decoded roster does not validate: %v", err)
		}
		again, err := seal(kindRoster, body)
		if err != nil {
			t.Fatal(err)
		}
		body2, err := decodeRoster(again, fuzzGateway)
		if err != nil {
			t.Fatalf("re-encoded roster does not decode: %v", err)
		}
		a, _ := json.Marshal(body)
		b, _ := json.Marshal(body2)
		if !bytes.Equal(a, b) {
			t.Fatalf("round trip changed the roster:\n%s\n%s", a, b)
		}
	})
}

func FuzzDecodeGateway(f *testing.F) {
	gb, _ := seal(kindGateway, gatewayBody{ListenPort: 51820, Prefix4: fuzzGateway.Prefix4, Prefix6: fuzzGateway.Prefix6,
		Endpoint: fuzzGateway.Endpoint, PublicKey: keyText(fuzzGateway.PublicKey())})
	f.Add(gb)
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var b gatewayBody
		if err := unseal(kindGateway, data, &b); err != nil {
			return
		}
		g := Gateway{ListenPort: b.ListenPort, Prefix4: b.Prefix4, Prefix6: b.Prefix6, Endpoint: b.Endpoint}
		if checkGateway(g) == nil {
			if !g.Prefix4.Contains(g.Addr4()) || !g.Prefix6.Contains(g.Addr6()) {
				t.Fatalf("gateway addresses %v %v outside %v %v", g.Addr4(), g.Addr6(), g.Prefix4, g.Prefix6)
			}
		}
	})
}

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"phone", "a=b", "x y", "-x", strings.Repeat("z", 33), "é", "a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidateName(name) != nil {
			return
		}
		if len(name) == 0 || len(name) > MaxNameLen || name[0] == '-' || name[0] == '.' || name[0] == '_' {
			t.Fatalf("ValidateName(%q) accepted a bad length or first character", name)
		}
		for _, r := range name {
			if r > unicode.MaxASCII || unicode.IsControl(r) || unicode.IsSpace(r) || strings.ContainsRune("=/\\\"'#;:,", r) {
				t.Fatalf("ValidateName(%q) accepted %q", name, r)
			}
		}
	})
}

func FuzzParsePublicKey(f *testing.F) {
	k := fixedKey(5)
	f.Add(k.String())
	f.Add(" " + k.String() + "\n")
	f.Add(strings.Repeat("A", 43) + "=")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		key, err := ParsePublicKey(s)
		if err != nil {
			return
		}
		if key == (wgtypes.Key{}) {
			t.Fatal("accepted the zero key")
		}
		if key.String() != strings.TrimSpace(s) {
			t.Fatalf("ParsePublicKey(%q) = %v: not the canonical form", s, key)
		}
	})
}

func FuzzParseTTL(f *testing.F) {
	for _, s := range []string{"15m", "0", "-1h", "168h", "169h", "1ns", "9223372036854775807ns"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseTTL(s)
		if err == nil && (d <= 0 || d > MaxTTL) {
			t.Fatalf("ParseTTL(%q) = %v, outside (0, %v]", s, d, MaxTTL)
		}
	})
}

func FuzzParseRole(f *testing.F) {
	for _, s := range []string{"", "viewer", "operator", "admin", "Admin", "root"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRole(s)
		if err == nil && !r.Valid() {
			t.Fatalf("ParseRole(%q) = %q, not a valid role", s, r)
		}
	})
}

func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{"example.com:51820", "192.0.2.1", "[2001:db8::1]:9", "2001:db8::1", "a b:1", "x:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ep, err := ParseEndpoint(s, 51820)
		if err != nil {
			return
		}
		for _, r := range ep {
			if r > unicode.MaxASCII || unicode.IsControl(r) || unicode.IsSpace(r) || r == '=' || r == '#' {
				t.Fatalf("ParseEndpoint(%q) = %q holds %q", s, ep, r)
			}
		}
		if again, err := ParseEndpoint(ep, 1); err != nil || again != ep {
			t.Fatalf("ParseEndpoint(%q) = %q, which parses again as %q, %v", s, ep, again, err)
		}
	})
}

func FuzzPeerJSON(f *testing.F) {
	b, _ := json.Marshal(Peer{Name: "phone", Role: Admin, State: Active, PublicKey: fixedKey(9), IPv4: netip.MustParseAddr("10.77.0.100")})
	f.Add(b)
	f.Add([]byte(`{"public_key":""}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var p Peer
		if json.Unmarshal(data, &p) != nil {
			return
		}
		out, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("Marshal after Unmarshal: %v", err)
		}
		var q Peer
		if err := json.Unmarshal(out, &q); err != nil {
			t.Fatalf("Unmarshal(Marshal(p)) = %v for %s", err, out)
		}
	})
}

// FuzzEnroll throws arbitrary requests at a live registry: each is refused without changing
// anything, or enrolls a peer whose config holds only the expected lines.
func FuzzEnroll(f *testing.F) {
	f.Add("phone", "admin", "15m", "", false)
	f.Add("x=y", "viewer", "1h", "viewer", true)
	f.Add("a", "root", "-1s", "admin", false)
	dir := filepath.Join(f.TempDir(), "state")
	if _, err := Init(dir, InitOptions{Endpoint: testEndpoint, Prefix4: netip.MustParsePrefix("10.0.0.0/16")}); err != nil {
		f.Fatal(err)
	}
	r, err := Open(dir)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { r.Close() })
	f.Fuzz(func(t *testing.T, name, role, ttl, apiRole string, ownKey bool) {
		req := Request{Name: name, Role: Role(role), APIKeyRole: Role(apiRole)}
		if d, err := time.ParseDuration(ttl); err == nil {
			req.TTL = d
		}
		if ownKey {
			k := fixedKey(byte(len(name)))
			req.PublicKey = &k
		}
		gen := r.Generation()
		e, err := r.Enroll(req)
		if err != nil {
			if r.Generation() != gen {
				t.Fatalf("refused Enroll(%+v) changed the roster: %v", req, err)
			}
			return
		}
		if ValidateName(name) != nil {
			t.Fatalf("Enroll accepted name %q", name)
		}
		for _, line := range strings.Split(e.Config, "\n") {
			if strings.ContainsAny(line, "#\r\x00") || strings.Count(line, "=") > 1 && !strings.HasSuffix(line, "=") {
				t.Fatalf("config line %q", line)
			}
		}
		if _, err := r.Revoke(name); err != nil {
			t.Fatalf("Revoke(%q) = %v", name, err)
		}
	})
}

// FuzzRosterBody fuzzes what lies behind the checksum: any body, correctly sealed, must
// decode and validate, or be refused, never panic or load something the validator rejects.
func FuzzRosterBody(f *testing.F) {
	var env envelope
	if err := json.Unmarshal(sampleRoster(f), &env); err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(env.Body))
	f.Add([]byte(`{"generation":1,"next_device":100,"peers":[],"printers":[]}`))
	f.Add([]byte(`{"generation":1,"next_device":100,"peers":null,"printers":[]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var raw json.RawMessage
		if json.Unmarshal(body, &raw) != nil {
			return
		}
		data, err := seal(kindRoster, raw)
		if err != nil {
			return
		}
		b, err := decodeRoster(data, fuzzGateway)
		if err != nil {
			return
		}
		if err := b.validate(fuzzGateway); err != nil {
			t.Fatalf("loaded a roster that does not validate: %v", err)
		}
		// Every live address maps to one peer in a registry built from it.
		r := &Registry{gw: fuzzGateway, opts: Options{Now: time.Now, Monotonic: func() time.Duration { return 0 }}}
		r.install(b)
		r.clock = newGatewayClock(r.opts.Now, r.opts.Monotonic, time.Time{})
		for _, p := range r.mu.peers {
			if q, ok := r.WhoIs(p.IPv4); ok && q.PublicKey != p.PublicKey {
				t.Fatalf("WhoIs(%v) = %s, want %s", p.IPv4, q.Name, p.Name)
			}
		}
	})
}
