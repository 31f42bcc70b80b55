package cli

import (
	"context"
	"flag"
	"fmt"

	"github.com/printgate/printgate/printerd/audit"
)

func auditCmd() *command {
	return &command{
		name:     "audit",
		synopsis: "verify --state DIR",
		short:    "verify the hash-chained audit log",
		long: `audit verify walks the audit log STATE/audit.log (every enrollment, revocation, upload, job
action, terminal line and refusal, each record chained to the one before by SHA-256) and fails at
the first record that was edited, removed, inserted or reordered. On success it prints the number
of records and the head of the chain (sequence and hash): keep the head elsewhere to detect a
log cut short later.

Every action is recorded before it is applied (an intent, then its outcome): enrollments,
revocations, and every printer and file action; only emergency stops are sent first and recorded
after. verify also lists every intent without an outcome, an action a crash interrupted, which
may or may not have been applied.`,
		flags: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			state := fs.String("state", "", "state `DIR`")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) == 0 {
					return usagef("audit", "want a subcommand: verify")
				}
				if args[0] != "verify" {
					return usagef("audit", "unknown subcommand %q: want verify", args[0])
				}
				if err := needState("audit", *state); err != nil {
					return err
				}
				if err := exactArgs("audit", args[1:], 0, ""); err != nil {
					return err
				}
				path := audit.Path(*state)
				h, open, err := audit.Unfinished(path)
				if err != nil {
					return err
				}
				if h.Seq == 0 {
					fmt.Fprintf(e.stdout, "%s: no records\n", path)
					return nil
				}
				fmt.Fprintf(e.stdout, "%s: %d records, chain intact; head %d %s\n", path, h.Seq, h.Seq, h.Hash)
				if len(open) > 0 {
					fmt.Fprintf(e.stdout, "%d intents without an outcome (the gateway or CLI stopped between the record and the action; check whether each was applied):\n", len(open))
					for _, r := range open {
						fmt.Fprintf(e.stdout, "  %s\n", audit.Describe(r))
					}
				}
				return nil
			}
		},
	}
}
