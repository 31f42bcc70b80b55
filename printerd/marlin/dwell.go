package marlin

import (
	"strconv"
	"strings"

	"github.com/printgate/printgate/printerd/gcode"
)

// This file splits a job's long dwells, so that a cancel or a pause is not stuck behind one.

// dwellPiece is the longest dwell, in ms, that a job's G4 is written as. Marlin's G4 ends
// only when its time is up (dwell() loops on millis(); M108 clears wait_for_heatup and
// wait_for_user, which a dwell never reads), so a longer G4 goes out as consecutive
// "G4 P<ms>" of at most this, adding up to the same dwell, and a cancel or pause takes
// effect between two of them: within half a second, leaving the other half of the second a
// cancel is given for its script. Each piece adds an ok's round trip to the dwell (3 ms on
// the simulator with 1 ms latency, 18 ms behind a 16 ms USB-serial latency timer).
const dwellPiece = 500

// nextDwellPiece returns the next piece of a G4 being split. Only the last piece stands for
// the file's line: its ack moves the job's position past the G4 and counts it once.
func (j *job) nextDwellPiece() *sent {
	ms := min(j.dwellLeft, dwellPiece)
	j.dwellLeft -= ms
	return &sent{text: "G4 P" + strconv.FormatInt(ms, 10), kind: kJob, off: j.dwellOff, piece: j.dwellLeft > 0}
}

// dwellMillis is the dwell of a G4 line in ms as Marlin's G4() computes it: P is whole
// milliseconds (strtoul), S is seconds (a float times 1000, truncated), and S wins when both
// are given; a letter without a value is not seen. ok is false for anything but G4 and for a
// value Marlin would read differently from a plain decimal (a sign, an exponent, text), so
// such a line is written as it is.
func dwellMillis(l gcode.Line) (ms int64, ok bool) {
	if l.Word != "G4" {
		return 0, false
	}
	if v, seen := l.Param('P'); seen && v != "" {
		whole, _, _ := strings.Cut(v, ".")
		if !plainDecimal(v) || whole == "" || len(whole) > 9 {
			return 0, false
		}
		ms, _ = strconv.ParseInt(whole, 10, 64)
	}
	if v, seen := l.Param('S'); seen && v != "" {
		f, err := strconv.ParseFloat(v, 32)
		if !plainDecimal(v) || err != nil || f > 1e6 {
			return 0, false
		}
		ms = int64(float32(f) * 1000) // value_float() is a float; SEC_TO_MS casts the product
	}
	return ms, true
}

// plainDecimal reports whether s is digits with at most one '.', and at least one digit.
func plainDecimal(s string) bool {
	digits, dots := 0, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '.':
			dots++
		default:
			return false
		}
	}
	return digits > 0 && dots <= 1
}
