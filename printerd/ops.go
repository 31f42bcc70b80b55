package printerd

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/printgate/printgate/printerd/audit"
	"github.com/printgate/printgate/printerd/marlin"
	"github.com/printgate/printgate/printerd/policy"
)

// This file holds the printer actions both APIs share: every G-code line they build or relay
// goes through sendLines, which checks it with the printer's Policy for the caller's role
// and then hands it to the controller (whose own filter checks it once more).

// actions are what the faces share beyond HTTP: the printer actions here, and the file
// actions (download, delete, upload) of api.go and upload.go. Like the faces built on it, it
// is a view of the Server and keeps the receiver name s.
type actions struct{ *Server }

// record appends an audit record for q's caller; err nil means "ok".
func (s actions) record(q *request, action string, args map[string]string, err error) {
	if s.cfg.Audit == nil {
		return
	}
	res := "ok"
	if err != nil {
		res = err.Error()
	}
	rec := audit.Record{Peer: q.caller.Name, Key: q.caller.PublicKey, Role: string(q.role), Action: action, Args: withPrinter(q, args), Result: res}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if aerr := s.cfg.Audit.Append(ctx, rec); aerr != nil {
		s.errorf("printerd: audit %s by %s (%s, result %q) not recorded: %v", action, q.caller.Name, describeArgs(rec.Args), clip(res, 120), aerr)
	}
}

// refused records a policy refusal in the audit log and the metrics; it returns err.
func (s actions) refused(q *request, line string, err error) error {
	var ref *policy.Refusal
	if errors.As(err, &ref) {
		s.metrics.refusal(string(ref.Rule))
		s.record(q, audit.ActionRefusal, map[string]string{"line": clip(line, 200), "rule": string(ref.Rule)}, err)
	}
	return err
}

// stopOnly lets through only the emergency stops (M112, M108, M410): what a role below
// operator may send. Any other line is refused as an authorization failure (403, with the
// policy's rule, audited) before the printer's state is looked at.
func (s actions) stopOnly(q *request, lines []string) error {
	st := q.p.Printer.Status()
	for _, line := range lines {
		l, err := policy.Parse(line)
		if err == nil {
			err = q.p.Policy.CheckAs(policyRole(string(q.role)), l, st)
		}
		if err != nil {
			return &httpError{code: http.StatusForbidden, msg: "forbidden: a " + string(q.role) +
				" may send only the emergency stops M112, M108 and M410", err: s.refused(q, line, err)}
		}
	}
	return nil
}

// policyRole is the policy's name for an enroll role.
func policyRole(r string) policy.Role { return policy.Role(r) }

// sendLines sends lines to q's printer as q's caller. Lines whose meaning does not depend on
// a G91 earlier in the same batch are all checked before the first is sent, so that a
// refusal there changes nothing; every line is checked again right before it is sent
// (relative moves can only be judged once the G91 is queued). If a refusal stops a batch
// after it switched to relative positioning, G90 is sent to restore absolute mode.
func (s actions) sendLines(ctx context.Context, q *request, lines []string) error {
	p := q.p
	role := policyRole(string(q.role))
	st := p.Printer.Status()
	if !operational(st.State) {
		return errorf(http.StatusConflict, "printer is not operational (%s)", st.State)
	}
	relative := false
	for _, line := range lines {
		l, err := policy.Parse(line)
		if err != nil {
			return s.refused(q, line, err)
		}
		switch l.Word {
		case "G91":
			relative = true
		case "G90":
			relative = false
		}
		if relative && l.Word != "G91" {
			continue
		}
		if err := p.Policy.CheckAs(role, l, st); err != nil {
			return s.refused(q, line, err)
		}
	}
	sentRelative := false
	for i, line := range lines {
		l, err := p.Policy.CheckLine(role, line, p.Printer.Status())
		if err == nil {
			err = p.Printer.Send(ctx, l.Raw)
		}
		if err != nil {
			if sentRelative {
				if rerr := p.Printer.Send(ctx, "G90"); rerr != nil {
					s.errorf("printerd: %s: restore G90: %v", p.name, rerr)
				}
			}
			if errors.Is(err, policy.ErrRefused) {
				return s.refused(q, line, fmt.Errorf("line %d of %d: %w", i+1, len(lines), err))
			}
			return conflict(fmt.Errorf("send %q: %w", clip(line, 80), err))
		}
		switch l.Word {
		case "G91":
			sentRelative = true
		case "G90":
			sentRelative = false
		}
	}
	return nil
}

// fmtNum formats a number for G-code: plain decimal, never an exponent.
func fmtNum(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// heaterLine builds the line that sets heater ("tool<n>", "bed" or "chamber") to target °C.
func heaterLine(heater string, target float64, extruders int) (string, error) {
	if !(target >= 0 && target < 1000) {
		return "", errorf(http.StatusBadRequest, "bad target temperature for %s", clip(heater, 20))
	}
	switch {
	case heater == "bed":
		return "M140 S" + fmtNum(target), nil
	case heater == "chamber":
		return "M141 S" + fmtNum(target), nil
	case strings.HasPrefix(heater, "tool"):
		n, err := strconv.Atoi(heater[4:])
		if err != nil || n < 0 || n > 15 || strconv.Itoa(n) != heater[4:] {
			return "", errorf(http.StatusBadRequest, "bad heater name %q", clip(heater, 20))
		}
		if extruders <= 1 && n == 0 {
			return "M104 S" + fmtNum(target), nil
		}
		return fmt.Sprintf("M104 T%d S%s", n, fmtNum(target)), nil
	}
	return "", errorf(http.StatusBadRequest, "bad heater name %q", clip(heater, 20))
}

// setTargets sets heater targets, all checked before any is sent.
func (s actions) setTargets(ctx context.Context, q *request, targets map[string]float64) error {
	var lines []string
	ext := q.p.Policy.Limits().Extruders
	for _, h := range sortedKeys(targets) {
		l, err := heaterLine(h, targets[h], ext)
		if err != nil {
			return err
		}
		lines = append(lines, l)
	}
	if len(lines) == 0 {
		return errorf(http.StatusBadRequest, "no targets given")
	}
	return s.sendAudited(ctx, q, "temperature", map[string]string{"lines": strings.Join(lines, "; ")}, lines)
}

// jog moves the head relative to where it is, inside the volume the policy allows.
func (s actions) jog(ctx context.Context, q *request, x, y, z, feed float64) error {
	move := "G1"
	for i, v := range []float64{x, y, z} {
		if v != 0 {
			move += " " + string("XYZ"[i]) + fmtNum(v)
		}
	}
	if move == "G1" {
		return errorf(http.StatusBadRequest, "jog: no axis to move")
	}
	if feed > 0 {
		move += " F" + fmtNum(feed)
	}
	return s.sendAudited(ctx, q, "move", map[string]string{"line": move}, []string{"G91", move, "G90"})
}

// home homes the given axes ("x", "y", "z"); none means all.
func (s actions) home(ctx context.Context, q *request, axes []string) error {
	line := "G28"
	seen := map[string]bool{}
	for _, a := range axes {
		a = strings.ToUpper(a)
		if (a != "X" && a != "Y" && a != "Z") || seen[a] {
			return errorf(http.StatusBadRequest, "home: bad axis %q", clip(a, 10))
		}
		seen[a] = true
		line += " " + a
	}
	return s.sendAudited(ctx, q, "move", map[string]string{"line": line}, []string{line})
}

// terminal sends admin-typed lines (each still through the policy).
func (s actions) terminal(ctx context.Context, q *request, lines []string) error {
	for _, l := range lines {
		if len(l) > 4096 {
			return errorf(http.StatusBadRequest, "command line too long")
		}
	}
	return s.sendAudited(ctx, q, audit.ActionTerminal, map[string]string{"lines": clip(strings.Join(lines, "; "), 500)}, lines)
}

// selectFile makes path the selected file (OctoPrint's select).
func (s actions) selectFile(q *request, path string) error {
	fi, err := q.p.Files.Stat(path)
	if err != nil {
		return err
	}
	if fi.Folder {
		return errorf(http.StatusUnsupportedMediaType, "cannot select a folder")
	}
	p := q.p
	if jobActive(p.Printer.Status().State) {
		return errorf(http.StatusConflict, "printer is busy with a job")
	}
	p.mu.Lock()
	p.mu.selected = path
	p.mu.Unlock()
	return nil
}

// startFile prints path from its beginning.
func (s actions) startFile(ctx context.Context, q *request, path string) error {
	return s.act(q, audit.ActionStart, map[string]string{"file": path}, func() error { return s.startFileLocked(ctx, q, path) })
}

func (s actions) startFileLocked(ctx context.Context, q *request, path string) error {
	p := q.p
	if st := p.Printer.Status(); st.State != marlin.Operational {
		return errorf(http.StatusConflict, "printer is not ready to print (%s)", st.State)
	}
	f, err := p.Files.Open(path)
	if err != nil {
		return err
	}
	if err := p.Printer.Start(ctx, path, f, f.Size()); err != nil {
		f.Close()
		if errors.Is(err, policy.ErrRefused) {
			return s.refused(q, path, err)
		}
		return conflict(fmt.Errorf("start %s: %w", path, err))
	}
	p.mu.Lock()
	if p.mu.job != nil {
		p.mu.job.Close()
	}
	p.mu.job, p.mu.jobPath, p.mu.selected = f, path, path
	p.mu.Unlock()
	return nil
}

// inUse reports whether path is the file of the running job.
func (p *printer) inUse(path string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.jobPath == path && jobActive(p.Printer.Status().State)
}

// jobAction applies OctoPrint's job commands and the UI's: start, restart, cancel, pause,
// resume, toggle.
func (s actions) jobAction(ctx context.Context, q *request, action string) error {
	p := q.p
	st := p.Printer.Status().State
	var auditAction string
	var do func() error
	switch action {
	case "start":
		p.mu.Lock()
		sel := p.mu.selected
		p.mu.Unlock()
		if jobActive(st) {
			return errorf(http.StatusConflict, "a job is already running")
		}
		if sel == "" {
			return errorf(http.StatusConflict, "no file selected")
		}
		return s.startFile(ctx, q, sel)
	case "restart":
		if st != marlin.Paused {
			return errorf(http.StatusConflict, "restart needs a paused job")
		}
		p.mu.Lock()
		path := p.mu.jobPath
		p.mu.Unlock()
		err := s.act(q, audit.ActionCancel, map[string]string{"for": "restart"}, func() error {
			if err := p.Printer.Cancel(); err != nil {
				return conflict(err)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if err := waitState(ctx, p.Printer, marlin.Operational, 60*time.Second); err != nil {
			return conflict(fmt.Errorf("restart: %w", err))
		}
		return s.startFile(ctx, q, path)
	case "cancel":
		if !jobActive(st) || st == marlin.Cancelling {
			return errorf(http.StatusConflict, "no job to cancel")
		}
		auditAction, do = audit.ActionCancel, p.Printer.Cancel
	case "toggle":
		switch st {
		case marlin.Printing:
			return s.jobAction(ctx, q, "pause")
		case marlin.Paused:
			return s.jobAction(ctx, q, "resume")
		}
		return errorf(http.StatusConflict, "no job to pause or resume")
	case "pause":
		if st != marlin.Printing {
			return errorf(http.StatusConflict, "no printing job to pause")
		}
		auditAction, do = audit.ActionPause, p.Printer.Pause
	case "resume":
		if st != marlin.Paused && st != marlin.Pausing { // a pause during heat-up may still be parking
			return errorf(http.StatusConflict, "no paused job to resume")
		}
		auditAction, do = audit.ActionResume, p.Printer.Resume
	default:
		return errorf(http.StatusBadRequest, "unknown job action %q", clip(action, 20))
	}
	return s.act(q, auditAction, nil, func() error {
		if err := do(); err != nil {
			return conflict(err)
		}
		return nil
	})
}

// waitState polls until the printer reaches want.
func waitState(ctx context.Context, pr interface{ Status() marlin.Status }, want marlin.State, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		st := pr.Status().State
		if st == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("printer still %s", st)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// connection connects or disconnects the printer.
func (s actions) connection(q *request, action string) error {
	var do func() error
	switch action {
	case "connect":
		do = q.p.Printer.Connect
	case "disconnect":
		do = q.p.Printer.Disconnect
	case "fake_ack":
		return nil
	default:
		return errorf(http.StatusBadRequest, "unknown connection command %q", clip(action, 20))
	}
	return s.act(q, "connection", map[string]string{"command": action}, func() error {
		if err := do(); err != nil {
			return conflict(err)
		}
		return nil
	})
}

// emergency sends M112 ahead of everything. It is recorded after, never written ahead: a
// slow or full disk must not delay or block a stop.
func (s actions) emergency(q *request) error {
	err := q.p.Printer.Emergency()
	s.record(q, audit.ActionEmergency, nil, err)
	if err != nil {
		return conflict(err)
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
