package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/printgate/printgate/cmd/printgate/connect"
	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/qr"
)

func connectCmd() *command {
	return &command{
		name:     "connect",
		synopsis: "--conf FILE | --qr-png FILE [--forward [tcp:][ADDR:]PORT=PRINTER[:PORT]]... [--socks [ADDR:]PORT]",
		short:    "join the mesh from a laptop without admin rights (forwards and SOCKS5 on loopback)",
		long: `Joins the mesh as an ordinary user: a WireGuard device and TCP/IP stack inside this process,
with no tunnel interface, no root and no service. Runs on Linux, macOS and Windows. The device's
config is the file 'printgate enroll --conf' wrote (--conf), or the QR image it showed (--qr-png).
Nothing of the mesh is reachable from this machine except through what connect offers:

--forward [ADDR:]PORT=PRINTER[:PORT]   a local HTTP port for one printer: point PrusaSlicer,
    OrcaSlicer or Cura's OctoPrint connection at http://127.0.0.1:PORT with the device's API key.
    A reverse proxy that gives the printer its own Host header; uploads stream, select-and-print
    and the SockJS/websocket push work. PRINTER is a printer name (asked of the gateway inside
    the tunnel) or a tunnel address; its PORT defaults to 80.
--forward tcp:[ADDR:]PORT=PRINTER:PORT  raw TCP instead of HTTP. A target port of 8888 (the
    serial bridge) is always raw: --forward 8888=mk4:8888.
--socks [ADDR:]PORT   a SOCKS5 proxy (no authentication) that resolves printer names and reaches
    only tunnel addresses the config's AllowedIPs allow: never the internet. For example
    curl --socks5-hostname 127.0.0.1:1080 http://mk4/api/version

Every listener is on 127.0.0.1 unless an ADDR is given; any other address lets other machines
on your network use your device's access, and connect warns about it. A second connect with
the same config is warned about: two clients with one key steal each other's sessions. Status
lines (handshake age, bytes, forwards in use) come every --status-interval. Ctrl-C ends
everything.`,
		flags: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			conf := fs.String("conf", "", "the device's wg-quick config `FILE`")
			qrPNG := fs.String("qr-png", "", "the device's QR code as a PNG `FILE` (instead of --conf)")
			var fwds []connect.Forward
			fs.Var(repeated[connect.Forward]{&fwds, connect.ParseForward}, "forward", "a local port into the tunnel: `[tcp:][ADDR:]PORT=PRINTER[:PORT]`; repeat for more")
			socks := fs.String("socks", "", "run a SOCKS5 proxy on `[ADDR:]PORT`")
			every := fs.Duration("status-interval", 30*time.Second, "how often a status line is printed (`DURATION`; 0: never)")
			verbose := fs.Bool("verbose", false, "log the device's and the stack's verbose messages")
			return func(ctx context.Context, e *env, args []string) error {
				if err := exactArgs("connect", args, 0, ""); err != nil {
					return err
				}
				if (*conf == "") == (*qrPNG == "") {
					return usagef("connect", "give exactly one of --conf FILE and --qr-png FILE")
				}
				if *every < 0 {
					return usagef("connect", "--status-interval must not be negative")
				}
				var socksAddr netip.AddrPort
				if *socks != "" {
					ap, err := connect.ParseListen(*socks)
					if err != nil {
						return usagef("connect", "--socks: %v", err)
					}
					socksAddr = ap
				}
				dc, err := readDeviceConfig(*conf, *qrPNG)
				if err != nil {
					return err
				}
				return runConnect(ctx, e, connect.Config{Device: dc, Forwards: fwds, SOCKS: socksAddr}, *every, *verbose)
			}
		},
	}
}

// readDeviceConfig reads the config from a file or decodes it from a QR image.
func readDeviceConfig(conf, qrPNG string) (enroll.DeviceConfig, error) {
	var text []byte
	if conf != "" {
		f, err := os.Open(conf)
		if err != nil {
			return enroll.DeviceConfig{}, err
		}
		defer f.Close()
		text, err = io.ReadAll(io.LimitReader(f, enroll.MaxConfigSize+1))
		if err != nil {
			return enroll.DeviceConfig{}, fmt.Errorf("read %s: %w", conf, err)
		}
	} else {
		f, err := os.Open(qrPNG)
		if err != nil {
			return enroll.DeviceConfig{}, err
		}
		defer f.Close()
		s, err := qr.Decode(f)
		if err != nil {
			return enroll.DeviceConfig{}, fmt.Errorf("%s: %w", qrPNG, err)
		}
		text = []byte(s)
	}
	dc, err := enroll.ParseConfig(text)
	if err != nil {
		return dc, fmt.Errorf("%s%s: %w", conf, qrPNG, err)
	}
	return dc, nil
}

func runConnect(ctx context.Context, e *env, cfg connect.Config, every time.Duration, verbose bool) error {
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
	pub := cfg.Device.PrivateKey.PublicKey()
	lock, err := connect.AcquireLock(connect.LockDir(e.getenv), pub)
	var inUse *connect.InUseError
	switch {
	case errors.As(err, &inUse):
		logf("warning: %v", err)
	case err != nil:
		logf("warning: cannot check for a second connect with this config: %v", err)
	default:
		defer lock.Release()
	}
	for _, f := range cfg.Forwards {
		if f.Exposed() {
			logf("warning: forward %s listens on %v, not loopback: other machines on that network can use this device's access to the mesh", f, f.Listen.Addr())
		}
	}
	if cfg.SOCKS.IsValid() && !cfg.SOCKS.Addr().IsLoopback() {
		logf("warning: the SOCKS proxy listens on %v, not loopback: other machines on that network can use this device's access to the mesh", cfg.SOCKS.Addr())
	}

	c, err := connect.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	var addrs []string
	for _, a := range cfg.Device.Addresses {
		addrs = append(addrs, a.Addr().String())
	}
	logf("up: tunnel %s, public key %s, gateway %v", strings.Join(addrs, " "), pub, c.Gateway())
	st, _ := c.Status()
	for _, l := range st.Listeners {
		if l.Name == "socks" {
			logf("socks5 proxy on %v", l.Addr)
		} else {
			logf("forward %s on %v", l.Name, l.Addr)
		}
	}
	logf("ready (Ctrl-C ends)")

	// Ask the gateway for the printers once: it brings the handshake up and shows at once
	// whether the forwards' names resolve.
	rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
	resolved := make(chan struct{})
	defer func() { rcancel(); <-resolved }()
	go func() {
		defer close(resolved)
		for _, f := range cfg.Forwards {
			a, err := c.Resolve(rctx, f.Target)
			if err != nil {
				if rctx.Err() == nil {
					logf("warning: forward %s: %v", f, err)
				}
				continue
			}
			if a.String() != f.Target {
				logf("forward %s: %s is %v", f, f.Target, a)
			}
		}
	}()

	var tick <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			logf("stopping")
			return c.Close()
		case now := <-tick:
			st, err := c.Status()
			if err != nil {
				return err
			}
			logf("status: %s", st.Line(now))
		}
	}
}
