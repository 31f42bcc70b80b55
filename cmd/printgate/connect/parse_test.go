package connect

import (
	"bytes"
	"io"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestParseForward(t *testing.T) {
	lo := func(p uint16) netip.AddrPort { return netip.AddrPortFrom(DefaultListen, p) }
	for _, tc := range []struct {
		in   string
		want Forward
	}{
		{"8080=mk4", Forward{Listen: lo(8080), Target: "mk4", Port: 80}},
		{"8080=mk4:81", Forward{Listen: lo(8080), Target: "mk4", Port: 81}},
		{"8888=mk4:8888", Forward{Listen: lo(8888), Target: "mk4", Port: 8888, Raw: true}},
		{"tcp:2000=mk4:23", Forward{Listen: lo(2000), Target: "mk4", Port: 23, Raw: true}},
		{"localhost:8080=10.77.0.11", Forward{Listen: lo(8080), Target: "10.77.0.11", Port: 80}},
		{"0.0.0.0:8080=mk4", Forward{Listen: netip.MustParseAddrPort("0.0.0.0:8080"), Target: "mk4", Port: 80}},
		{"[::1]:8080=[fd00::b]:80", Forward{Listen: netip.MustParseAddrPort("[::1]:8080"), Target: "fd00::b", Port: 80}},
		{"8080=fd00::b", Forward{Listen: lo(8080), Target: "fd00::b", Port: 80}},
		{"0=mk4", Forward{Listen: lo(0), Target: "mk4", Port: 80}},
	} {
		got, err := ParseForward(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseForward(%q) = %+v, %v, want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "8080", "=mk4", "8080=", "70000=mk4", "8080=mk4:0", "8080=mk 4",
		"x:8080=mk4", "8080=mk4:http", "example.com:8080=mk4", "08080=mk4", "8080=[fe80::1%eth0]:80"} {
		if f, err := ParseForward(bad); err == nil {
			t.Errorf("ParseForward(%q) = %+v, want an error", bad, f)
		}
	}
	if f, _ := ParseForward("0.0.0.0:8080=mk4"); !f.Exposed() {
		t.Errorf("0.0.0.0:8080 not Exposed")
	}
	if f, _ := ParseForward("8080=mk4"); f.Exposed() {
		t.Errorf("127.0.0.1:8080 Exposed")
	}
}

func TestReadSOCKS(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want socksRequest
		code byte // 0: no refusal expected... unless err
		err  bool
	}{
		{"name", []byte{5, 1, 0, 5, 1, 0, 3, 3, 'm', 'k', '4', 0, 80}, socksRequest{cmd: 1, name: "mk4", port: 80}, 0, false},
		{"ipv4", []byte{5, 1, 0, 5, 1, 0, 1, 10, 77, 0, 11, 0x22, 0xb8}, socksRequest{cmd: 1, addr: netip.MustParseAddr("10.77.0.11"), port: 8888}, 0, false},
		{"bind", []byte{5, 1, 0, 5, 2, 0, 3, 3, 'm', 'k', '4', 0, 80}, socksRequest{}, socksCmdUnsupport, true},
		{"udp", []byte{5, 1, 0, 5, 3, 0, 1, 1, 2, 3, 4, 0, 80}, socksRequest{}, socksCmdUnsupport, true},
		{"atyp", []byte{5, 1, 0, 5, 1, 0, 9}, socksRequest{}, socksAddrUnsupport, true},
		{"socks4", []byte{4, 1, 0, 80}, socksRequest{}, 0, true},
		{"auth only", []byte{5, 1, 2}, socksRequest{}, 0, true},
		{"short", []byte{5, 1, 0, 5, 1, 0, 1, 10}, socksRequest{}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			got, err := readSOCKS(bytes.NewReader(tc.in), &out)
			if tc.err {
				se, ok := err.(*socksError)
				if err == nil || tc.code != 0 && (!ok || se.code != tc.code) {
					t.Errorf("readSOCKS(%v) = %+v, %v, want refusal code %d", tc.in, got, err, tc.code)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("readSOCKS(%v) = %+v, %v, want %+v", tc.in, got, err, tc.want)
			}
		})
	}
}

func FuzzReadSOCKS(f *testing.F) {
	f.Add([]byte{5, 1, 0, 5, 1, 0, 3, 3, 'm', 'k', '4', 0, 80})
	f.Add([]byte{5, 1, 0, 5, 1, 0, 4, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xb, 0, 80})
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := readSOCKS(bytes.NewReader(b), io.Discard)
		if err != nil {
			return
		}
		if req.cmd != 1 || req.port == 0 || (req.name == "") == !req.addr.IsValid() {
			t.Fatalf("readSOCKS accepted %+v", req)
		}
		if req.name != "" && !validName(req.name) {
			t.Fatalf("readSOCKS accepted the name %q", req.name)
		}
	})
}

func FuzzParseForward(f *testing.F) {
	for _, s := range []string{"8080=mk4", "tcp:[::1]:2000=[fd00::b]:23", "0.0.0.0:8888=mk4:8888"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fw, err := ParseForward(s)
		if err != nil {
			return
		}
		if !fw.Listen.IsValid() || fw.Port == 0 || fw.Target == "" {
			t.Fatalf("ParseForward(%q) = %+v", s, fw)
		}
		if _, err := netip.ParseAddr(fw.Target); err != nil && !validName(fw.Target) {
			t.Fatalf("ParseForward(%q) target %q", s, fw.Target)
		}
	})
}

func TestStatusLine(t *testing.T) {
	st := Status{RxBytes: 1536, TxBytes: 3 << 20}
	if got, want := st.Line(st.LastHandshake), "no handshake yet, rx 1.5 KiB, tx 3.0 MiB, no forward in use"; got != want {
		t.Errorf("Line = %q, want %q", got, want)
	}
}

func TestGatewayAddr(t *testing.T) {
	mesh := []netip.Prefix{netip.MustParsePrefix("fd12::/64"), netip.MustParsePrefix("10.77.0.0/22")}
	for _, tc := range []struct {
		dns  []netip.Addr
		want string
	}{
		{nil, "10.77.0.1"},
		{[]netip.Addr{netip.MustParseAddr("1.1.1.1")}, "10.77.0.1"},   // a DNS server outside the tunnel
		{[]netip.Addr{netip.MustParseAddr("10.77.0.2")}, "10.77.0.2"}, // the home gateway named itself
		{[]netip.Addr{netip.MustParseAddr("fd12::3")}, "fd12::3"},
	} {
		got, err := gatewayAddr(mesh, tc.dns)
		if err != nil || got.String() != tc.want {
			t.Errorf("gatewayAddr(%v, %v) = %v, %v, want %s", mesh, tc.dns, got, err, tc.want)
		}
	}
	if _, err := gatewayAddr([]netip.Prefix{netip.MustParsePrefix("10.77.0.1/32")}, nil); err == nil {
		t.Errorf("gatewayAddr(host route only) = nil error, want one")
	}
}

// The printer list names the home gateway's printers and, under "mesh", those of the mesh's
// other gateways: connect resolves both, the home gateway's first when a name repeats.
func TestParsePrintersMesh(t *testing.T) {
	body := `{"printers":[{"name":"MK4","address":"10.77.0.11","address6":"fd00::b"}],
		"mesh":[{"name":"prusa-b","gateway":"room2","address":"10.77.0.12"},
		        {"name":"mk4","gateway":"room3","address":"10.77.0.13"},
		        {"name":"","address":"10.77.0.14"},{"name":"noaddr","address":"x"}]}`
	got, err := parsePrinters(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]netip.Addr{
		"mk4":     {netip.MustParseAddr("10.77.0.11"), netip.MustParseAddr("fd00::b")},
		"prusa-b": {netip.MustParseAddr("10.77.0.12")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parsePrinters = %v, want %v", got, want)
	}
	if _, err := parsePrinters(strings.NewReader(`{"mesh":`)); err == nil {
		t.Error("a cut-off list parsed")
	}
}
