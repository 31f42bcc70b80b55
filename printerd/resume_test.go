package printerd

import (
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/printgate/printgate/printerd/marlin"
)

// pausingPrinter is a printer still parking the head after a pause (Pausing), as during a
// pause in heat-up; it records a Resume.
type pausingPrinter struct {
	*fakePrinter
	resumed atomic.Bool
}

func (p *pausingPrinter) Status() marlin.Status {
	st := p.fakePrinter.Status()
	st.State = marlin.Pausing
	return st
}

func (p *pausingPrinter) Resume() error { p.resumed.Store(true); return nil }

// TestResumeWhilePausing: a resume asked while the pause is still parking (issue 16: a pause
// during heat-up, then a resume, got 409) is passed to the printer.
func TestResumeWhilePausing(t *testing.T) {
	var pp *pausingPrinter
	h := newHarness(t, func(c *Config) {
		pc := c.Printers["mk3"]
		pp = &pausingPrinter{fakePrinter: pc.Printer.(*fakePrinter)}
		pc.Printer = pp
		c.Printers["mk3"] = pc
	})
	w := h.do(req{method: "POST", target: "/api/job", from: operatorAddr, body: `{"command":"pause","action":"resume"}`})
	if w.Code != http.StatusNoContent || !pp.resumed.Load() {
		t.Errorf("resume while pausing = %d (resumed %v), want 204 and a Resume", w.Code, pp.resumed.Load())
	}
}
