package printerd

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/printgate/printgate/printerd/audit"
	"github.com/printgate/printgate/printerd/policy"
)

// Write-ahead records of the printer and file actions (audit.Begin): every action a caller
// takes on a printer, its files or the roster is recorded before it is applied:
//
//	1. begin writes the intent, fsynced; if that fails the action is refused (507) and
//	   nothing is changed;
//	2. the action is applied;
//	3. end writes its outcome.
//
// A crash between 1 and 3 leaves an intent without an outcome (`printgate audit verify`
// lists it), never an action without a record.
//
// Emergency stops (M112, M108, M410, the emergency endpoint) are the exception: they are sent
// first and recorded after, so that a slow or full disk never delays or blocks them; a record
// that cannot be written is logged at the error level. A batch that mixes stops with other
// lines is written ahead like any other; if its intent cannot be written, only its stops are
// sent.

// begin writes the intent of q's action to the audit log before it is applied: when that
// fails the action must not be applied, and the error is 507. With no audit log configured it
// records nothing and returns a nil intent.
func (s actions) begin(q *request, action string, args map[string]string) (*audit.Intent, error) {
	if s.cfg.Audit == nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rec := audit.Record{Peer: q.caller.Name, Key: q.caller.PublicKey, Role: string(q.role), Action: action, Args: withPrinter(q, args)}
	in, err := audit.Begin(ctx, s.cfg.Audit, rec)
	if err != nil {
		s.errorf("printerd: %v", err)
		return nil, &httpError{code: http.StatusInsufficientStorage, err: err,
			msg: action + " refused: its audit record could not be written on the gateway's disk (is it full?); nothing was changed"}
	}
	return in, nil
}

// end records the outcome of a begun action; extra adds what the action produced.
func (s actions) end(in *audit.Intent, err error, extra map[string]string) {
	if in == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if aerr := in.End(ctx, err, extra); aerr != nil {
		s.errorf("printerd: audit outcome: %v (the intent is on record)", aerr)
	}
}

// act applies do as q's action, written ahead: do runs only once the intent is on disk.
func (s actions) act(q *request, action string, args map[string]string, do func() error) error {
	in, err := s.begin(q, action, args)
	if err != nil {
		return err
	}
	err = do()
	s.end(in, err, nil)
	return err
}

// sendAudited sends lines to q's printer (sendLines) as the action named action, written
// ahead. Stops alone are sent at once and recorded after; when the intent of any other batch
// cannot be written, the stops in it are still sent and the rest is refused (507).
func (s actions) sendAudited(ctx context.Context, q *request, action string, args map[string]string, lines []string) error {
	stops := stopLines(lines)
	if len(stops) == len(lines) {
		err := s.sendLines(ctx, q, lines)
		s.record(q, action, args, err)
		return err
	}
	in, err := s.begin(q, action, args)
	if err != nil {
		if len(stops) == 0 {
			return err
		}
		serr := s.sendLines(ctx, q, stops)
		s.errorf("printerd: %s: %s by %s: the audit intent could not be written; sent only its emergency stops %s (%v)",
			q.p.name, action, q.caller.Name, strings.Join(stops, ", "), serr)
		s.record(q, action, map[string]string{"lines": strings.Join(stops, "; "), "refused": "the rest of the batch: no audit record"}, serr)
		if serr != nil {
			return serr
		}
		return &httpError{code: http.StatusInsufficientStorage, err: err,
			msg: action + ": only the emergency stops (" + strings.Join(stops, ", ") + ") were sent; the rest was refused: its audit record could not be written on the gateway's disk (is it full?)"}
	}
	err = s.sendLines(ctx, q, lines)
	s.end(in, err, nil)
	return err
}

// stopLines are the emergency stops among lines (M112, M108, M410), as policy.Parse reads
// them: alone on their line.
func stopLines(lines []string) []string {
	var out []string
	for _, line := range lines {
		if isStop(line) {
			out = append(out, line)
		}
	}
	return out
}

// isStop reports whether line is an emergency stop alone on its line.
func isStop(line string) bool {
	l, err := policy.Parse(line)
	return err == nil && (l.Word == "M112" || l.Word == "M108" || l.Word == "M410")
}

// withPrinter returns args with q's printer added (a copy when it adds).
func withPrinter(q *request, args map[string]string) map[string]string {
	if q.p == nil {
		return args
	}
	out := make(map[string]string, len(args)+1)
	for k, v := range args {
		out[k] = v
	}
	out["printer"] = q.p.name
	return out
}

// describeArgs is args for a log line, sorted.
func describeArgs(args map[string]string) string {
	parts := make([]string, 0, len(args))
	for _, k := range sortedKeys(args) {
		parts = append(parts, k+"="+clip(args[k], 120))
	}
	return strings.Join(parts, " ")
}
