package gateway

import (
	"context"
	"fmt"
	"time"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/printerd/audit"
)

// Write-ahead audit records of the daemon's own roster changes (control socket, first boot):
// Enroll and Revoke call begin before they change anything and end after.

// begin writes the intent of a daemon-side action (the local CLI has no peer) before it is
// applied (audit.Begin). Without it the action is refused, with an error naming the log.
func (g *Gateway) begin(action string, args map[string]string) (*audit.Intent, error) {
	path := audit.Path(g.cfg.StateDir)
	if g.audit == nil {
		return nil, fmt.Errorf("%s refused: the audit log %s could not be opened at start (see the gateway's log)", action, path)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	in, err := audit.Begin(ctx, g.audit, audit.Record{Action: action, Args: args})
	if err != nil {
		g.logf("gateway: %v", err)
		return nil, fmt.Errorf("%w (audit log %s: is the disk holding it full?)", err, path)
	}
	return in, nil
}

// end records the outcome of a begun action; p is the peer it changed (zero on error).
func (g *Gateway) end(in *audit.Intent, err error, p enroll.Peer) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var extra map[string]string
	if err == nil {
		extra = map[string]string{"name": p.Name, "role": string(p.Role), "address": p.IPv4.String(), "public_key": p.PublicKey.String()}
	}
	if aerr := in.End(ctx, err, extra); aerr != nil {
		g.logf("gateway: audit outcome: %v (the intent is on record)", aerr)
	}
}

// noAudit stands in for an audit log that could not be opened at start: every append fails,
// so printerd refuses every action that must be written ahead (507) and logs the
// emergency stops it sends anyway, instead of acting unrecorded.
type noAudit struct{ path string }

func (n noAudit) Append(context.Context, audit.Record) error {
	return fmt.Errorf("the audit log %s could not be opened at start (see the gateway's log)", n.path)
}

func (n noAudit) Tail(int) ([]audit.Record, error) {
	return nil, fmt.Errorf("the audit log %s could not be opened at start", n.path)
}
