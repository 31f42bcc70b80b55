package cli

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"strings"

	"github.com/printgate/printgate/cmd/printgate/gateway"
	"github.com/printgate/printgate/enroll"
)

func initCmd() *command {
	return &command{
		name:     "init",
		synopsis: "--state DIR [--endpoint HOST:PORT] [--listen-port N] [--prefix CIDR] [--prefix6 CIDR] [--name NAME] | --state DIR --join TOKEN --endpoint HOST:PORT [--name NAME] [--listen-port N]",
		short:    "create a state directory: gateway key, UDP port, mesh prefixes, endpoint",
		long: `Creates the state directory DIR (mode 0700) with a new gateway private key (mode 0600), the
WireGuard UDP listen port, an IPv4 mesh prefix and an IPv6 ULA /64 (RFC 4193, random), and the
endpoint HOST:PORT that devices will dial. It refuses to overwrite an initialized directory.

Without --endpoint a LAN address of this machine is used and a warning printed: devices outside
the LAN (a phone on mobile data) need --endpoint with a public name or address, and a router
that forwards the UDP port.

With --join TOKEN (from ` + "`printgate mesh invite`" + ` on a gateway of a mesh) the new gateway joins
that mesh instead of starting its own: it reaches the inviter inside a temporary tunnel made
from the token, registers its name, key and --endpoint (required), and gets its tunnel
addresses and the mesh's prefixes. A damaged or expired token is refused before anything is
sent; a token used before is refused by the inviter. Nothing is written unless the join
succeeded. Then ` + "`printgate run`" + ` brings the new gateway up as a member.`,
		flags: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			state := fs.String("state", "", "state `DIR` to create")
			endpoint := fs.String("endpoint", "", "`HOST:PORT` devices dial (default: a detected LAN address, with a warning)")
			port := fs.Int("listen-port", enroll.DefaultListenPort, "WireGuard UDP `port`")
			prefix := fs.String("prefix", enroll.DefaultPrefix4.String(), "IPv4 mesh prefix `CIDR` (/16 to /24, private)")
			prefix6 := fs.String("prefix6", "", "IPv6 mesh prefix `CIDR` (a /64 ULA; default: generated per RFC 4193)")
			join := fs.String("join", "", "join the mesh that issued the join `TOKEN` (printgate mesh invite)")
			name := fs.String("name", "", "the gateway's `NAME` in the mesh (default: the host name)")
			joinTimeout := fs.Duration("join-timeout", gateway.DefaultJoinTimeout, "with --join: how long to try to reach the inviter")
			return func(ctx context.Context, e *env, args []string) error {
				if err := needState("init", *state); err != nil {
					return err
				}
				if err := exactArgs("init", args, 0, ""); err != nil {
					return err
				}
				if *join != "" {
					var bad []string
					fs.Visit(func(f *flag.Flag) {
						if f.Name == "prefix" || f.Name == "prefix6" {
							bad = append(bad, "--"+f.Name)
						}
					})
					if len(bad) > 0 {
						return usagef("init", "%s: a joining gateway takes the mesh's prefixes", strings.Join(bad, ", "))
					}
					if *port < 1 || *port > 65535 {
						return usagef("init", "--listen-port %d: want 1-65535", *port)
					}
					return joinInit(ctx, e, joinOptions{state: *state, token: *join, endpoint: *endpoint, name: *name,
						listenPort: *port, timeout: *joinTimeout})
				}
				opts := enroll.InitOptions{Endpoint: *endpoint, ListenPort: *port, Name: *name}
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
