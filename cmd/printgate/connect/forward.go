package connect

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/printgate/printgate/printerd"
)

// Forward is one local port that leads into the tunnel.
type Forward struct {
	// Listen is where the forward listens on this machine.
	Listen netip.AddrPort
	// Target is a printer name (resolved through the gateway) or a tunnel address.
	Target string
	// Port is the target's port.
	Port uint16
	// Raw forwards bytes as they come (the serial bridge); false is an HTTP reverse proxy
	// that gives the printer its own Host header.
	Raw bool
}

// DefaultListen is the address a forward or the SOCKS proxy listens on when only a port is
// given: loopback, so nobody else on the laptop's network reaches the mesh through it.
var DefaultListen = netip.AddrFrom4([4]byte{127, 0, 0, 1})

// ParseForward parses `[tcp:][ADDR:]PORT=PRINTER[:PORT]`.
//
// ADDR defaults to 127.0.0.1 (an IPv6 ADDR goes in brackets); PRINTER is a printer name or a
// tunnel address (IPv6 in brackets when a port follows); the target PORT defaults to 80. The
// forward is an HTTP reverse proxy, except with the tcp: prefix or when the target port is the
// serial bridge's (8888), which are raw TCP.
func ParseForward(s string) (Forward, error) {
	var f Forward
	spec := s
	if rest, ok := strings.CutPrefix(spec, "tcp:"); ok {
		f.Raw, spec = true, rest
	}
	local, remote, ok := strings.Cut(spec, "=")
	if !ok {
		return f, fmt.Errorf("forward %q: want [ADDR:]PORT=PRINTER[:PORT]", s)
	}
	ap, err := ParseListen(local)
	if err != nil {
		return f, fmt.Errorf("forward %q: %w", s, err)
	}
	f.Listen = ap
	host, port, err := splitTarget(remote)
	if err != nil {
		return f, fmt.Errorf("forward %q: %w", s, err)
	}
	f.Target, f.Port = host, port
	if f.Port == printerd.BridgePort {
		f.Raw = true
	}
	return f, nil
}

// ParseListen parses `[ADDR:]PORT`; ADDR defaults to DefaultListen, and PORT 0 picks a free
// port.
func ParseListen(s string) (netip.AddrPort, error) {
	if s == "0" {
		return netip.AddrPortFrom(DefaultListen, 0), nil
	}
	if p, err := parsePort(s); err == nil {
		return netip.AddrPortFrom(DefaultListen, p), nil
	}
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("listen address %q: want [ADDR:]PORT", s)
	}
	p, err := parsePort(ps)
	if ps == "0" {
		p, err = 0, nil
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("listen address %q: %w", s, err)
	}
	if host == "localhost" {
		return netip.AddrPortFrom(DefaultListen, p), nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil || a.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("listen address %q: ADDR must be an IP address of this machine", s)
	}
	return netip.AddrPortFrom(a.Unmap(), p), nil
}

// splitTarget splits PRINTER[:PORT].
func splitTarget(s string) (string, uint16, error) {
	host, port := s, uint16(80)
	if a, err := netip.ParseAddr(s); err == nil {
		host = a.String() // a bare IPv6 literal has colons of its own
	} else if h, ps, err := net.SplitHostPort(s); err == nil {
		p, err := parsePort(ps)
		if err != nil {
			return "", 0, err
		}
		host, port = h, p
	} else if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		host = s[1 : len(s)-1]
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return "", 0, fmt.Errorf("target %q: no zones in the tunnel", s)
		}
		return a.Unmap().String(), port, nil
	}
	if !validName(host) {
		return "", 0, fmt.Errorf("target %q: want a printer name or a tunnel address", s)
	}
	return host, port, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != s {
		return 0, fmt.Errorf("port %q: want 1-65535", s)
	}
	return uint16(n), nil
}

// validName accepts what a printer name can be: letters, digits, '-', '_' and '.'.
func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Exposed reports whether the forward listens where other machines may reach it.
func (f Forward) Exposed() bool { return !f.Listen.Addr().IsLoopback() }

// String is the forward as the status lines show it: LISTEN -> TARGET:PORT (http|tcp).
func (f Forward) String() string {
	kind := "http"
	if f.Raw {
		kind = "tcp"
	}
	return fmt.Sprintf("%s -> %s (%s)", f.Listen, net.JoinHostPort(f.Target, strconv.Itoa(int(f.Port))), kind)
}
