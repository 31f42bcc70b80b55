package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/printgate/printgate/cmd/printgate/gateway"
	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/control"
)

// `printgate mesh SUBCOMMAND`: the mesh's membership. Each subcommand is a meshSub; the
// flags of all of them are declared once on the mesh command (meshOpts).

// meshOpts are the flags of the mesh subcommands.
type meshOpts struct {
	state  string
	asJSON bool
	ttl    time.Duration
}

// meshSub is one `printgate mesh` subcommand.
type meshSub struct {
	name, synopsis, short string
	run                   func(ctx context.Context, e *env, o *meshOpts, args []string) error
}

// meshSubs are the subcommands in the order the help lists them.
func meshSubs() []meshSub {
	return []meshSub{
		meshStatusSub(),
		meshRemoveSub(),
		meshInviteSub(),
	}
}

func meshCmd() *command {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, s := range meshSubs() {
		fmt.Fprintf(tw, "  mesh %s %s\t%s\n", s.name, s.synopsis, s.short)
	}
	tw.Flush()
	return &command{
		name:     "mesh",
		synopsis: "SUBCOMMAND --state DIR [flags] [arguments]",
		short:    "the mesh of gateways: status, invite a new gateway, remove one",
		long: `Several gateways share one roster (devices, keys, addresses, printers) on raft, inside the
tunnel: a device enrolled on any gateway reaches every printer of the mesh. A single gateway is
a mesh of one. Subcommands:

` + b.String() + `
mesh invite asks the running gateway for a join token: valid once, for --ttl (default 15m, at
most 168h), printed alone on the last line of standard output (advice goes to standard error).
The new machine joins with ` + "`printgate init --state DIR --join TOKEN --endpoint HOST:PORT`" + ` (or
join=TOKEN in an appliance's printgate.txt). The token holds a one-time WireGuard key the
gateway keeps as a pending peer until the token is used or expires; a restart of the gateway
withdraws it. Treat it as a secret until used: whoever holds it can add a gateway.

Writes (enroll, mesh invite, mesh remove) need a majority of the mesh's gateways running and
reachable: a gateway without it refuses them with a message containing "quorum" (exit status
1). Reads and revocations always work. See docs/mesh.md.`,
		flags: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			o := &meshOpts{}
			fs.StringVar(&o.state, "state", "", "state `DIR`")
			fs.BoolVar(&o.asJSON, "json", false, "print JSON (mesh status)")
			fs.DurationVar(&o.ttl, "ttl", gateway.DefaultInviteTTL, "how long the join token is valid (mesh invite)")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) == 0 {
					return usagef("mesh", "want a subcommand: %s", strings.Join(meshSubNames(), ", "))
				}
				for _, s := range meshSubs() {
					if s.name == args[0] {
						if err := needState("mesh", o.state); err != nil {
							return err
						}
						return s.run(ctx, e, o, args[1:])
					}
				}
				return usagef("mesh", "unknown subcommand %q (want %s)", args[0], strings.Join(meshSubNames(), ", "))
			}
		},
	}
}

func meshSubNames() []string {
	var out []string
	for _, s := range meshSubs() {
		out = append(out, s.name)
	}
	return out
}

func meshStatusSub() meshSub {
	return meshSub{
		name:     "status",
		synopsis: "--state DIR [--json]",
		short:    "gateways with address, endpoint, leader, reachability; quorum",
		run: func(ctx context.Context, e *env, o *meshOpts, args []string) error {
			if err := exactArgs("mesh", args, 0, ""); err != nil {
				return err
			}
			var st control.MeshStatus
			resp, err := callDaemon(ctx, e, o.state, control.Request{Op: control.OpMeshStatus}, func(reg *enroll.Registry) error {
				var err error
				st, err = gateway.OfflineMeshStatus(reg)
				return err
			})
			if err != nil {
				return err
			}
			if resp != nil && resp.Mesh != nil {
				st = *resp.Mesh
			}
			if o.asJSON {
				return writeJSON(e.stdout, st)
			}
			printMeshStatus(e.stdout, &st)
			return nil
		},
	}
}

func meshRemoveSub() meshSub {
	return meshSub{
		name:     "remove",
		synopsis: "--state DIR NAME",
		short:    "remove gateway NAME (refused while devices are homed there)",
		run: func(ctx context.Context, e *env, o *meshOpts, args []string) error {
			if err := exactArgs("mesh", args, 1, "one gateway NAME"); err != nil {
				return err
			}
			resp, err := callDaemon(ctx, e, o.state, control.Request{Op: control.OpMeshRemove, Name: args[0]}, func(reg *enroll.Registry) error {
				return fmt.Errorf("mesh remove: no gateway is running on %s; removing a gateway needs the mesh's majority, which only a running gateway reaches: start it (printgate run --state %s)", o.state, o.state)
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "removed gateway %s from the mesh\n", args[0])
			if resp != nil && resp.Mesh != nil {
				printMeshStatus(e.stdout, resp.Mesh)
			}
			return nil
		},
	}
}

func printMeshStatus(w io.Writer, st *control.MeshStatus) {
	if !st.Running {
		fmt.Fprintf(w, "gateway %s not running: the mesh as its last copy of the roster has it\n", st.Name)
	}
	q := "yes: enrollments can commit"
	if !st.Quorum {
		q = "no: enrollments are refused until a majority of the gateways is reachable"
	}
	leader := st.Leader
	if leader == "" {
		leader = "none known"
	}
	fmt.Fprintf(w, "mesh of %d, seen from %s; leader %s; quorum %s\n", len(st.Gateways), st.Name, leader, q)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tENDPOINT\tLEADER\tREACHABLE\tDEVICES\tPRINTERS")
	for _, g := range st.Gateways {
		yes := func(b bool) string {
			if b {
				return "yes"
			}
			return "-"
		}
		name := g.Name
		if g.Name == st.Name {
			name += " (this)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\n", name, g.Address, g.Endpoint, yes(g.Leader), yes(g.Reachable), g.Devices, g.Printers)
	}
	tw.Flush()
	if len(st.PendingRevocations) > 0 {
		fmt.Fprintf(w, "revoked here, not yet committed in the mesh: %s\n", strings.Join(st.PendingRevocations, ", "))
	}
}

func meshInviteSub() meshSub {
	return meshSub{
		name:     "invite",
		synopsis: "--state DIR [--ttl DURATION]",
		short:    "a one-time join token for a new gateway, alone on the last line (admin)",
		run: func(ctx context.Context, e *env, o *meshOpts, args []string) error {
			if err := exactArgs("mesh", args, 0, ""); err != nil {
				return err
			}
			if o.ttl < time.Minute || o.ttl > gateway.MaxInviteTTL {
				return usagef("mesh", "--ttl %v: want 1m to %v", o.ttl, gateway.MaxInviteTTL)
			}
			resp, err := callDaemon(ctx, e, o.state, control.Request{Op: control.OpMeshInvite, TTL: o.ttl.String()}, func(*enroll.Registry) error {
				return fmt.Errorf("mesh invite: no gateway is running on %s: start it (printgate run --state %s); the token's one-time peer lives on its WireGuard device", o.state, o.state)
			})
			if err != nil {
				return err
			}
			res := resp.Invite
			if res == nil {
				return fmt.Errorf("mesh invite: the gateway answered no token")
			}
			// Advice on stderr; the token alone on standard output, so scripts take its last line.
			fmt.Fprintf(e.stderr, "join token for one new gateway, valid until %s (%v), through %s.\n",
				res.Expires.Local().Format(time.DateTime), time.Until(res.Expires).Round(time.Second), res.Endpoint)
			fmt.Fprintf(e.stderr, "on the new machine: printgate init --state DIR --join TOKEN --endpoint HOST:PORT [--name NAME]\n")
			fmt.Fprintf(e.stderr, "(or join=TOKEN in printgate.txt on an appliance's boot partition). Keep it secret until used.\n")
			fmt.Fprintln(e.stdout, res.Token)
			return nil
		},
	}
}
