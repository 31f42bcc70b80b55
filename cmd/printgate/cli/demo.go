package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/printgate/printgate/cmd/printgate/gateway"
	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/control"
	"github.com/printgate/printgate/enroll/qr"
)

func demoCmd() *command {
	return &command{
		name:     "demo",
		synopsis: "[--endpoint HOST:PORT] [--listen-port N]",
		short:    "a throw-away gateway with a simulated printer; prints a QR to scan",
		long: `Starts a gateway on a temporary state directory with one simulated printer, enrolls an admin
device and prints its QR code in the terminal, the path of its .conf (for a laptop: wg-quick up
FILE, or import it in the WireGuard app) and the URL to open through the tunnel. The gateway
listens on UDP 51820 if it is free (else on a free port) and devices dial this machine's LAN
address unless --endpoint says otherwise. Ctrl-C stops it and removes everything it made.`,
		flags: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			endpoint := fs.String("endpoint", "", "`HOST:PORT` devices dial (default: this machine's LAN address)")
			port := fs.Int("listen-port", 0, "WireGuard UDP `port` (default: 51820 if free, else any free port)")
			return func(ctx context.Context, e *env, args []string) error {
				if err := exactArgs("demo", args, 0, ""); err != nil {
					return err
				}
				if *port < 0 || *port > 65535 {
					return usagef("demo", "--listen-port %d: want 1-65535", *port)
				}
				return runDemo(ctx, e, *endpoint, *port)
			}
		},
	}
}

// freeUDPPort returns want if it is free on every address, else a port the kernel picks.
func freeUDPPort(want int) (int, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{Port: want})
	if err != nil {
		c, err = net.ListenUDP("udp", &net.UDPAddr{})
		if err != nil {
			return 0, err
		}
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

func runDemo(ctx context.Context, e *env, endpoint string, port int) (err error) {
	if e.signals != nil {
		var stop context.CancelFunc
		ctx, stop = e.signals(ctx)
		defer stop()
	}
	logf := newLogger(e.stderr)
	tmp, err := os.MkdirTemp("", "printgate-demo-")
	if err != nil {
		return err
	}
	defer func() {
		if rerr := os.RemoveAll(tmp); rerr != nil && err == nil {
			err = rerr
		}
		fmt.Fprintf(e.stdout, "removed %s\n", tmp)
	}()
	state := filepath.Join(tmp, "state")
	if port == 0 {
		if port, err = freeUDPPort(enroll.DefaultListenPort); err != nil {
			return err
		}
	}
	gw, err := enroll.Init(state, enroll.InitOptions{Endpoint: endpoint, ListenPort: port})
	if err != nil {
		return err
	}
	cfg := gateway.Config{StateDir: state, Logf: logf}
	if gateway.SimAvailable {
		cfg.Printers = []gateway.PrinterSpec{{Name: "demo", Port: gateway.SimPort}}
	}
	if os.Geteuid() == 0 {
		cfg.Interface = "printgate-demo"
	}
	g, err := gateway.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := g.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	en, err := g.Enroll(enroll.Request{Name: "demo-admin", Role: enroll.Admin, TTL: enroll.DefaultTTL})
	if err != nil {
		return err
	}
	res := control.EnrollResultFrom(en, time.Now())
	en.Forget()
	conf := filepath.Join(tmp, "demo-admin.conf")
	if err := writeSecretFile(conf, []byte(res.Config)); err != nil {
		return err
	}
	code, err := qr.Encode(res.Config)
	if err != nil {
		return err
	}
	st := g.Status()
	fmt.Fprintf(e.stdout, "printgate demo: gateway on udp %d, devices dial %s\n", st.ListenPort, gw.Endpoint)
	if gw.EndpointGuessed {
		fmt.Fprintf(e.stdout, "(a LAN address: the phone must be on this network; use --endpoint otherwise)\n")
	}
	fmt.Fprintf(e.stdout, "\nScan with the WireGuard app (+ → Scan from QR code), then switch the tunnel on:\n\n%s\n", code.ANSI())
	if res.Peer.ExpiresAt != nil {
		fmt.Fprintf(e.stdout, "the QR works until its first use or %s (%v), whichever comes first\n", localTime(*res.Peer.ExpiresAt), enroll.DefaultTTL)
	}
	fmt.Fprintf(e.stdout, "laptop: sudo wg-quick up %s\n", conf)
	fmt.Fprintf(e.stdout, "open through the tunnel: %s\n", st.URL)
	for _, p := range st.Printers {
		fmt.Fprintf(e.stdout, "printer %s (simulated): %s (OctoPrint API; API key %s)\n", p.Name, p.URL, res.APIKey)
	}
	if len(st.Printers) == 0 {
		fmt.Fprintf(e.stdout, "API key: %s\n", res.APIKey)
	}
	if cfg.Interface != "" {
		fmt.Fprintf(e.stdout, "wg show %s\n", cfg.Interface)
	}
	fmt.Fprintf(e.stdout, "Ctrl-C stops the demo and removes %s\n", tmp)
	<-ctx.Done()
	if errors.Is(ctx.Err(), context.Canceled) {
		return nil
	}
	return nil
}
