package files

import (
	"bytes"
	"time"

	"github.com/printgate/printgate/printerd/gcode"
)

// estimator is an io.Writer that watches G-code comments for the slicer's print time
// (gcode.ParseEstimate). The last estimate seen wins. Lines longer than 160 bytes are ignored.
//
// It looks at a line only when it could be an estimate: it holds a ';' (found by a scan over
// many lines at once), its first byte that is not a space or tab is that ';' (or something
// ParseEstimate's trimming might skip), and so is, after the ';' and blanks, a 'T', 'e' or 't'.
type estimator struct {
	line []byte // the start of a line that continues in the next Write
	long bool   // that line is already longer than estimatorLine
	est  time.Duration
}

const estimatorLine = 160

func (e *estimator) Write(p []byte) (int, error) {
	n := len(p)
	if len(e.line) > 0 || e.long {
		// Finish the line the last Write left open.
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			e.keep(p)
			return n, nil
		}
		e.keep(p[:i])
		e.end(e.line)
		e.line, e.long = e.line[:0], false
		p = p[i+1:]
	}
	// p starts at a line start. Only lines with a ';' can hold an estimate: jump from one
	// ';' to the next, and look at the whole line around it.
	for len(p) > 0 {
		k := bytes.IndexByte(p, ';')
		if k < 0 {
			e.keep(p[bytes.LastIndexByte(p, '\n')+1:]) // a ';' may follow in the next Write
			break
		}
		start := bytes.LastIndexByte(p[:k], '\n') + 1
		end := bytes.IndexByte(p[k:], '\n')
		if end < 0 {
			e.keep(p[start:])
			break
		}
		e.end(p[start : k+end])
		p = p[k+end+1:]
	}
	return n, nil
}

func (e *estimator) keep(b []byte) {
	if e.long || len(e.line)+len(b) > estimatorLine {
		e.long = true
		return
	}
	e.line = append(e.line, b...)
}

// end looks at one finished line.
func (e *estimator) end(l []byte) {
	if e.long || len(l) > estimatorLine || !maybeEstimate(l) {
		return
	}
	if d, ok := gcode.ParseEstimate(string(l)); ok {
		e.est = d
	}
}

// maybeEstimate is a quick filter ahead of gcode.ParseEstimate: false only for lines it
// would not read as an estimate.
func maybeEstimate(l []byte) bool {
	i := 0
	for i < len(l) && (l[i] == ' ' || l[i] == '\t') {
		i++
	}
	if i == len(l) {
		return false
	}
	if c := l[i]; c != ';' {
		return c < 0x20 || c >= 0x80 // other white space ParseEstimate trims
	}
	for i++; i < len(l) && (l[i] == ' ' || l[i] == '\t'); i++ {
	}
	if i == len(l) {
		return false
	}
	switch c := l[i]; {
	case c == 'T', c == 'e', c == 't', c < 0x20, c >= 0x80:
		return true
	}
	return false
}

func (e *estimator) estimate() time.Duration {
	e.Write([]byte{'\n'}) // a last line without newline
	return e.est
}
