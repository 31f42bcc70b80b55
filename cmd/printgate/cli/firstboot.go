package cli

import (
	"context"
	"fmt"

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
	b := &bootSettings{init: enroll.InitOptions{Endpoint: s.Endpoint, ListenPort: s.ListenPort, Prefix4: s.Prefix4, Prefix6: s.Prefix6}}
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
