package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/printgate/printgate/enroll/control"
)

// meshSub is one `printgate mesh` subcommand: it runs with the mesh command's flags.
type meshSub struct {
	name string
	run  func(ctx context.Context, e *env, f *meshFlags, args []string) error
}

// meshFlags are the flags every mesh subcommand shares (each uses those it needs).
type meshFlags struct {
	state *string
	ttl   *time.Duration
}

// meshSubs are the mesh subcommands in the order the help lists them.
func meshSubs() []meshSub {
	return []meshSub{{"invite", meshInvite}}
}

func meshCmd() *command {
	return &command{
		name:     "mesh",
		synopsis: "invite --state DIR [--ttl DURATION]",
		short:    "the mesh of gateways: invite a new gateway",
		long: `mesh invite asks the running gateway for a join token: a one-time secret that lets one new
machine join this gateway's mesh with ` + "`printgate init --state DIR --join TOKEN --endpoint HOST:PORT`" + `.
The token is printed alone on the last line of standard output; it is valid once, for --ttl
(default 15m, at most 168h). It holds a one-time WireGuard key the gateway keeps as a pending
peer until the token is used or expires; a restart of the gateway withdraws it. Recording the
token needs the mesh's quorum: without it the request is refused with a message saying so.
Treat the token as a secret until it is used: whoever holds it can add a gateway.`,
		flags: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			f := &meshFlags{
				state: fs.String("state", "", "state `DIR` of a gateway of the mesh"),
				ttl:   fs.Duration("ttl", 15*time.Minute, "invite: how long the join token is valid"),
			}
			return func(ctx context.Context, e *env, args []string) error {
				var names []string
				for _, s := range meshSubs() {
					names = append(names, s.name)
					if len(args) > 0 && args[0] == s.name {
						return s.run(ctx, e, f, args[1:])
					}
				}
				if len(args) == 0 {
					return usagef("mesh", "want a subcommand: %v", names)
				}
				return usagef("mesh", "unknown subcommand %q: want one of %v", args[0], names)
			}
		},
	}
}

// meshInvite prints a join token made by the running gateway, alone on the last line.
func meshInvite(ctx context.Context, e *env, f *meshFlags, args []string) error {
	if err := needState("mesh", *f.state); err != nil {
		return err
	}
	if err := exactArgs("mesh", args, 0, ""); err != nil {
		return err
	}
	if *f.ttl < time.Minute || *f.ttl > 7*24*time.Hour {
		return usagef("mesh", "--ttl %v: want 1m to 168h", *f.ttl)
	}
	res, err := control.Unix(*f.state).MeshInvite(ctx, f.ttl.String())
	if errors.Is(err, control.ErrNoDaemon) {
		if stateMissing(*f.state) {
			return fmt.Errorf("mesh invite: no gateway state in %s (check the path)", *f.state)
		}
		return fmt.Errorf("mesh invite: no gateway is running on %s: start it (printgate run --state %s); the token's one-time peer lives on its WireGuard device", *f.state, *f.state)
	}
	if err != nil {
		return fmt.Errorf("mesh invite: %w", err)
	}
	fmt.Fprintf(e.stderr, "join token for one new gateway, valid until %s (%v), through %s.\n",
		res.Expires.Local().Format(time.DateTime), res.Expires.Sub(time.Now()).Round(time.Second), res.Endpoint)
	fmt.Fprintf(e.stderr, "on the new machine: printgate init --state DIR --join TOKEN --endpoint HOST:PORT [--name NAME]\n")
	fmt.Fprintf(e.stderr, "(or join=TOKEN in printgate.txt on an appliance's boot partition). Keep it secret until used.\n")
	fmt.Fprintln(e.stdout, res.Token)
	return nil
}
