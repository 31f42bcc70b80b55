package enroll

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
)

// EndpointWarning is what init prints when it guessed the endpoint from a LAN interface.
const EndpointWarning = "the endpoint is a detected LAN address: devices outside this network cannot reach it; run init with --endpoint HOST:PORT (a public name or address, with the UDP port forwarded) for remote devices"

// DetectLANAddr picks the address devices on this host's network would dial: on the
// interface of the IPv4 default route if there is one (so a Docker or VM bridge is not
// chosen), the first private IPv4 address, else a global unicast IPv4, else a global IPv6
// address. It reads the interface and routing tables only; it sends nothing. Addresses inside
// exclude (the mesh prefixes) are skipped.
func DetectLANAddr(exclude ...netip.Prefix) (netip.Addr, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return netip.Addr{}, err
	}
	if route, err := os.ReadFile("/proc/net/route"); err == nil {
		if name := defaultRouteInterface(string(route)); name != "" {
			for _, ifc := range ifs {
				if ifc.Name == name {
					if a, err := pickAddr([]net.Interface{ifc}, exclude); err == nil {
						return a, nil
					}
				}
			}
		}
	}
	return pickAddr(ifs, exclude)
}

// defaultRouteInterface returns the interface of the IPv4 default route in /proc/net/route
// text (destination and mask 00000000), or "".
func defaultRouteInterface(route string) string {
	for _, line := range strings.Split(route, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) >= 8 && f[1] == "00000000" && f[7] == "00000000" {
			return f[0]
		}
	}
	return ""
}

func pickAddr(ifs []net.Interface, exclude []netip.Prefix) (netip.Addr, error) {
	var private4, global4, global6 netip.Addr
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if !ip.IsGlobalUnicast() && !ip.IsPrivate() {
				continue
			}
			excluded := false
			for _, p := range exclude {
				if p.IsValid() && p.Contains(ip) {
					excluded = true
				}
			}
			switch {
			case excluded:
			case ip.Is4() && ip.IsPrivate() && !private4.IsValid():
				private4 = ip
			case ip.Is4() && !global4.IsValid():
				global4 = ip
			case ip.Is6() && !ip.IsPrivate() && !global6.IsValid():
				global6 = ip
			}
		}
	}
	for _, a := range []netip.Addr{private4, global4, global6} {
		if a.IsValid() {
			return a, nil
		}
	}
	return netip.Addr{}, errors.New("no LAN address on any interface")
}
