package marlin

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/printgate/printgate/printerd/gcode"
	"github.com/printgate/printgate/printerd/marlinsim"
)

func TestDwellMillis(t *testing.T) {
	for _, tc := range []struct {
		line string
		ms   int64
		ok   bool
	}{
		{"G4 S60", 60000, true},
		{"G4 P60000", 60000, true},
		{"G4 P1500.9", 1500, true}, // strtoul
		{"G4 S1.1", 1100, true},
		{"G4 S0.3", 300, true},
		{"G4 S2 P500", 2000, true}, // S wins
		{"G4 P500 S2", 2000, true},
		{"G4", 0, true},
		{"G4 P", 0, true}, // no value: not seen
		{"G4 S-5", 0, false},
		{"G4 P1e4", 1, true},    // 'e' starts a parameter of its own
		{"G4 S1e3", 1000, true}, // as Marlin's value_float() cuts at 'E'
		{"G4 P+5", 0, false},
		{"G4 P9999999999", 0, false},
		{"G1 X5", 0, false},
	} {
		l, err := gcode.Parse(tc.line)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.line, err)
		}
		if ms, ok := dwellMillis(l); ms != tc.ms || ok != tc.ok {
			t.Errorf("dwellMillis(%q) = %d, %v, want %d, %v", tc.line, ms, ok, tc.ms, tc.ok)
		}
	}
}

// dwellJob has long dwells in several spellings between moves; dwellJobRuns is what the
// firmware must run for it: each dwell over dwellPiece in pieces of at most that.
const dwellJob = `; dwells
G1 X10 Y10 F3000
G4 S2.2 ; wait
G1 X20 Y10 E1
G4 P500
G4 P1501

G1 X20 Y20 E2
G4 S0.3
G4 P1200 S1
G1 X10 Y20 E3
G4 S1.5`

var dwellJobRuns = []string{
	"G1 X10 Y10 F3000", "G4 P500", "G4 P500", "G4 P500", "G4 P500", "G4 P200",
	"G1 X20 Y10 E1", "G4 P500", "G4 P500", "G4 P500", "G4 P500", "G4 P1",
	"G1 X20 Y20 E2", "G4 S0.3", "G4 P500", "G4 P500",
	"G1 X10 Y20 E3", "G4 P500", "G4 P500", "G4 P500",
}

// jobRuns filters a record down to the job's moves and dwells.
func jobRuns(rec []marlinsim.Exec) []string {
	var out []string
	for _, e := range rec {
		if strings.HasPrefix(e.Line, "G1 ") || strings.HasPrefix(e.Line, "G4") {
			out = append(out, e.Line)
		}
	}
	return out
}

// dwellMS is the dwell of a "G4 P<ms>" or "G4 S<s>" line the simulator ran.
func dwellMS(t *testing.T, line string) int64 {
	t.Helper()
	l, err := gcode.Parse(line)
	if err != nil {
		t.Fatalf("Parse(%q): %v", line, err)
	}
	ms, ok := dwellMillis(l)
	if !ok {
		t.Fatalf("dwellMillis(%q) not ok", line)
	}
	return ms
}

// TestDwellPieces: a job's dwells over dwellPiece reach the firmware as pieces of at most that
// adding up to the same dwell, numbered and checksummed like any line (with noise on
// the wire, so some pieces are resent), and the job's progress counts each G4 of the file
// once: the job ends Done with every command counted and the whole file acknowledged.
func TestDwellPieces(t *testing.T) {
	for _, adv := range []bool{false, true} {
		t.Run(fmt.Sprintf("advanced-ok=%v", adv), func(t *testing.T) {
			sp := startSimPort(t, marlinsim.Config{AdvancedOK: adv, Baud: 250000,
				OKLatency: time.Millisecond, TimeScale: 0.01, Noise: 0.05, Seed: 7})
			c := simController(t, sp, Config{})
			waitStateTB(t, c, Operational)
			startJob(t, c, dwellJob)
			j := waitJobEnd(t, c, 2*time.Minute)
			if !j.Done {
				t.Fatalf("job %+v, want done", j)
			}
			if got := jobRuns(sp.Sim.Record()); !slices.Equal(got, dwellJobRuns) {
				t.Errorf("the firmware ran %q, want %q", got, dwellJobRuns)
			}
			if j.Lines != 10 || j.Pos != int64(len(dwellJob)) {
				t.Errorf("job lines %d, pos %d; want 10 commands and the whole file (%d bytes)", j.Lines, j.Pos, len(dwellJob))
			}
			t.Logf("noise: %+v", sp.Sim.Stats())
		})
	}
}

// dwellCancelJob dwells for a minute between two moves.
const dwellCancelJob = "G1 X10 Y10 F3000\nG4 S60\nG1 X20 Y20 F3000\n"

// waitDwellPieces waits until the simulator has started n pieces of a dwell.
func waitDwellPieces(t *testing.T, sim *marlinsim.Sim, n int) {
	t.Helper()
	waitFor(t, strconv.Itoa(n)+" dwell pieces", func() bool {
		k := 0
		for _, e := range sim.Record() {
			if strings.HasPrefix(e.Line, "G4") {
				k++
			}
		}
		return k >= n
	})
}

// TestCancelDuringDwell is issue 16's cancel during a long G4, which Marlin cannot break (M108
// does not end a dwell): the job's G4 S60 goes out in pieces of half a second, so after the cancel
// at most the piece in flight runs, then the heaters, fan and motors go off and nothing of the
// job after the dwell runs. In real time; the latency is logged, not asserted.
func TestCancelDuringDwell(t *testing.T) {
	for _, adv := range []bool{false, true} {
		t.Run(fmt.Sprintf("advanced-ok=%v", adv), func(t *testing.T) {
			sp := startSimPort(t, marlinsim.Config{EmergencyParser: true, AdvancedOK: adv,
				Baud: 250000, OKLatency: time.Millisecond, TimeScale: 1})
			c := simController(t, sp, Config{})
			waitStateTB(t, c, Operational)
			startJob(t, c, dwellCancelJob)
			waitDwellPieces(t, sp.Sim, 3)
			start := time.Now()
			if err := c.Cancel(); err != nil {
				t.Fatalf("Cancel: %v", err)
			}
			mark := len(sp.Sim.Record())
			j := waitJobEnd(t, c, 2*time.Minute)
			took := time.Since(start)
			if !j.Cancelled {
				t.Fatalf("job %+v, want cancelled", j)
			}
			after := execAfter(sp.Sim, mark)
			pieces := 0
			for _, l := range after {
				if strings.HasPrefix(l, "G4") {
					pieces++
				}
				if l == "G1 X20 Y20 F3000" {
					t.Errorf("after the cancel the job's %q ran (all: %q)", l, after)
				}
			}
			if pieces > 1 {
				t.Errorf("after the cancel %d dwell pieces started, want at most the one in flight (all: %q)", pieces, after)
			}
			for _, want := range []string{"M104 T0 S0", "M140 S0", "M107", "M84"} {
				if !slices.Contains(after, want) {
					t.Errorf("after the cancel %q did not run (all: %q)", want, after)
				}
			}
			for _, l := range jobRuns(sp.Sim.Record()) {
				if strings.HasPrefix(l, "G4") && dwellMS(t, l) > dwellPiece {
					t.Errorf("the firmware ran %q: a dwell longer than a piece", l)
				}
			}
			off := time.Duration(-1)
			for _, e := range sp.Sim.Record()[mark:] {
				if e.Line == "M104 T0 S0" {
					off = e.Time.Sub(start)
				}
			}
			t.Logf("cancel 3 pieces into G4 S60 (advanced ok %v): heaters off after %v, cancelled (script done) after %v; then ran %q",
				adv, off.Round(time.Millisecond), took.Round(time.Millisecond), after)
		})
	}
}

// TestPauseDuringDwell: a pause during a long G4 holds after the piece in flight (no piece
// starts while Paused), and the resume runs the rest of the dwell, so the pieces add up to
// the file's dwell, before the job's next move.
func TestPauseDuringDwell(t *testing.T) {
	const job = "G1 X10 Y10 F3000\nG4 S20\nG1 X20 Y20 F3000\n"
	sp := startSimPort(t, marlinsim.Config{EmergencyParser: true, Baud: 250000,
		OKLatency: time.Millisecond, TimeScale: 0.1})
	c := simController(t, sp, Config{})
	waitStateTB(t, c, Operational)
	startJob(t, c, job)
	waitDwellPieces(t, sp.Sim, 3)
	start := time.Now()
	if err := c.Pause(); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	mark := len(sp.Sim.Record())
	waitStateTB(t, c, Paused)
	t.Logf("pause 3 pieces into G4 S20 (at a tenth of real time): Paused after %v", time.Since(start).Round(time.Millisecond))
	// The pause script has run by now; a piece written after it would show in the record
	// before the resume's lines.
	paused := execAfter(sp.Sim, mark)
	if err := c.Resume(); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	j := waitJobEnd(t, c, 2*time.Minute)
	if !j.Done {
		t.Fatalf("job %+v, want done", j)
	}
	pieces := 0
	for _, l := range paused {
		if strings.HasPrefix(l, "G4") {
			pieces++
		}
	}
	if pieces > 1 {
		t.Errorf("after the pause %d dwell pieces started, want at most the one in flight (all: %q)", pieces, paused)
	}
	var total int64
	runs := jobRuns(sp.Sim.Record())
	for _, l := range runs {
		if strings.HasPrefix(l, "G4") {
			total += dwellMS(t, l)
		}
	}
	if total != 20000 {
		t.Errorf("the dwell pieces add up to %d ms, want 20000 (ran %q)", total, runs)
	}
	if last := runs[len(runs)-1]; last != "G1 X20 Y20 F3000" {
		t.Errorf("the job's last move ran before the end of the dwell: %q", runs)
	}
	if j.Lines != 3 || j.Pos != int64(len(job)) {
		t.Errorf("job lines %d, pos %d; want 3 and %d", j.Lines, j.Pos, len(job))
	}
}
