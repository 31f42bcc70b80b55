package cli

import (
	"context"
	"flag"
	"fmt"
	"net/netip"

	"github.com/printgate/printgate/enroll"
)

func initCmd() *command {
	return &command{
		name:     "init",
		synopsis: "--state DIR [--endpoint HOST:PORT] [--listen-port N] [--prefix CIDR] [--prefix6 CIDR]",
		short:    "create a state directory: gateway key, UDP port, mesh prefixes, endpoint",
		long: `Creates the state directory DIR (mode 0700) with a new gateway private key (mode 0600), the
WireGuard UDP listen port, an IPv4 mesh prefix and an IPv6 ULA /64 (RFC 4193, random), and the
endpoint HOST:PORT that devices will dial. It refuses to overwrite an initialized directory.

Without --endpoint a LAN address of this machine is used and a warning printed: devices outside
the LAN (a phone on mobile data) need --endpoint with a public name or address, and a router
that forwards the UDP port.`,
		flags: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			state := fs.String("state", "", "state `DIR` to create")
			endpoint := fs.String("endpoint", "", "`HOST:PORT` devices dial (default: a detected LAN address, with a warning)")
			port := fs.Int("listen-port", enroll.DefaultListenPort, "WireGuard UDP `port`")
			prefix := fs.String("prefix", enroll.DefaultPrefix4.String(), "IPv4 mesh prefix `CIDR` (/16 to /24, private)")
			prefix6 := fs.String("prefix6", "", "IPv6 mesh prefix `CIDR` (a /64 ULA; default: generated per RFC 4193)")
			return func(ctx context.Context, e *env, args []string) error {
				if err := needState("init", *state); err != nil {
					return err
				}
				if err := exactArgs("init", args, 0, ""); err != nil {
					return err
				}
				opts := enroll.InitOptions{Endpoint: *endpoint, ListenPort: *port}
				p4, err := netip.ParsePrefix(*prefix)
				if err != nil || !p4.Addr().Is4() {
					return usagef("init", "--prefix %q: want an IPv4 CIDR such as 10.77.0.0/22", *prefix)
				}
				opts.Prefix4 = p4
				if *prefix6 != "" {
					p6, err := netip.ParsePrefix(*prefix6)
					if err != nil || !p6.Addr().Is6() {
						return usagef("init", "--prefix6 %q: want an IPv6 CIDR such as fd12:3456:789a:1::/64", *prefix6)
					}
					opts.Prefix6 = p6
				}
				if *port < 1 || *port > 65535 {
					return usagef("init", "--listen-port %d: want 1-65535", *port)
				}
				g, err := enroll.Init(*state, opts)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "initialized %s\n", *state)
				fmt.Fprintf(e.stdout, "  public key   %s\n", g.PrivateKey.PublicKey())
				fmt.Fprintf(e.stdout, "  listen port  udp %d\n", g.ListenPort)
				fmt.Fprintf(e.stdout, "  mesh         %v, %v (gateway %v, %v)\n", g.Prefix4, g.Prefix6, g.Prefix4.Addr().Next(), g.Prefix6.Addr().Next())
				fmt.Fprintf(e.stdout, "  endpoint     %s\n", g.Endpoint)
				if g.EndpointGuessed {
					fmt.Fprintf(e.stderr, "warning: no --endpoint given; devices will dial the LAN address %s. Remote devices need --endpoint HOST:PORT (a public name or address, with UDP %d forwarded).\n", g.Endpoint, g.ListenPort)
				}
				fmt.Fprintf(e.stdout, "next: printgate run --state %s\n", *state)
				return nil
			}
		},
	}
}
