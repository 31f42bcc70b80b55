package cli

import (
	"context"
	"flag"
	"io"
)

func helpCmd() *command {
	return &command{
		name:     "help",
		synopsis: "[COMMAND]",
		short:    "show help for printgate or one command",
		long:     `Shows the list of commands, or the flags of one command (the same as COMMAND --help).`,
		flags: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			return func(ctx context.Context, e *env, args []string) error {
				switch len(args) {
				case 0:
					topUsage(e.stdout)
					return nil
				case 1:
					c := lookup(args[0])
					if c == nil {
						return usagef("help", "unknown command %q", args[0])
					}
					cfs := flag.NewFlagSet("printgate "+c.name, flag.ContinueOnError)
					cfs.SetOutput(io.Discard)
					c.flags(cfs)
					commandUsage(e.stdout, c, cfs)
					return nil
				default:
					return usagef("help", "want at most one command name")
				}
			}
		},
	}
}
