package cli

import (
	"context"
	"flag"
	"fmt"

	"github.com/printgate/printgate/enroll"
)

func recoverCmd() *command {
	return &command{
		name:     "recover",
		synopsis: "--state DIR",
		short:    "restore the previous roster generation after `run` refused a corrupt one",
		long: `When the roster (STATE/roster.json) is corrupt, empty or of an unknown version, 'printgate run'
refuses to bring the tunnel up and names this command. recover replaces the roster with the
previous generation (STATE/roster.prev.json) if that one verifies, and lists the peers it holds.
Inspect the list: a peer enrolled or revoked in the lost generation must be enrolled or revoked
again. Stop the gateway first; recover needs the state directory to itself.`,
		flags: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			state := fs.String("state", "", "state `DIR`")
			return func(ctx context.Context, e *env, args []string) error {
				if err := needState("recover", *state); err != nil {
					return err
				}
				if err := exactArgs("recover", args, 0, ""); err != nil {
					return err
				}
				peers, err := enroll.Recover(*state)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "restored the previous roster generation of %s: %d peers\n", *state, len(peers))
				for _, p := range peers {
					fmt.Fprintf(e.stdout, "  %s\n", p)
				}
				return nil
			}
		},
	}
}
