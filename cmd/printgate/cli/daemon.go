package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/control"
	"github.com/printgate/printgate/printerd/audit"
)

// daemonWait is how long a command waits for the control socket of a daemon that holds the
// state directory (one still starting: its lock is taken before its socket answers).
const daemonWait = 5 * time.Second

// daemonRetry is the pause between two tries while waiting.
const daemonRetry = 100 * time.Millisecond

// callDaemon sends req to the gateway running on state and returns its answer. When no
// gateway answers, it opens the state directory and runs offline on it instead, returning a
// nil response. A state directory locked by a live daemon whose socket does not answer yet
// is retried on the socket for up to daemonWait rather than failed at once.
func callDaemon(ctx context.Context, e *env, state string, req control.Request, offline func(*enroll.Registry) error) (*control.Response, error) {
	deadline := time.Now().Add(daemonWait)
	waiting := false
	for {
		resp, err := control.Unix(state).Call(ctx, req)
		if err == nil || !errors.Is(err, control.ErrNoDaemon) {
			return resp, err
		}
		reg, err := enroll.Open(state)
		if err == nil {
			defer reg.Close()
			return nil, offline(reg)
		}
		if !errors.Is(err, enroll.ErrInUse) || time.Now().After(deadline) {
			return nil, err
		}
		if !waiting {
			fmt.Fprintf(e.stderr, "printgate %s: %v; waiting up to %v for its control socket\n", req.Op, err, daemonWait)
			waiting = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(daemonRetry):
		}
	}
}

// writeAhead runs an offline roster change (no gateway running) under a write-ahead audit
// record, as the gateway does: the intent goes to STATE/audit.log, fsynced, before do changes
// the roster, and do does not run when it cannot be written. do returns what the change
// produced (recorded with its outcome).
func writeAhead(ctx context.Context, e *env, state, action string, args map[string]string, do func() (map[string]string, error)) error {
	path := audit.Path(state)
	l, err := audit.Open(path)
	if err != nil {
		return fmt.Errorf("%s refused: the audit log %s cannot be opened: %w", action, path, err)
	}
	defer l.Close()
	args["via"] = "cli, no gateway running"
	in, err := audit.Begin(ctx, l, audit.Record{Action: action, Args: args})
	if err != nil {
		return fmt.Errorf("%w (audit log %s: is the disk holding it full?)", err, path)
	}
	extra, err := do()
	if aerr := in.End(ctx, err, extra); aerr != nil {
		fmt.Fprintf(e.stderr, "printgate %s: recording the outcome: %v (the intent is on record)\n", action, aerr)
	}
	return err
}
