package tunnel

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// ResolveEndpoint turns a peer's Endpoint, HOST:PORT (a name or an address), into the
// address WireGuard sends to, preferring IPv4 when a name has both: the gateway's one UDP
// socket and most home routers' port forwards are IPv4. A nil r is net.DefaultResolver; the
// caller bounds the lookup with ctx.
func ResolveEndpoint(ctx context.Context, r *net.Resolver, hostport string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(hostport); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	host, ps, err := net.SplitHostPort(hostport)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("endpoint %q: %w", hostport, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 1 || port > 65535 || strconv.Itoa(port) != ps {
		return netip.AddrPort{}, fmt.Errorf("endpoint %q: port %q: want 1-65535", hostport, ps)
	}
	if r == nil {
		r = net.DefaultResolver
	}
	ips, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("endpoint %q: %w", hostport, err)
	}
	if len(ips) == 0 {
		return netip.AddrPort{}, fmt.Errorf("endpoint %q: no address", hostport)
	}
	best := ips[0]
	for _, a := range ips {
		if a.Unmap().Is4() {
			best = a
			break
		}
	}
	return netip.AddrPortFrom(best.Unmap(), uint16(port)), nil
}
