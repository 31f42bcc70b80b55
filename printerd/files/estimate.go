package files

import (
	"strconv"
	"strings"
	"time"
)

// estimator is an io.Writer that watches G-code comments for the slicer's print time:
//
//	PrusaSlicer, OrcaSlicer: "; estimated printing time (normal mode) = 1d 2h 3m 4s"
//	OrcaSlicer, Bambu:       "; total estimated time: 1h 5m 3s"
//	Cura:                    ";TIME:723" (seconds)
//
// The last estimate seen wins. Lines longer than 160 bytes are ignored.
type estimator struct {
	line []byte
	long bool
	est  time.Duration
}

const estimatorLine = 160

func (e *estimator) Write(p []byte) (int, error) {
	for _, b := range p {
		if b == '\n' {
			if !e.long {
				if d, ok := parseEstimate(string(e.line)); ok {
					e.est = d
				}
			}
			e.line, e.long = e.line[:0], false
			continue
		}
		if len(e.line) >= estimatorLine {
			e.long = true
			continue
		}
		e.line = append(e.line, b)
	}
	return len(p), nil
}

func (e *estimator) estimate() time.Duration {
	e.Write([]byte{'\n'}) // a last line without newline
	return e.est
}

// parseEstimate recognises one comment line.
func parseEstimate(line string) (time.Duration, bool) {
	line = strings.TrimSpace(strings.TrimSuffix(line, "\r"))
	if !strings.HasPrefix(line, ";") {
		return 0, false
	}
	c := strings.TrimSpace(line[1:])
	if v, ok := strings.CutPrefix(c, "TIME:"); ok {
		n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || n < 0 || n > 1e8 {
			return 0, false
		}
		return time.Duration(n * float64(time.Second)), true
	}
	for _, prefix := range []string{"estimated printing time (normal mode) =", "total estimated time:"} {
		if v, ok := strings.CutPrefix(c, prefix); ok {
			if i := strings.IndexByte(v, ';'); i >= 0 {
				v = v[:i]
			}
			return parseDHMS(v)
		}
	}
	return 0, false
}

// parseDHMS parses "1d 2h 3m 4s" (any subset, in order).
func parseDHMS(s string) (time.Duration, bool) {
	var total time.Duration
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return 0, false
	}
	for _, f := range fields {
		if len(f) < 2 {
			return 0, false
		}
		n, err := strconv.Atoi(f[:len(f)-1])
		if err != nil || n < 0 || n > 100000 {
			return 0, false
		}
		unit := map[byte]time.Duration{'d': 24 * time.Hour, 'h': time.Hour, 'm': time.Minute, 's': time.Second}[f[len(f)-1]]
		if unit == 0 {
			return 0, false
		}
		total += time.Duration(n) * unit
	}
	return total, true
}
