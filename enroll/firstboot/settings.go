package firstboot

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/mesh"
)

// SettingsName is the owner's settings file on the boot partition.
const SettingsName = "printgate.txt"

// maxSettingsSize bounds what ReadSettings reads: the file is typed by hand.
const maxSettingsSize = 64 << 10

// Settings are the owner's choices from BootDir/printgate.txt. The zero value means "all
// defaults" (what a card without the file gets). The file is plain text, one key=value per
// line; blank lines and lines starting with # are ignored; Windows line ends and a UTF-8 BOM
// are accepted. Keys:
//
//	endpoint=HOST:PORT          what phones dial (a DNS name or the router's public address)
//	listen-port=N               the WireGuard UDP port on this machine (1024-65535)
//	prefix=CIDR                 mesh prefix, at most one IPv4 and one IPv6
//	printer=NAME=PATH[,baud=N]  a printer on a serial port (/dev/...) or NAME=sim
//	name=NAME                   the gateway's name in its mesh (default: the host name)
//	join=TOKEN                  join the mesh that issued TOKEN (`printgate mesh invite`)
//	                            instead of starting a new one; no prefix= with it
//
// Unknown keys, repeated single keys and malformed values are errors that name the line.
type Settings struct {
	// Endpoint is HOST:PORT for the devices' configs; empty: detected.
	Endpoint string
	// ListenPort is the UDP port; zero: the default (51820).
	ListenPort int
	// Prefix4 and Prefix6 are the mesh prefixes; zero: the defaults.
	Prefix4, Prefix6 netip.Prefix
	// Printers in file order; none: no printer configured from the file.
	Printers []Printer
	// Name is the gateway's name in its mesh; empty: the host name.
	Name string
	// Join is a join token (its text, checked to parse); empty: first boot makes a new mesh.
	Join string
}

// Printer is one printer= line.
type Printer struct {
	Name string
	// Path is a serial device under /dev (prefer /dev/serial/by-id/...) or "sim".
	Path string
	// Baud is the serial speed; zero: the daemon's default.
	Baud int
}

// String returns the printer as `printgate run --printer` takes it: NAME=PATH[,baud=N].
func (p Printer) String() string {
	if p.Baud == 0 {
		return p.Name + "=" + p.Path
	}
	return fmt.Sprintf("%s=%s,baud=%d", p.Name, p.Path, p.Baud)
}

// Format writes s back in the file's syntax; ParseSettings(Format(s)) == s.
func (s Settings) Format() string {
	var b strings.Builder
	if s.Endpoint != "" {
		fmt.Fprintf(&b, "endpoint=%s\n", s.Endpoint)
	}
	if s.ListenPort != 0 {
		fmt.Fprintf(&b, "listen-port=%d\n", s.ListenPort)
	}
	for _, p := range []netip.Prefix{s.Prefix4, s.Prefix6} {
		if p.IsValid() {
			fmt.Fprintf(&b, "prefix=%s\n", p)
		}
	}
	for _, p := range s.Printers {
		fmt.Fprintf(&b, "printer=%s\n", p)
	}
	if s.Name != "" {
		fmt.Fprintf(&b, "name=%s\n", s.Name)
	}
	if s.Join != "" {
		fmt.Fprintf(&b, "join=%s\n", s.Join)
	}
	return b.String()
}

// ReadSettings reads bootDir/printgate.txt. A missing file is not an error: it returns the
// zero Settings (all defaults).
func ReadSettings(bootDir string) (Settings, error) {
	path := filepath.Join(bootDir, SettingsName)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return Settings{}, nil
	}
	if err != nil {
		return Settings{}, fmt.Errorf("read settings: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSettingsSize+1))
	if err != nil {
		return Settings{}, fmt.Errorf("read settings %s: %w", path, err)
	}
	s, err := ParseSettings(b)
	if err != nil {
		return Settings{}, fmt.Errorf("read settings %s: %w", path, err)
	}
	return s, nil
}

// ParseSettings parses the text of a settings file; see Settings for the syntax.
func ParseSettings(b []byte) (Settings, error) {
	var s Settings
	if len(b) > maxSettingsSize {
		return Settings{}, fmt.Errorf("parse settings: longer than %d bytes", maxSettingsSize)
	}
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	if !utf8.Valid(b) {
		return Settings{}, errors.New("parse settings: not UTF-8 text")
	}
	seen := map[string]int{} // single-valued key -> line
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), maxSettingsSize)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(strings.TrimSuffix(sc.Text(), "\r"))
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if !ok {
			return Settings{}, fmt.Errorf("parse settings: line %d: %q is not key=value", n, line)
		}
		once := func() error {
			if prev, dup := seen[key]; dup {
				return fmt.Errorf("%s repeats line %d", key, prev)
			}
			seen[key] = n
			return nil
		}
		var err error
		switch key {
		case "endpoint":
			if err = once(); err == nil {
				s.Endpoint, err = parseEndpoint(val)
			}
		case "listen-port":
			if err = once(); err == nil {
				s.ListenPort, err = parsePort(val, 1024)
			}
		case "prefix":
			err = s.addPrefix(val)
		case "printer":
			err = s.addPrinter(val)
		case "name":
			if err = once(); err == nil {
				if err = enroll.ValidateName(val); err == nil {
					s.Name = val
				}
			}
		case "join":
			if err = once(); err == nil {
				s.Join, err = parseJoinToken(val)
			}
		default:
			err = fmt.Errorf("unknown key %q (want endpoint, listen-port, prefix, printer, name or join)", key)
		}
		if err != nil {
			return Settings{}, fmt.Errorf("parse settings: line %d: %w", n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return Settings{}, fmt.Errorf("parse settings: %w", err)
	}
	if s.Join != "" && (s.Prefix4.IsValid() || s.Prefix6.IsValid()) {
		return Settings{}, fmt.Errorf("parse settings: line %d: join= with prefix=: a joining gateway takes the mesh's prefixes (remove the prefix lines)", seen["join"])
	}
	return s, nil
}

// parseJoinToken checks that v is a join token that parses (a damaged copy is caught here,
// naming the line); whether it is still valid is the join's business.
func parseJoinToken(v string) (string, error) {
	if _, err := mesh.ParseToken(v); err != nil {
		return "", err
	}
	return v, nil
}

func parseEndpoint(v string) (string, error) {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return "", fmt.Errorf("endpoint %q: want HOST:PORT ([ADDR]:PORT for IPv6): %w", v, err)
	}
	if _, err := parsePort(port, 1); err != nil {
		return "", fmt.Errorf("endpoint %q: %w", v, err)
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		if addr.Zone() != "" || addr.IsUnspecified() {
			return "", fmt.Errorf("endpoint %q: %s is not an address devices can dial", v, host)
		}
		return net.JoinHostPort(addr.String(), port), nil
	}
	if !validHostname(host) {
		return "", fmt.Errorf("endpoint %q: %q is neither an IP address nor a host name", v, host)
	}
	return net.JoinHostPort(host, port), nil
}

// validHostname accepts DNS names: dot-separated labels of letters, digits and inner hyphens.
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func parsePort(v string, min int) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < min || n > 65535 || strconv.Itoa(n) != v {
		return 0, fmt.Errorf("port %q: want a number from %d to 65535", v, min)
	}
	return n, nil
}

func (s *Settings) addPrefix(v string) error {
	p, err := netip.ParsePrefix(v)
	if err != nil {
		return fmt.Errorf("prefix %q: %w", v, err)
	}
	if p != p.Masked() {
		return fmt.Errorf("prefix %q: host bits set (did you mean %s?)", v, p.Masked())
	}
	if p.Addr().Zone() != "" || p.Addr().Is4In6() {
		return fmt.Errorf("prefix %q: want a plain IPv4 or IPv6 prefix", v)
	}
	if p.Addr().Is4() {
		if s.Prefix4.IsValid() {
			return fmt.Errorf("prefix %q: a second IPv4 prefix (have %s)", v, s.Prefix4)
		}
		if p.Bits() > 30 {
			return fmt.Errorf("prefix %q: too small for a gateway and devices (want /30 or larger)", v)
		}
		s.Prefix4 = p
		return nil
	}
	if s.Prefix6.IsValid() {
		return fmt.Errorf("prefix %q: a second IPv6 prefix (have %s)", v, s.Prefix6)
	}
	if p.Bits() > 126 {
		return fmt.Errorf("prefix %q: too small for a gateway and devices (want /126 or larger)", v)
	}
	s.Prefix6 = p
	return nil
}

// Serial speeds Marlin boards use.
var bauds = map[int]bool{9600: true, 19200: true, 38400: true, 57600: true, 115200: true,
	230400: true, 250000: true, 460800: true, 500000: true, 921600: true, 1000000: true}

func (s *Settings) addPrinter(v string) error {
	name, rest, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("printer %q: want NAME=PATH[,baud=N]", v)
	}
	if !validPrinterName(name) {
		return fmt.Errorf("printer %q: name %q: want 1-32 of a-z, 0-9 and -, starting with a letter or digit", v, name)
	}
	for _, p := range s.Printers {
		if p.Name == name {
			return fmt.Errorf("printer %q: name %q used twice", v, name)
		}
	}
	fields := strings.Split(rest, ",")
	p := Printer{Name: name, Path: fields[0]}
	switch {
	case p.Path == "sim":
	case !strings.HasPrefix(p.Path, "/dev/") || filepath.Clean(p.Path) != p.Path || strings.ContainsAny(p.Path, " \t"):
		return fmt.Errorf("printer %q: path %q: want a serial device under /dev/ (see ls /dev/serial/by-id/) or sim", v, p.Path)
	}
	for _, opt := range fields[1:] {
		k, val, _ := strings.Cut(opt, "=")
		switch k {
		case "baud":
			if p.Baud != 0 {
				return fmt.Errorf("printer %q: baud given twice", v)
			}
			n, err := strconv.Atoi(val)
			if err != nil || !bauds[n] || strconv.Itoa(n) != val {
				return fmt.Errorf("printer %q: baud %q: want one of 9600 ... 250000, 1000000", v, val)
			}
			p.Baud = n
		default:
			return fmt.Errorf("printer %q: unknown option %q (want baud=N)", v, opt)
		}
	}
	s.Printers = append(s.Printers, p)
	return nil
}

func validPrinterName(n string) bool {
	if n == "" || len(n) > 32 || n[0] == '-' {
		return false
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
