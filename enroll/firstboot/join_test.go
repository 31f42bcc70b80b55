package firstboot

import (
	"crypto/rand"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/printgate/printgate/mesh"
)

func testToken(t testing.TB) string {
	t.Helper()
	var k mesh.Key
	rand.Read(k[:])
	tok, err := mesh.NewToken(time.Now().Add(time.Hour), netip.MustParseAddr("10.77.0.60"), k, netip.MustParseAddr("10.77.0.1"), "gw1.example:51820")
	if err != nil {
		t.Fatal(err)
	}
	return tok.Encode()
}

func TestParseSettingsJoin(t *testing.T) {
	tok := testToken(t)
	in := "# a second gateway for the workshop\nname=workshop\njoin=" + tok + "\nendpoint=192.168.1.20:51820\nprinter=mk4=sim\n"
	want := Settings{Name: "workshop", Join: tok, Endpoint: "192.168.1.20:51820", Printers: []Printer{{Name: "mk4", Path: "sim"}}}
	got, err := ParseSettings([]byte(in))
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseSettings(%q) = %+v, %v; want %+v", in, got, err, want)
	}
	if again, err := ParseSettings([]byte(got.Format())); err != nil || !reflect.DeepEqual(again, got) {
		t.Errorf("round trip of %+v = %+v, %v", got, again, err)
	}

	swap := "A"
	if tok[30] == 'A' {
		swap = "B"
	}
	for _, tt := range []struct{ in, wantErr string }{
		{"join=" + tok[:30] + swap + tok[31:], "line 1: join token: checksum"},
		{"join=" + tok[:len(tok)-5], "line 1: join token"},
		{"join=hello", "line 1: join token"},
		{"join=" + tok + "\njoin=" + tok, "join repeats line 1"},
		{"prefix=10.44.0.0/24\njoin=" + tok, "line 2: join= with prefix="},
		{"join=" + tok + "\nprefix=fd00::/64", "line 1: join= with prefix="},
		{"name=-gw", "line 1:"},
		{"name=a\nname=b", "name repeats line 1"},
	} {
		if _, err := ParseSettings([]byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParseSettings(%.60q) = %v, want an error with %q", tt.in, err, tt.wantErr)
		}
	}
}
