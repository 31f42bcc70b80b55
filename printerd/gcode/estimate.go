package gcode

import (
	"strconv"
	"strings"
	"time"
)

// ParseEstimate reads a slicer's total print time estimate from one comment line:
//
//	PrusaSlicer, OrcaSlicer: "; estimated printing time (normal mode) = 1d 2h 3m 4s"
//	OrcaSlicer, Bambu:       "; total estimated time: 1h 5m 3s"
//	Cura:                    ";TIME:723" (seconds)
//
// ok is false for any other line, including PrusaSlicer's "(silent mode)" estimate.
func ParseEstimate(line string) (d time.Duration, ok bool) {
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

// parseDHMS parses "1d 2h 3m 4s" (any subset).
func parseDHMS(s string) (time.Duration, bool) {
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return 0, false
	}
	var total time.Duration
	for _, f := range fields {
		if len(f) < 2 {
			return 0, false
		}
		n, err := strconv.Atoi(f[:len(f)-1])
		if err != nil || n < 0 || n > 100000 {
			return 0, false
		}
		var unit time.Duration
		switch f[len(f)-1] {
		case 'd':
			unit = 24 * time.Hour
		case 'h':
			unit = time.Hour
		case 'm':
			unit = time.Minute
		case 's':
			unit = time.Second
		default:
			return 0, false
		}
		total += time.Duration(n) * unit
	}
	return total, true
}
