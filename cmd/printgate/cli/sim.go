package cli

import (
	"context"
	"errors"
	"flag"
	"time"
)

func simCmd() *command {
	return &command{
		name:     "sim",
		synopsis: "[--baud N] [--latency DURATION] [--advanced-ok]",
		short:    "run a simulated Marlin printer on a pty (prints the pty path)",
		long: `Runs the Marlin simulator on a pseudo-terminal and prints its path, so that printgate run
--printer NAME=PATH, printcore or any other host can drive it like a USB printer. It runs until
SIGINT or SIGTERM.`,
		flags: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			fs.Int("baud", 250000, "simulated link speed (`N` baud) for pacing")
			fs.Duration("latency", 2*time.Millisecond, "delay before each ok, like a USB round trip (`DURATION`)")
			fs.Bool("advanced-ok", false, "report ADVANCED_OK (ok N P B) so hosts can stream")
			return func(ctx context.Context, e *env, args []string) error {
				return errors.New("the simulator (printerd/marlinsim) is not in this build yet")
			}
		},
	}
}
