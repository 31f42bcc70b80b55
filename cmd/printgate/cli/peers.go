package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/printgate/printgate/cmd/printgate/gateway"
	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/control"
)

func peersCmd() *command {
	return &command{
		name:     "peers",
		synopsis: "--state DIR [--json]",
		short:    "list enrolled devices with their honest status",
		long: `Lists every enrolled device: name, role, state (pending until the first handshake, active,
expired, revoked), tunnel address, age of the last handshake, the endpoint its packets last came
from, bytes received and sent, and a CLONE flag when one key was seen alternating between two
sources (the same config on two devices). WireGuard has no connections: a recent handshake is
the only sign of life.

--json prints a list of objects with the keys name, role, state, address, address6, public_key,
own_key, has_api_key, api_key_role, created, expires_at, revoked_at, last_handshake,
last_handshake_age_seconds, endpoint, rx_bytes, tx_bytes, clone and gateway (the device's home
gateway in the mesh; the web API's device list uses the same names; keys without a value are
left out). In a mesh every device of the mesh is listed: those homed on other gateways from
this gateway's copy of the roster, without live numbers. With a running gateway the numbers are live; without one they are
the roster's last record.`,
		flags: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			state := fs.String("state", "", "state `DIR`")
			asJSON := fs.Bool("json", false, "print JSON")
			return func(ctx context.Context, e *env, args []string) error {
				if err := needState("peers", *state); err != nil {
					return err
				}
				if err := exactArgs("peers", args, 0, ""); err != nil {
					return err
				}
				peers, err := listPeers(ctx, e, *state)
				if err != nil {
					return err
				}
				if *asJSON {
					return writeJSON(e.stdout, peers)
				}
				printPeers(e.stdout, peers)
				return nil
			}
		},
	}
}

func listPeers(ctx context.Context, e *env, state string) ([]enroll.PeerView, error) {
	var peers []enroll.PeerView
	resp, err := callDaemon(ctx, e, state, control.Request{Op: control.OpPeers}, func(reg *enroll.Registry) error {
		peers = gateway.OfflinePeers(reg)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if resp != nil {
		peers = resp.Peers
	}
	if peers == nil {
		peers = []enroll.PeerView{}
	}
	return peers, nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printPeers(w io.Writer, peers []enroll.PeerView) {
	if len(peers) == 0 {
		fmt.Fprintln(w, "no devices enrolled (printgate enroll --state DIR NAME)")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tSTATE\tADDRESS\tHANDSHAKE\tENDPOINT\tRX\tTX\tFLAGS")
	for _, p := range peers {
		hs := "never"
		if p.LastHandshakeAge != nil {
			hs = fmtAge(time.Duration(*p.LastHandshakeAge*float64(time.Second))) + " ago"
		}
		ep := p.Endpoint
		if ep == "" {
			ep = "-"
		}
		flags := ""
		if p.Clone {
			flags = "CLONE"
		}
		if p.OwnKey {
			if flags != "" {
				flags += ","
			}
			flags += "own-key"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.Role, p.State, p.Address, hs, ep, fmtBytes(p.RxBytes), fmtBytes(p.TxBytes), flags)
	}
	tw.Flush()
}

func fmtAge(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}

func fmtBytes(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	}
}
