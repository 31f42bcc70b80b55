package cli

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/printgate/printgate/cmd/printgate/gateway"
	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/firstboot"
)

// readBootSettings reads the owner's settings file (printgate.txt) from the boot partition:
// init options for a state directory made on first boot, and printers.
func readBootSettings(bootDir string) (*bootSettings, error) {
	s, err := firstboot.ReadSettings(bootDir)
	if err != nil {
		return nil, err
	}
	b := &bootSettings{init: enroll.InitOptions{Endpoint: s.Endpoint, ListenPort: s.ListenPort, Prefix4: s.Prefix4, Prefix6: s.Prefix6, Name: s.Name},
		join: s.Join}
	for _, p := range s.Printers {
		spec, err := gateway.ParsePrinterSpec(p.String())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", firstboot.SettingsName, err)
		}
		b.printers = append(b.printers, spec)
	}
	return b, nil
}

// runFirstBoot shows the first admin enrollment on the console (standard output, which the
// appliance's unit sends to the console and never to the journal) and on the boot partition
// until an admin has joined.
func runFirstBoot(ctx context.Context, e *env, g *gateway.Gateway, bootDir string, logf func(string, ...any)) error {
	return firstboot.Run(ctx, firstboot.Config{
		BootDir: bootDir,
		Console: e.stdout,
		Enroll:  g.Enroll,
		Peers:   g.RosterPeers,
		Revoke: func(name string) error {
			_, err := g.Revoke(name)
			return err
		},
		Logf: logf,
	})
}

// bootJoin makes the state directory on first boot by joining the mesh of the settings'
// join token, with the settings' endpoint (else a detected LAN address, with a warning),
// listen port and name.
func bootJoin(ctx context.Context, e *env, cfg gateway.Config, boot *bootSettings, logf func(string, ...any)) error {
	port := boot.init.ListenPort
	if port == 0 {
		port = enroll.DefaultListenPort
	}
	ep := cfg.Endpoint
	if ep == "" {
		a, err := enroll.DetectLANAddr()
		if err != nil {
			return fmt.Errorf("no endpoint= given and %v", err)
		}
		ep = netip.AddrPortFrom(a, uint16(port)).String()
		logf("warning: no endpoint configured; the mesh's gateways and devices will dial the LAN address %s", ep)
	}
	return joinInit(ctx, e, joinOptions{state: cfg.StateDir, token: boot.join, endpoint: ep, name: boot.init.Name,
		listenPort: port, timeout: gateway.DefaultJoinTimeout})
}

// madeByJoin reports whether the state directory was made by joining a mesh: its admins are
// the mesh's, so first boot shows no admin QR.
func madeByJoin(state string) bool {
	_, err := os.Stat(filepath.Join(state, gateway.MeshDir, gateway.FileJoin))
	return err == nil
}
