package firstboot

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseSettings(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Settings
	}{
		{"empty", "", Settings{}},
		{"comments and blanks", "# printgate settings\n\n   # indented comment\n", Settings{}},
		{
			"everything",
			"\xef\xbb\xbf# written on Windows\r\nendpoint=home.example.org:51820\r\nlisten-port = 51821\r\nprefix=10.44.0.0/24\r\nprefix=fd12:3456:789a:1::/64\r\n" +
				"printer=mk3=/dev/serial/by-id/usb-Prusa_Research_Original_Prusa_i3_MK3_CZPX1234-if00,baud=115200\r\nprinter=test=sim\r\n",
			Settings{
				Endpoint:   "home.example.org:51820",
				ListenPort: 51821,
				Prefix4:    netip.MustParsePrefix("10.44.0.0/24"),
				Prefix6:    netip.MustParsePrefix("fd12:3456:789a:1::/64"),
				Printers: []Printer{
					{Name: "mk3", Path: "/dev/serial/by-id/usb-Prusa_Research_Original_Prusa_i3_MK3_CZPX1234-if00", Baud: 115200},
					{Name: "test", Path: "sim"},
				},
			},
		},
		{"ipv4 endpoint", "endpoint=203.0.113.7:51820", Settings{Endpoint: "203.0.113.7:51820"}},
		{"ipv6 endpoint", "endpoint=[2001:db8::1]:51820", Settings{Endpoint: "[2001:db8::1]:51820"}},
		{"printer no baud", "printer=ender-3=/dev/ttyUSB0", Settings{Printers: []Printer{{Name: "ender-3", Path: "/dev/ttyUSB0"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSettings([]byte(tt.in))
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseSettings(%q) = %+v, %v, want %+v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseSettingsErrors(t *testing.T) {
	tests := []struct {
		in, wantErr string
	}{
		{"endpoint=gw.example:51820\nfoo=bar", `line 2: unknown key "foo"`},
		{"Endpoint=gw.example:51820", `unknown key "Endpoint"`},
		{"just words", "not key=value"},
		{"endpoint=gw.example", "want HOST:PORT"},
		{"endpoint=gw.example:0", "port"},
		{"endpoint=gw.example:99999", "port"},
		{"endpoint=gw_example:51820", "neither an IP address nor a host name"},
		{"endpoint=0.0.0.0:51820", "not an address devices can dial"},
		{"endpoint=a:1\nendpoint=b:2", "endpoint repeats line 1"},
		{"listen-port=80", "from 1024 to 65535"},
		{"listen-port=051820", "port"},
		{"listen-port=1\nlisten-port=2", "from 1024"},
		{"prefix=10.44.0.1/24", "host bits set (did you mean 10.44.0.0/24?)"},
		{"prefix=10.44.0.0/31", "too small"},
		{"prefix=10.1.0.0/16\nprefix=10.2.0.0/16", "a second IPv4 prefix"},
		{"prefix=fd00::/64\nprefix=fd01::/64", "a second IPv6 prefix"},
		{"prefix=banana", "prefix"},
		{"printer=mk3", "want NAME=PATH"},
		{"printer=MK3=/dev/ttyACM0", "name"},
		{"printer==/dev/ttyACM0", "name"},
		{"printer=mk3=/etc/passwd", "under /dev/"},
		{"printer=mk3=/dev/../etc/passwd", "under /dev/"},
		{"printer=mk3=ttyACM0", "under /dev/"},
		{"printer=mk3=/dev/ttyACM0,baud=12345", "baud"},
		{"printer=mk3=/dev/ttyACM0,baud=115200,baud=115200", "baud given twice"},
		{"printer=mk3=/dev/ttyACM0,parity=none", `unknown option "parity=none"`},
		{"printer=a=sim\nprinter=a=/dev/ttyACM0", "used twice"},
		{"endpoint=gw.example:51820\n\xff", "not UTF-8"},
		{strings.Repeat("#", maxSettingsSize+1), "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.wantErr, func(t *testing.T) {
			got, err := ParseSettings([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseSettings(%q) = %+v, %v, want error containing %q", tt.in, got, err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, Settings{}) {
				t.Errorf("ParseSettings(%q) returned %+v with its error, want zero Settings", tt.in, got)
			}
		})
	}
}

func TestReadSettings(t *testing.T) {
	dir := t.TempDir()
	got, err := ReadSettings(dir)
	if err != nil || !reflect.DeepEqual(got, Settings{}) {
		t.Errorf("ReadSettings(no file) = %+v, %v, want zero Settings and no error", got, err)
	}
	if err := os.WriteFile(filepath.Join(dir, SettingsName), []byte("printer=p=sim\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err = ReadSettings(dir)
	if want := (Settings{Printers: []Printer{{Name: "p", Path: "sim"}}}); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("ReadSettings = %+v, %v, want %+v", got, err, want)
	}
	if err := os.WriteFile(filepath.Join(dir, SettingsName), []byte("colour=blue\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSettings(dir); err == nil || !strings.Contains(err.Error(), SettingsName) || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("ReadSettings(bad file) = %v, want an error naming the file and the line", err)
	}
}

func TestPrinterString(t *testing.T) {
	tests := []struct {
		p    Printer
		want string
	}{
		{Printer{Name: "a", Path: "sim"}, "a=sim"},
		{Printer{Name: "mk3", Path: "/dev/ttyACM0", Baud: 250000}, "mk3=/dev/ttyACM0,baud=250000"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.p, got, tt.want)
		}
	}
}

// FuzzParseSettings: no panic, and whatever parses formats back to the same Settings.
func FuzzParseSettings(f *testing.F) {
	f.Add("endpoint=gw.example:51820\nprefix=10.44.0.0/24\nprinter=mk3=/dev/ttyACM0,baud=115200\n")
	f.Add("# c\r\nlisten-port=51821\r\nprefix=fd00::/64\r\nprinter=x=sim")
	f.Add("endpoint=[2001:db8::1]:1\n")
	f.Add("\xef\xbb\xbfprinter=a-b=/dev/serial/by-id/usb-x,baud=250000")
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseSettings([]byte(in))
		if err != nil {
			return
		}
		again, err := ParseSettings([]byte(s.Format()))
		if err != nil {
			t.Fatalf("ParseSettings(Format(%+v)) = %v", s, err)
		}
		if !reflect.DeepEqual(again, s) {
			t.Fatalf("round trip: %+v -> %q -> %+v", s, s.Format(), again)
		}
	})
}
