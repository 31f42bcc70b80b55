package policy

import (
	"errors"
	"strings"

	"github.com/printgate/printgate/printerd/gcode"
	"github.com/printgate/printgate/printerd/marlin"
)

// MaxFileLineBytes is the longest physical line, comments included, a stored file may hold.
// Slicers write long configuration comments; commands themselves are capped at MaxCommandBytes.
const MaxFileLineBytes = 64 << 10

// Parse turns one line of outside text (terminal, API, file) into a command. It is stricter
// than gcode.Parse where Marlin's stream parser differs: control characters are refused
// anywhere, even inside a comment (Marlin ends a line at '\r' or '\n' wherever it is);
// non-ASCII bytes and backslashes are refused outside ';' comments; "!!" debug lines are
// refused. One trailing "\n", "\r\n" or "\r" is dropped.
//
// One command per line: M112, M108 and M410 are never refused for a role or state, but a line
// that holds one of them and anything more than a comment is refused (rule one-command), as
// is any control character: "M108 M104 S400" or "M410\rM997" is never sent, neither whole nor
// cut down to the stop. An allowed emergency line parses to the bare command.
func Parse(text string) (gcode.Line, error) {
	text = strings.TrimSuffix(text, "\n")
	text = strings.TrimSuffix(text, "\r")
	if strings.HasPrefix(strings.TrimLeft(text, " \t"), "!!") {
		return gcode.Line{}, refuse(RuleDebug, "", "!! debug commands are not for remote use")
	}
	for i := 0; i < len(text); i++ {
		if c := text[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return gcode.Line{}, refuse(RuleBadChar, "", "byte %d is a control character %q", i, c)
		}
	}
	cmd := text
	if i := strings.IndexByte(cmd, ';'); i >= 0 {
		cmd = cmd[:i]
	}
	for i := 0; i < len(cmd); i++ {
		if c := cmd[i]; c >= 0x80 || c == '\\' {
			return gcode.Line{}, refuse(RuleBadChar, "", "byte %d is %q: non-ASCII and escape characters are refused outside comments", i, c)
		}
	}
	if w, rest, ok := emergencyPrefix(cmd); ok {
		if strings.TrimSpace(rest) != "" {
			return gcode.Line{}, refuse(RuleOneCommand, "", "%s must be alone on its line; found %q after it", w, clipText(rest))
		}
		return gcode.Line{Raw: w, Word: w}, nil
	}
	l, err := gcode.Parse(cmd)
	if err != nil {
		return gcode.Line{}, refuse(RuleMalformed, "", "%v", err)
	}
	if emergency(l.Word) {
		if r := alone(l); r != nil {
			return gcode.Line{}, r
		}
		return gcode.Line{Raw: l.Word, Word: l.Word}, nil // "M0112", "N5 M112*cs": send it bare
	}
	return l, nil
}

// alone refuses an emergency line that carries parameters or text: one command per line.
func alone(l gcode.Line) *Refusal {
	if len(l.Params) > 0 || l.Text != "" {
		return refuse(RuleOneCommand, l.Raw, "%s must be alone on its line", l.Word)
	}
	return nil
}

func clipText(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// emergencyPrefix recognises M112, M108 and M410 at the start of a line, any case, with
// leading spaces, and not followed by a digit or '.'; rest is what follows the word.
func emergencyPrefix(text string) (w, rest string, ok bool) {
	t := strings.TrimLeft(text, " \t")
	if len(t) < 4 || (t[0] != 'M' && t[0] != 'm') {
		return "", "", false
	}
	w = "M" + t[1:4]
	if !emergency(w) {
		return "", "", false
	}
	if len(t) > 4 && (t[4] >= '0' && t[4] <= '9' || t[4] == '.') {
		return "", "", false
	}
	return w, t[4:], true
}

// jobStatus is the state a stored file's lines are checked in: they are sent while printing.
var jobStatus = marlin.Status{State: marlin.Printing}

// FileLine checks line n (1-based) of a stored file, as at upload. A refusal carries n.
func (p *Policy) FileLine(n int, text string) error {
	l, err := Parse(text)
	if err == nil {
		err = p.CheckAs(Job, l, jobStatus)
	}
	var r *Refusal
	if errors.As(err, &r) {
		r.Line = n
	}
	return err
}
