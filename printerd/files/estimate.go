package files

import (
	"time"

	"github.com/printgate/printgate/printerd/gcode"
)

// estimator is an io.Writer that watches G-code comments for the slicer's print time
// (gcode.ParseEstimate). The last estimate seen wins. Lines longer than 160 bytes are ignored.
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
				if d, ok := gcode.ParseEstimate(string(e.line)); ok {
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
