package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/printgate/printgate/cmd/printgate/gateway"
	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/control"
)

func statusCmd() *command {
	return &command{
		name:     "status",
		synopsis: "--state DIR [--json]",
		short:    "show the gateway: tunnel addresses, UDP port, public key, printers",
		long: `Shows whether a gateway runs on DIR, its tunnel addresses (the first host address of the IPv4
and IPv6 mesh prefixes), the WireGuard listen port, public key and endpoint, the URL of the web
UI inside the tunnel, each printer's name, tunnel address and state, and the devices by state.

--json prints an object with the keys running, name (the gateway's name in its mesh),
public_key, listen_port, endpoint, addresses, prefix4, prefix6, url, interface, printers (a
list of objects with name, address, address6, url, port, state, error and gateway) and peers (a
count per state). In a mesh the printers of every gateway are listed, each with its gateway;
other gateways' printers have the state "remote".`,
		flags: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			state := fs.String("state", "", "state `DIR`")
			asJSON := fs.Bool("json", false, "print JSON")
			return func(ctx context.Context, e *env, args []string) error {
				if err := needState("status", *state); err != nil {
					return err
				}
				if err := exactArgs("status", args, 0, ""); err != nil {
					return err
				}
				st, err := getStatus(ctx, e, *state)
				if err != nil {
					return err
				}
				if *asJSON {
					return writeJSON(e.stdout, st)
				}
				printStatus(e.stdout, st)
				return nil
			}
		},
	}
}

func getStatus(ctx context.Context, e *env, state string) (*control.Status, error) {
	var st control.Status
	resp, err := callDaemon(ctx, e, state, control.Request{Op: control.OpStatus}, func(reg *enroll.Registry) error {
		st = gateway.OfflineStatus(reg)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if resp != nil {
		return resp.Status, nil
	}
	return &st, nil
}

func printStatus(w io.Writer, st *control.Status) {
	if st.Running {
		fmt.Fprintln(w, "gateway running")
	} else {
		fmt.Fprintln(w, "gateway not running")
	}
	if st.Name != "" {
		fmt.Fprintf(w, "  mesh name    %s\n", st.Name)
	}
	fmt.Fprintf(w, "  public key   %s\n", st.PublicKey)
	fmt.Fprintf(w, "  listen port  udp %d\n", st.ListenPort)
	fmt.Fprintf(w, "  endpoint     %s\n", st.Endpoint)
	fmt.Fprintf(w, "  tunnel       %s (mesh %s %s)\n", strings.Join(st.Addresses, ", "), st.Prefix4, st.Prefix6)
	fmt.Fprintf(w, "  web UI       %s (inside the tunnel)\n", st.URL)
	if st.Interface != "" {
		fmt.Fprintf(w, "  wg show      %s\n", st.Interface)
	}
	for _, p := range st.Printers {
		fmt.Fprintf(w, "  printer      %s at %s: %s", p.Name, p.Address, p.State)
		if p.Gateway != "" && p.Gateway != st.Name {
			fmt.Fprintf(w, " on gateway %s", p.Gateway)
		}
		if p.Error != "" {
			fmt.Fprintf(w, " (%s)", p.Error)
		}
		fmt.Fprintln(w)
	}
	var parts []string
	for _, s := range []string{"active", "pending", "expired", "revoked"} {
		if n := st.Peers[s]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, s))
		}
	}
	if len(parts) == 0 {
		parts = []string{"none"}
	}
	fmt.Fprintf(w, "  devices      %s\n", strings.Join(parts, ", "))
}
