package marlin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/printgate/printgate/printerd/gcode"
)

func TestConnectSequence(t *testing.T) {
	for _, auto := range []bool{false, true} {
		t.Run(fmt.Sprintf("autoreport=%v", auto), func(t *testing.T) {
			r := newRig(t, Config{PollInterval: 100 * time.Millisecond}, func(f *fakeMarlin) { f.autoTemp = auto })
			r.waitState(Operational)
			want := []string{"N0 M110 N0*125", gcode.Number(1, "M104 T0 S0"), gcode.Number(2, "M140 S0"), gcode.Number(3, "M115")}
			waitFor(t, "connect lines", func() bool { rec, _ := r.fake(0).snapshot(); return len(rec) >= 4 })
			rec, _ := r.fake(0).snapshot()
			want = append(slices.Clone(firstBytes), want...)
			if len(rec) < len(want) || !slices.Equal(rec[:len(want)], want) {
				t.Fatalf("first lines = %q, want %q", rec, want)
			}
			st := r.c.Status()
			if !strings.HasPrefix(st.Firmware, "Marlin 2.1.3-fake") || !st.Caps["EEPROM"] || st.Caps["EMERGENCY_PARSER"] {
				t.Errorf("Status() firmware %q caps %v", st.Firmware, st.Caps)
			}
			if auto {
				waitFor(t, "M155", func() bool {
					_, ex := r.fake(0).snapshot()
					return slices.Contains(ex, "M155 S1") || slices.Contains(ex, "M155 S2")
				})
			} else {
				waitFor(t, "M105 polls and temperatures", func() bool {
					return len(r.c.History()) >= 2 && r.c.Status().Temps.Bed != nil
				})
			}
		})
	}
}

func TestJobStreams(t *testing.T) {
	const lines = 3000
	for _, tc := range []struct {
		advanced, resendOK bool
	}{{false, true}, {false, false}, {true, true}, {true, false}} {
		t.Run(fmt.Sprintf("advanced=%v/resendOK=%v", tc.advanced, tc.resendOK), func(t *testing.T) {
			r := newRig(t, Config{}, func(f *fakeMarlin) {
				f.advanced, f.resendOK, f.noise = tc.advanced, tc.resendOK, 0.02
			})
			r.waitState(Operational)
			text, want := genJob(lines)
			if err := r.c.Start(context.Background(), "job.gcode", strings.NewReader(text), int64(len(text))); err != nil {
				t.Fatalf("Start: %v", err)
			}
			waitFor(t, "job done", func() bool {
				j := r.c.Status().Job
				return j != nil && (j.Done || j.Failed != "")
			})
			st := r.c.Status()
			if !st.Job.Done || st.Job.Failed != "" {
				t.Fatalf("job = %+v, want done", st.Job)
			}
			if st.Job.Lines != int64(len(want)) || st.Job.Pos != int64(len(text)) {
				t.Errorf("job lines %d pos %d, want %d and %d", st.Job.Lines, st.Job.Pos, len(want), len(text))
			}
			if st.Job.Estimate != 120*time.Second {
				t.Errorf("job estimate %v, want 2m0s", st.Job.Estimate)
			}
			_, ex := r.fake(0).snapshot()
			if got := jobCommands(ex); !slices.Equal(got, want) {
				t.Fatalf("executed %d job commands, want %d in order (first difference at %d)", len(got), len(want), firstDiff(got, want))
			}
			if st.State != Operational {
				t.Errorf("state %s, want operational", st.State)
			}
		})
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestUnplugMidJob(t *testing.T) {
	r := newRig(t, Config{}, func(f *fakeMarlin) { f.delay = time.Millisecond })
	r.waitState(Operational)
	text, _ := genJob(100000)
	if err := r.c.Start(context.Background(), "job.gcode", strings.NewReader(text), int64(len(text))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "some progress", func() bool { j := r.c.Status().Job; return j != nil && j.Lines > 50 })
	r.fake(0).conn.Close() // unplug
	waitFor(t, "job failed", func() bool { j := r.c.Status().Job; return j.Failed != "" })
	if j := r.c.Status().Job; !strings.Contains(j.Failed, "link lost") {
		t.Errorf("job failed with %q, want link lost", j.Failed)
	}
	waitFor(t, "reconnect", func() bool { return r.nfakes() >= 2 })
	r.waitState(Operational)
	time.Sleep(300 * time.Millisecond) // let anything that would wrongly resume show itself
	rec, ex := r.fake(1).snapshot()
	want := append(slices.Clone(firstBytes), "N0 M110 N0*125", gcode.Number(1, "M104 T0 S0"), gcode.Number(2, "M140 S0"))
	if len(rec) < len(want) || !slices.Equal(rec[:len(want)], want) {
		t.Fatalf("after reconnect first lines = %q, want %q", rec, want)
	}
	if got := jobCommands(ex); len(got) != 0 {
		t.Fatalf("after reconnect %d job lines were sent, want none (first %q)", len(got), got[0])
	}
	if st := r.c.Status(); st.State != Operational || st.Job.Failed == "" {
		t.Errorf("status %s job %+v", st.State, st.Job)
	}
}

func TestThermalRunawayHalts(t *testing.T) {
	var sentAfterKill int
	r := newRig(t, Config{}, func(f *fakeMarlin) {
		f.onCommand = func(f *fakeMarlin, cmd string) ([]string, bool) {
			if strings.HasPrefix(cmd, "G1 X50.0 ") {
				f.mu.Lock()
				f.killed = true
				sentAfterKill = len(f.received)
				f.mu.Unlock()
				return []string{"Error:Thermal Runaway, system stopped! Heater_ID: 0", "Error:Printer halted. kill() called!", "Resend: 3", "ok"}, true
			}
			return nil, false
		}
	})
	r.waitState(Operational)
	text, _ := genJob(1000)
	if err := r.c.Start(context.Background(), "job.gcode", strings.NewReader(text), int64(len(text))); err != nil {
		t.Fatal(err)
	}
	r.waitState(Halted)
	st := r.c.Status()
	if !strings.Contains(st.Error, "Thermal Runaway") || !strings.Contains(st.Error, "heater 0") {
		t.Errorf("halted with %q, want the thermal runaway and heater", st.Error)
	}
	if !strings.Contains(st.Job.Failed, "Thermal Runaway") {
		t.Errorf("job failed = %q, want the thermal runaway", st.Job.Failed)
	}
	time.Sleep(200 * time.Millisecond)
	rec, _ := r.fake(0).snapshot()
	if len(rec) != sentAfterKill {
		t.Errorf("%d lines sent after kill (%q), want none", len(rec)-sentAfterKill, rec[sentAfterKill:])
	}
	if err := r.c.Send(context.Background(), "G28"); err == nil {
		t.Errorf("Send after kill succeeded, want an error")
	}
}

func TestEmergencyJumpsQueue(t *testing.T) {
	r := newRig(t, Config{}, func(f *fakeMarlin) { f.delay = 20 * time.Millisecond })
	r.waitState(Operational)
	for i := 0; i < 30; i++ {
		if err := r.c.Send(context.Background(), fmt.Sprintf("G1 X%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.c.Send(context.Background(), "M112"); err != nil {
		t.Fatal(err)
	}
	r.waitState(Halted)
	waitFor(t, "M112 at the firmware", func() bool {
		rec, _ := r.fake(0).snapshot()
		i := slices.Index(rec, "M112")
		return i >= 0 && len(rec) > i+1
	})
	rec, _ := r.fake(0).snapshot()
	i := slices.Index(rec, "M112")
	moves := 0
	for _, l := range rec[:i] {
		if strings.Contains(l, "G1 X") {
			moves++
		}
	}
	if moves > 2 {
		t.Errorf("%d of 30 queued moves reached the firmware before M112, want at most 2", moves)
	}
	if !strings.HasPrefix(rec[i+1], "N") || !strings.Contains(rec[i+1], "M112") {
		t.Errorf("line after M112 = %q, want the numbered M112", rec[i+1])
	}
}

type refuseFilter struct{}

func (refuseFilter) Check(l gcode.Line, s Status) error {
	if l.Word == "M104" {
		if v, _, _ := l.Float('S'); v > 260 {
			return errors.New("hotend above 260")
		}
	}
	if l.Word == "M42" {
		return errors.New("pin control")
	}
	return nil
}

func TestFilterRefuses(t *testing.T) {
	r := newRig(t, Config{Filter: refuseFilter{}}, nil)
	r.waitState(Operational)
	time.Sleep(100 * time.Millisecond)
	before, _ := r.fake(0).snapshot()
	for _, l := range []string{"M104 S300", "M42 P1 S255", "N5 G28*1", strings.Repeat("G1 X1 ", 20)} {
		if err := r.c.Send(context.Background(), l); err == nil {
			t.Errorf("Send(%q) = nil, want a refusal", l)
		}
	}
	time.Sleep(100 * time.Millisecond)
	after, _ := r.fake(0).snapshot()
	for _, l := range after[len(before):] {
		if strings.Contains(l, "M104 S300") || strings.Contains(l, "M42") {
			t.Errorf("refused line reached the printer: %q", l)
		}
	}
	// A job with a refused line fails at that line, and heaters go off.
	job := "G28\nG1 X10\nM104 S300\nG1 X20\n"
	if err := r.c.Start(context.Background(), "bad.gcode", strings.NewReader(job), int64(len(job))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "job failure", func() bool { j := r.c.Status().Job; return j != nil && j.Failed != "" })
	if j := r.c.Status().Job; !strings.Contains(j.Failed, "line 3 refused") {
		t.Errorf("job failed = %q, want line 3 refused", j.Failed)
	}
	time.Sleep(100 * time.Millisecond)
	_, ex := r.fake(0).snapshot()
	if slices.Contains(ex, "G1 X20") || slices.Contains(ex, "M104 S300") {
		t.Errorf("lines at or after the refused one were executed: %q", ex)
	}
}

func TestPauseResumeCancel(t *testing.T) {
	r := newRig(t, Config{}, func(f *fakeMarlin) { f.delay = 2 * time.Millisecond })
	r.waitState(Operational)
	text, _ := genJob(5000)
	if err := r.c.Start(context.Background(), "job.gcode", strings.NewReader(text), int64(len(text))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "progress", func() bool { return r.c.Status().Job.Lines > 20 })
	if err := r.c.Pause(); err != nil {
		t.Fatal(err)
	}
	r.waitState(Paused)
	lines := r.c.Status().Job.Lines
	time.Sleep(100 * time.Millisecond)
	if got := r.c.Status().Job.Lines; got != lines {
		t.Errorf("job lines went from %d to %d while paused", lines, got)
	}
	_, ex := r.fake(0).snapshot()
	ex = slices.DeleteFunc(ex, func(s string) bool { return s == "M105" })
	tail := strings.Join(ex[len(ex)-5:], "|")
	if tail != strings.Join(DefaultPauseScript(), "|") {
		t.Errorf("last executed = %q, want the pause script", tail)
	}
	if err := r.c.Resume(); err != nil {
		t.Fatal(err)
	}
	r.waitState(Printing)
	waitFor(t, "progress after resume", func() bool { return r.c.Status().Job.Lines > lines+20 })
	_, ex = r.fake(0).snapshot()
	if !slices.Contains(ex, "G1 Z-10 F600") || !slices.Contains(ex, "M82") {
		t.Errorf("resume script or mode restore missing from %q", ex[len(ex)-30:])
	}
	if err := r.c.Cancel(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "cancelled", func() bool { j := r.c.Status().Job; return j.Cancelled })
	r.waitState(Operational)
	_, ex = r.fake(0).snapshot()
	for _, want := range []string{"M104 T0 S0", "M140 S0", "M107"} {
		if !slices.Contains(ex[len(ex)-10:], want) {
			t.Errorf("cancel did not send %q: %q", want, ex[len(ex)-10:])
		}
	}
	if j := r.c.Status().Job; j.Done || j.Failed != "" || j.Elapsed <= 0 {
		t.Errorf("job after cancel = %+v", j)
	}
}

func TestShutdownTurnsHeatersOff(t *testing.T) {
	r := newRig(t, Config{}, nil)
	r.waitState(Operational)
	f := r.fake(0)
	_, before := f.snapshot()
	r.stop()
	_, ex := f.snapshot()
	if got := ex[len(before):]; !slices.Equal(got, []string{"M104 T0 S0", "M140 S0"}) {
		t.Errorf("at shutdown executed %q, want heaters off", got)
	}
}

func TestSubscribeDropsForSlow(t *testing.T) {
	r := newRig(t, Config{PollInterval: 100 * time.Millisecond}, nil)
	ch, cancel := r.c.Subscribe()
	defer cancel()
	r.waitState(Operational)
	// Nobody reads ch: the controller must go on regardless.
	waitFor(t, "a full subscriber buffer", func() bool { return len(ch) == subscriberBuffer })
	n := len(r.c.History())
	waitFor(t, "temperature history growing", func() bool { return len(r.c.History()) > n+3 })
}

func TestEmergencyFailsJob(t *testing.T) {
	r := newRig(t, Config{}, func(f *fakeMarlin) { f.delay = time.Millisecond })
	r.waitState(Operational)
	text, _ := genJob(5000)
	if err := r.c.Start(context.Background(), "job.gcode", strings.NewReader(text), int64(len(text))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "progress", func() bool { return r.c.Status().Job.Lines > 10 })
	if err := r.c.Emergency(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "job failed", func() bool { return r.c.Status().Job.Failed != "" })
	time.Sleep(100 * time.Millisecond) // the kill lines arrive
	st := r.c.Status()
	if st.State != Halted || st.Error != "emergency stop (M112)" || st.Job.Failed != "emergency stop (M112)" {
		t.Errorf("after Emergency: state %s error %q job failed %q", st.State, st.Error, st.Job.Failed)
	}
}
