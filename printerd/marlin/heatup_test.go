package marlin

import (
	"slices"
	"testing"
	"time"

	"github.com/printgate/printgate/printerd/marlinsim"
)

// heatupJob is the start of a sliced file: heat, wait for the bed and the hotend, home, print.
const heatupJob = `; start
M140 S60
M104 S200
M190 S60
M109 S200
G28
G90
G1 X10 Y10 F3000
G1 X20 Y10 E1
G1 X20 Y20 E2
G1 X10 Y20 E3
`

// jobOnly are the lines of heatupJob that must not run once it is cancelled during M190.
var jobOnly = []string{"M109 S200", "G28", "G1 X10 Y10 F3000", "G1 X20 Y10 E1", "G1 X20 Y20 E2", "G1 X10 Y20 E3"}

// execAfter returns the lines the simulator ran after the first n.
func execAfter(sim *marlinsim.Sim, n int) []string {
	var out []string
	for _, e := range sim.Record()[n:] {
		out = append(out, e.Line)
	}
	return out
}

// waitExec waits until the simulator has started running line and returns how many lines had
// run by then (the record's length).
func waitExec(t *testing.T, sim *marlinsim.Sim, line string) int {
	t.Helper()
	n := 0
	waitFor(t, line, func() bool {
		rec := sim.Record()
		n = len(rec)
		return slices.ContainsFunc(rec, func(e marlinsim.Exec) bool { return e.Line == line })
	})
	return n
}

// TestCancelDuringHeatup is issue 16's cancel during M190: the cancel ends the wait (M108),
// nothing of the job after the wait runs, and hotend, bed, fan and motors go off. With
// EMERGENCY_PARSER the firmware acts on M108 at once; without it, Marlin reads nothing
// during the wait, so the heaters go off when the wait ends by itself (and still nothing of
// the job runs after it). The latency is logged, not asserted.
func TestCancelDuringHeatup(t *testing.T) {
	for _, tc := range []struct {
		name      string
		emergency bool
		scale     float64
	}{
		{"emergency-parser", true, 1},
		{"no-emergency-parser", false, 0.1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sp := startSimPort(t, marlinsim.Config{EmergencyParser: tc.emergency, AdvancedOK: true,
				Baud: 250000, OKLatency: time.Millisecond, TimeScale: tc.scale})
			c := simController(t, sp, Config{})
			waitStateTB(t, c, Operational)
			startJob(t, c, heatupJob)
			mark := waitExec(t, sp.Sim, "M190 S60")
			start := time.Now()
			if err := c.Cancel(); err != nil {
				t.Fatalf("Cancel: %v", err)
			}
			j := waitJobEnd(t, c, 2*time.Minute)
			took := time.Since(start)
			if !j.Cancelled {
				t.Fatalf("job %+v, want cancelled", j)
			}
			waitStateTB(t, c, Operational)
			_, _, bedAt, _ := sp.Sim.Temps()
			waitFor(t, "heaters off", func() bool {
				_, ht, _, bt := sp.Sim.Temps()
				return ht == 0 && bt == 0
			})
			after := execAfter(sp.Sim, mark)
			for _, l := range after {
				if slices.Contains(jobOnly, l) {
					t.Errorf("after the cancel the job's %q ran (all: %q)", l, after)
				}
			}
			for _, want := range []string{"M104 T0 S0", "M140 S0", "M107", "M84"} {
				if !slices.Contains(after, want) {
					t.Errorf("after the cancel %q did not run (all: %q)", want, after)
				}
			}
			if tc.emergency && bedAt >= 59 {
				t.Errorf("bed at %.1f °C when the cancel was done: the M190 wait was not ended", bedAt)
			}
			t.Logf("cancel during M190 (emergency parser %v): cancelled after %v, bed at %.1f °C; then ran %q",
				tc.emergency, took.Round(time.Millisecond), bedAt, after)
		})
	}
}

// TestPauseDuringHeatup: a pause during M190 ends the wait and is Paused at once (with
// EMERGENCY_PARSER); the resume heats up again before the job goes on, and the job completes.
func TestPauseDuringHeatup(t *testing.T) {
	sp := startSimPort(t, marlinsim.Config{EmergencyParser: true, AdvancedOK: true,
		Baud: 250000, OKLatency: time.Millisecond, TimeScale: 0.25})
	c := simController(t, sp, Config{})
	waitStateTB(t, c, Operational)
	startJob(t, c, heatupJob)
	mark := waitExec(t, sp.Sim, "M190 S60")
	start := time.Now()
	if err := c.Pause(); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	waitStateTB(t, c, Paused)
	took := time.Since(start)
	_, _, bedAt, bedTarget := sp.Sim.Temps()
	if bedAt >= 59 {
		t.Errorf("bed at %.1f °C when Paused: the M190 wait was not ended", bedAt)
	}
	if bedTarget != 60 {
		t.Errorf("bed target %v while paused, want 60 (a pause keeps the heaters on)", bedTarget)
	}
	t.Logf("pause during M190: Paused after %v, bed at %.1f °C", took.Round(time.Millisecond), bedAt)
	if err := c.Resume(); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	j := waitJobEnd(t, c, 2*time.Minute)
	if !j.Done {
		t.Fatalf("job %+v, want done", j)
	}
	after := execAfter(sp.Sim, mark)
	again, home := slices.Index(after, "M190 S60"), slices.Index(after, "G28")
	if again < 0 || home < 0 || again > home {
		t.Errorf("after the resume: %q, want M190 S60 again before G28", after)
	}
	var job []string
	for _, l := range after {
		if slices.Contains(jobOnly, l) {
			job = append(job, l)
		}
	}
	if !slices.Equal(job, jobOnly) {
		t.Errorf("the job's lines after the resume: %q, want %q once each", job, jobOnly)
	}
}
