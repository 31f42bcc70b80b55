package cli

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/printgate/printgate/cmd/printgate/gateway"
	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/control"
	"github.com/printgate/printgate/printerd/audit"
)

func revokeCmd() *command {
	return &command{
		name:     "revoke",
		synopsis: "--state DIR NAME",
		short:    "revoke a device: off the tunnel, its open connections closed, at once",
		long: `Revokes the device NAME. With a running gateway, the peer is removed from the WireGuard device
(its session keys wiped) and every open connection of it inside the tunnel (HTTP keep-alives,
websockets, streams) is closed before the command returns; the time it took is printed. Without a
running gateway the roster is changed, and the peer is never put on the device again. The
device's addresses are never handed out again.`,
		flags: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			state := fs.String("state", "", "state `DIR`")
			return func(ctx context.Context, e *env, args []string) error {
				if err := needState("revoke", *state); err != nil {
					return err
				}
				if err := exactArgs("revoke", args, 1, "one device NAME"); err != nil {
					return err
				}
				resp, err := callDaemon(ctx, e, *state, control.Request{Op: control.OpRevoke, Name: args[0]}, func(reg *enroll.Registry) error {
					off, err := gateway.OpenOffline(reg, nil)
					if err != nil {
						return err
					}
					defer off.Close()
					return writeAhead(ctx, e, *state, audit.ActionRevoke, map[string]string{"name": args[0]}, func() (map[string]string, error) {
						p, pending, err := off.Revoke(args[0])
						if err != nil {
							return nil, err
						}
						fmt.Fprintf(e.stdout, "revoked %s (%v) in the roster; no gateway is running\n", p.Name, p.IPv4)
						if pending {
							fmt.Fprintf(e.stdout, "%s\n", meshPendingNote)
						}
						return map[string]string{"address": p.IPv4.String(), "public_key": p.PublicKey.String()}, nil
					})
				})
				if err != nil {
					return err
				}
				if resp != nil {
					r := resp.Revoked
					fmt.Fprintf(e.stdout, "revoked %s (%s): off the tunnel in %v, %d open connections closed\n",
						r.Peer.Name, r.Peer.Address, time.Duration(r.AppliedSeconds*float64(time.Second)).Round(time.Microsecond), r.ClosedConns)
					if r.MeshPending {
						fmt.Fprintf(e.stdout, "%s\n", meshPendingNote)
					}
				}
				return nil
			}
		},
	}
}

// meshPendingNote follows a revocation applied on this gateway while its mesh has no quorum.
const meshPendingNote = "revoked here; the rest of the mesh follows when this gateway reaches a majority of it again (revocation is never undone)"
