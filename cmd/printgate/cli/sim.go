package cli

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/printgate/printgate/printerd/marlinsim"
)

func simCmd() *command {
	return &command{
		name:     "sim",
		synopsis: "[--baud N] [--latency DURATION] [--advanced-ok] [--link PATH] [--noise P] [--resend-without-ok] [--emergency-parser] [--no-reset] [--time-scale X]",
		short:    "run a simulated Marlin printer on a pty (prints the pty path)",
		long: `Runs the Marlin simulator on a pseudo-terminal and prints the path of its slave device on
standard output (and keeps --link pointing at it), so that 'printgate run --printer NAME=PATH',
Debian's printcore or any other host drives it like a USB printer: every open resets the
firmware ("start"), lines are numbered and checksummed as Marlin checks them, the wire is paced
at --baud and every reply is delayed by --latency. With --no-reset it is a board that does not
reset when its port opens (native USB): the firmware boots once and runs on, heaters and all,
while hosts close and reopen the port. It runs until SIGINT or SIGTERM.`,
		flags: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			baud := fs.Int("baud", 250000, "simulated link speed in `N` baud (pacing; 0: none)")
			latency := fs.Duration("latency", 2*time.Millisecond, "delay before each reply line, like a USB round trip (`DURATION`)")
			advOK := fs.Bool("advanced-ok", false, "report ADVANCED_OK (ok N<n> P<p> B<b>) so hosts can stream")
			link := fs.String("link", "", "keep a symlink at `PATH` pointing at the current pty (like /dev/serial/by-id)")
			noise := fs.Float64("noise", 0, "probability `P` of a one-bit error in each numbered line (0 to 1)")
			resendNoOK := fs.Bool("resend-without-ok", false, "Marlin 2.0.x resends: no ok after Resend:")
			emergency := fs.Bool("emergency-parser", false, "act on M108/M112/M410 as soon as they arrive (EMERGENCY_PARSER)")
			noReset := fs.Bool("no-reset", false, "a board that does not reset when its port opens (native USB): the firmware runs on across closes and reopens")
			scale := fs.Float64("time-scale", 1, "machine time to wall time: 1 real time, 0 instant moves and heating (`X`)")
			return func(ctx context.Context, e *env, args []string) error {
				if err := exactArgs("sim", args, 0, ""); err != nil {
					return err
				}
				switch {
				case *baud < 0:
					return usagef("sim", "--baud %d: want 0 or more", *baud)
				case *latency < 0:
					return usagef("sim", "--latency %v: want 0 or more", *latency)
				case *noise < 0 || *noise > 1:
					return usagef("sim", "--noise %v: want 0 to 1", *noise)
				case *scale < 0:
					return usagef("sim", "--time-scale %v: want 0 or more", *scale)
				}
				if e.signals != nil {
					var stop context.CancelFunc
					ctx, stop = e.signals(ctx)
					defer stop()
				}
				p, err := marlinsim.OpenPTY(ctx, marlinsim.Config{
					Baud:            *baud,
					OKLatency:       *latency,
					AdvancedOK:      *advOK,
					ResendWithoutOK: *resendNoOK,
					EmergencyParser: *emergency,
					NoReset:         *noReset,
					Noise:           *noise,
					TimeScale:       *scale,
					Link:            *link,
					Logf:            newLogger(e.stderr),
				})
				if err != nil {
					return err
				}
				fmt.Fprintln(e.stdout, p.Path())
				if *link != "" {
					fmt.Fprintf(e.stderr, "%s -> %s\n", *link, p.Path())
				}
				<-ctx.Done()
				return p.Close()
			}
		},
	}
}
