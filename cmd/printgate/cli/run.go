package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/printgate/printgate/cmd/printgate/gateway"
	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/control"
	"github.com/printgate/printgate/enroll/firstboot"
)

func runCmd() *command {
	return &command{
		name:     "run",
		synopsis: "--state DIR [--printer NAME=SERIALPATH[,baud=N]]... [--printer NAME=sim]... [--interface NAME] [--boot-dir DIR] [--endpoint HOST:PORT]",
		short:    "run the gateway daemon",
		long: `Runs the gateway: the WireGuard device on its one UDP port (the only host socket; it answers
nothing to anyone without a key), the userspace TCP/IP stack with the gateway's tunnel addresses
and one per printer, the web UI and native API on the gateway address, each printer's
OctoPrint-compatible API on port 80 of its own address, and the control socket STATE/control.sock
(mode 0600) that enroll, peers, revoke and status use.

The roster is checked first: if it is corrupt, empty or of an unknown version the tunnel stays
down and run exits with the recovery to take (see 'printgate recover'). If DIR holds no state at
all (absent or empty), run refuses, so a mistyped path never makes a new gateway identity:
create it with 'printgate init', or pass --init to initialize it as 'printgate init' would,
with --endpoint and the settings from --boot-dir, if any (the appliance does).

--printer NAME=PATH drives a Marlin printer on a serial port (prefer /dev/serial/by-id/...);
NAME=sim runs a simulated printer in the process. Options, comma-separated after the path:
  baud=N        link speed (default 250000)
  window=N      lines in flight when the firmware offers ADVANCED_OK (default: as many as it
                reports free); window=1 streams strictly one line per ok, as OctoPrint does
  webcam=URL    a camera daemon's MJPEG stream on this machine (http://127.0.0.1:...), shown
                to viewers through the tunnel
  snapshot=URL  the same camera's still image
  cancel-script=FILE
                G-code run after a cancel has turned heaters and fan off, one command per
                line (default: retract 2 mm, lift Z 10 mm, motors off with M84)

'wg show NAME' reads the live device through the UAPI socket /var/run/wireguard/NAME.sock.
With --boot-dir (the appliance), while no admin is enrolled, a pending admin enrollment is
shown on standard output (the console) and written to the boot partition, and owner settings
are read from DIR/printgate.txt there.

Under systemd (Type=notify) run sends READY=1 once the tunnel is up and the control socket
answers, and feeds the watchdog.
SIGINT or SIGTERM stop it: printers' heaters off, HTTP servers closed, device down, socket
files removed.`,
		flags: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			state := fs.String("state", "", "state `DIR` (made by init)")
			var printers []gateway.PrinterSpec
			fs.Var(repeated[gateway.PrinterSpec]{&printers, gateway.ParsePrinterSpec}, "printer", "a printer: `NAME=SERIALPATH[,baud=N]` or NAME=sim; repeat for more")
			iface := fs.String("interface", gateway.DefaultInterface, "UAPI socket `NAME` for 'wg show NAME'; \"none\" for no UAPI socket")
			bootDir := fs.String("boot-dir", "", "appliance boot partition `DIR`: first-boot admin QR and owner settings")
			endpoint := fs.String("endpoint", "", "`HOST:PORT` that devices enrolled from now on dial (default: the state's; a detected LAN address is re-detected)")
			initState := fs.Bool("init", false, "initialize DIR as 'printgate init' would if it holds no state (the appliance's first boot)")
			verbose := fs.Bool("verbose", false, "log every part's verbose detail too (errors are always logged, with their cause)")
			statsEvery := fs.Duration("stats-interval", gateway.DefaultStatsInterval, "how often device stats are polled (`DURATION`)")
			return func(ctx context.Context, e *env, args []string) error {
				if err := needState("run", *state); err != nil {
					return err
				}
				if err := exactArgs("run", args, 0, ""); err != nil {
					return err
				}
				if *statsEvery <= 0 {
					return usagef("run", "--stats-interval must be positive")
				}
				cfg := gateway.Config{
					StateDir:      *state,
					Interface:     *iface,
					Printers:      printers,
					StatsInterval: *statsEvery,
					Endpoint:      *endpoint,
				}
				if *iface == "none" {
					cfg.Interface = ""
				}
				return runDaemon(ctx, e, cfg, *bootDir, *initState, *verbose)
			}
		},
	}
}

// newLogger returns a log function that writes time-stamped, redacted lines to w.
func newLogger(w io.Writer) func(format string, args ...any) {
	var mu sync.Mutex
	return func(format string, args ...any) {
		line := redact(fmt.Sprintf(format, args...))
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(w, "%s %s\n", time.Now().Format("2006-01-02T15:04:05.000Z07:00"), line)
	}
}

// stateMissing reports whether dir holds no printgate state at all (absent or empty).
func stateMissing(dir string) bool {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	return err == nil && len(ents) == 0
}

func runDaemon(ctx context.Context, e *env, cfg gateway.Config, bootDir string, initState, verbose bool) error {
	logf := newLogger(e.stderr)
	cfg.Logf = logf
	if verbose {
		cfg.Verbosef = logf
	}
	if e.signals != nil {
		var stop context.CancelFunc
		ctx, stop = e.signals(ctx)
		defer stop()
	}
	var boot *bootSettings
	if bootDir != "" {
		b, err := readBootSettings(bootDir)
		if err != nil {
			return err
		}
		boot = b
		cfg.Printers = append(cfg.Printers, b.printers...)
		if cfg.Endpoint == "" {
			cfg.Endpoint = b.init.Endpoint
		}
	}
	if stateMissing(cfg.StateDir) && !initState {
		return fmt.Errorf("no gateway state in %s: create it with 'printgate init --state %s --endpoint HOST:PORT' (or pass --init to initialize it here), or check the path", cfg.StateDir, cfg.StateDir)
	}
	if stateMissing(cfg.StateDir) && boot != nil && boot.join != "" {
		// The appliance joins an existing mesh instead of making its own (join= in the
		// settings file); the join's own errors say what to fix.
		if err := bootJoin(ctx, e, cfg, boot, logf); err != nil {
			return fmt.Errorf("first boot: joining the mesh (join= in %s): %w", firstboot.SettingsName, err)
		}
	}
	if stateMissing(cfg.StateDir) {
		opts := enroll.InitOptions{}
		if boot != nil {
			opts = boot.init
		}
		opts.Endpoint = cfg.Endpoint // --endpoint, else the boot settings' (above)
		g, err := enroll.Init(cfg.StateDir, opts)
		if err != nil {
			return fmt.Errorf("no state in %s, and initializing it failed: %w", cfg.StateDir, err)
		}
		logf("initialized %s: public key %s, udp port %d, endpoint %s", cfg.StateDir, g.PrivateKey.PublicKey(), g.ListenPort, g.Endpoint)
		if g.EndpointGuessed {
			logf("warning: no endpoint configured; devices will dial the LAN address %s (remote devices need an endpoint)", g.Endpoint)
		}
	}

	if ctx.Err() != nil {
		return nil // stopped (SIGINT/SIGTERM) before the gateway started
	}
	n := gateway.NotifierFromEnv(e.getenv)
	g, err := gateway.Start(ctx, cfg)
	if err != nil {
		return err
	}
	st := g.Status()
	logf("ready: tunnel %s, udp port %d, control socket %s", strings.Join(st.Addresses, " "), st.ListenPort, control.Path(cfg.StateDir))
	if err := n.Notify(fmt.Sprintf("READY=1\nSTATUS=tunnel up on udp %d, %d printers", st.ListenPort, len(st.Printers))); err != nil {
		logf("%v", err)
	}

	var wg sync.WaitGroup
	wctx, wcancel := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.Watchdog(wctx, g.Alive)
	}()
	if bootDir != "" && !madeByJoin(cfg.StateDir) { // a joined gateway's admins are the mesh's
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := runFirstBoot(wctx, e, g, bootDir, logf); err != nil && !errors.Is(err, context.Canceled) {
				logf("first boot: %v", err)
			}
		}()
	}

	<-ctx.Done()
	logf("stopping")
	n.Notify("STOPPING=1")
	wcancel()
	wg.Wait()
	return g.Close()
}

// bootSettings are the owner's settings from the appliance boot partition.
type bootSettings struct {
	init     enroll.InitOptions
	printers []gateway.PrinterSpec
	join     string // a join token: first boot joins its mesh
}
