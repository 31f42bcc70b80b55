package marlinsim

import (
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

var waitRE = regexp.MustCompile(`^ T:\d+\.\d\d /\d+\.\d\d B:\d+\.\d\d /\d+\.\d\d @:\d+ B@:\d+ W:(\?|\d+)$`)

func TestHeaterWaits(t *testing.T) {
	tests := []struct {
		cmd    string
		heater string
		target float64
	}{
		{"M109 S200", "T0", 200},
		{"M190 S60", "bed", 60},
		{"M109 R180", "T0", 180},
	}
	for _, tt := range tests {
		t.Run(tt.cmd, func(t *testing.T) {
			// 1 s of machine time is 2 ms: heating takes ~100 ms, residency 20 ms.
			s := New(Config{TimeScale: 0.002})
			h := serve(t, s)
			h.boot()
			h.send(tt.cmd)
			got := h.until(func(l string) bool { return strings.HasPrefix(l, "ok") })
			var waits, counted, busy int
			for _, l := range got[:len(got)-1] {
				switch {
				case waitRE.MatchString(l):
					waits++
					if !strings.HasSuffix(l, "W:?") {
						counted++
					}
				case l == "echo:busy: processing":
					busy++
				default:
					t.Errorf("%s: unexpected line %q", tt.cmd, l)
				}
			}
			if got[len(got)-1] != "ok" {
				t.Errorf("%s ended with %q, want ok", tt.cmd, got[len(got)-1])
			}
			if waits < 10 || counted < 5 || busy == 0 {
				t.Errorf("%s: %d W: lines (%d counting down), %d busy; want W:? then a countdown, and busy lines",
					tt.cmd, waits, counted, busy)
			}
			ha, ht, ba, bt := s.Temps()
			actual, target := ha, ht
			if tt.heater == "bed" {
				actual, target = ba, bt
			}
			if target != tt.target || actual < tt.target-1 {
				t.Errorf("after %s: %s at %.2f/%.2f, want at its target %.0f", tt.cmd, tt.heater, actual, target, tt.target)
			}
			tg := s.Targets()
			if len(tg) != 1 || tg[0].Heater != tt.heater || tg[0].Target != tt.target || tg[0].Cause != tt.cmd {
				t.Errorf("Targets() = %+v, want one change of %s to %.0f by %q", tg, tt.heater, tt.target, tt.cmd)
			}
		})
	}
}

func TestM109SDoesNotWaitForCooling(t *testing.T) {
	s := New(Config{TimeScale: 0.002})
	h := serve(t, s)
	h.boot()
	h.send("M109 S200")
	h.until(func(l string) bool { return l == "ok" })
	h.send("M109 S150")
	h.expect("ok")
	if _, target, _, _ := s.Temps(); target != 150 {
		t.Errorf("target = %v, want 150", target)
	}
}

func TestTargetsClamped(t *testing.T) {
	s := New(Config{})
	h := serve(t, s)
	h.boot()
	h.send("M104 S400", "M140 S200")
	h.expect("ok", "ok")
	if _, ht, _, bt := s.Temps(); ht != 260 || bt != 140 {
		t.Errorf("targets %v/%v, want Marlin's limits 260/140", ht, bt)
	}
}

func TestAutoReport(t *testing.T) {
	s := New(Config{TimeScale: 0.01})
	h := serve(t, s)
	h.boot()
	h.send("M155 S1")
	h.expect("ok")
	auto := regexp.MustCompile(`^ T:\d+\.\d\d /\d+\.\d\d B:\d+\.\d\d /\d+\.\d\d @:\d+ B@:\d+$`)
	for range 3 {
		if l := h.next(); !auto.MatchString(l) {
			t.Fatalf("auto-report %q does not match %v", l, auto)
		}
	}
	h.send("M155 S0")
	h.until(func(l string) bool { return l == "ok" })
}

func TestThermalFaults(t *testing.T) {
	tests := []struct {
		fault Fault
		want  []string
	}{
		{FaultRunaway, []string{"Error:Thermal Runaway, system stopped! Heater_ID: 0", strErrKilled}},
		{FaultBedRunaway, []string{"Error:Thermal Runaway, system stopped! Heater_ID: bed", strErrKilled}},
		{FaultMaxTemp, []string{"Error:MAXTEMP triggered, system stopped! Heater_ID: 0", strErrKilled}},
	}
	for _, tt := range tests {
		t.Run(tt.fault.String(), func(t *testing.T) {
			s := New(Config{TimeScale: 0.002})
			h := serve(t, s)
			h.boot()
			h.send("M140 S60", "M104 S200")
			h.expect("ok", "ok")
			s.Inject(tt.fault)
			h.expect(tt.want...)
			h.send("M105", "N1 M105*38")
			waitFor(t, "the firmware to swallow the commands", func() bool { return s.Stats().RXBytes >= 35 })
			h.quiet(100 * time.Millisecond)
			if _, ht, _, bt := s.Temps(); ht != 0 || bt != 0 {
				t.Errorf("after %v targets are %v/%v, want heaters off", tt.fault, ht, bt)
			}
			tg := s.Targets()
			if n := len(tg); n != 4 || tg[2].Cause != "kill" || tg[3].Cause != "kill" {
				t.Errorf("Targets() = %+v, want two sets then two kills", tg)
			}
		})
	}
}

func TestScheduledRunaway(t *testing.T) {
	s := New(Config{Faults: []Trigger{{Fault: FaultRunaway, AtLine: 3}}})
	h := serve(t, s)
	h.boot()
	h.send("M104 S200", "G1 X1", "G1 X2", "G1 X3", "G1 X4")
	got := h.until(func(l string) bool { return l == strErrKilled })
	want := []string{"ok", "ok", "ok", "Error:Thermal Runaway, system stopped! Heater_ID: 0", strErrKilled}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := s.Executed(); !slices.Equal(got, []string{"M104 S200", "G1 X1", "G1 X2"}) {
		t.Errorf("Executed() = %q, want the three lines before the fault", got)
	}
}

func TestKill(t *testing.T) {
	for _, ep := range []bool{false, true} {
		s := New(Config{EmergencyParser: ep, TimeScale: 0.05})
		h := serve(t, s)
		h.boot()
		// M109 blocks the firmware for seconds; the queue behind it fills up.
		h.send("M109 S250", "G1 X1", "G1 X2", "G1 X3", "G1 X4", "G1 X5")
		h.until(func(l string) bool { return waitRE.MatchString(l) })
		h.send("M112")
		if ep {
			// The emergency parser acts at once, whatever the firmware is doing.
			h.until(func(l string) bool { return l == strErrKilled })
			if got := s.Executed(); !slices.Equal(got, []string{"M109 S250"}) {
				t.Errorf("EMERGENCY_PARSER: executed %q, want only the M109", got)
			}
		} else {
			// Without it M112 waits until M109 is done and the queue reads it.
			got := h.until(func(l string) bool { return l == strErrKilled })
			if !slices.Contains(got, "ok") || got[len(got)-2] != "echo:"+strM112Kill {
				t.Errorf("without EMERGENCY_PARSER: got %q, want the M109 to finish first, then the kill", got)
			}
		}
		if _, ht, _, _ := s.Temps(); ht != 0 {
			t.Errorf("after kill the hotend target is %v, want 0", ht)
		}
	}
}

func TestM108BreaksWait(t *testing.T) {
	s := New(Config{EmergencyParser: true, TimeScale: 0.05})
	h := serve(t, s)
	h.boot()
	h.send("M109 S250")
	h.until(func(l string) bool { return waitRE.MatchString(l) })
	h.send("M108")
	h.until(func(l string) bool { return l == "ok" }) // M109 ends early
	h.expect("ok")                                    // M108 itself
	if ha, _, _, _ := s.Temps(); ha > 200 {
		t.Errorf("hotend at %v: the wait was not broken early", ha)
	}
}

func TestStopAndM999(t *testing.T) {
	s := New(Config{})
	h := serve(t, s)
	h.boot()
	h.send("M104 S200")
	h.expect("ok")
	s.Inject(FaultStop)
	h.expect("Error:" + strErrStopped)
	h.send("M110 N4")
	h.expect("ok")
	h.send("G1 X10")
	h.expect(strErrStopped, "ok")
	h.send("M999")
	h.expect("Resend: 5", "ok", "ok")
	h.send("G1 X10")
	h.expect("ok")
	if _, ht, _, _ := s.Temps(); ht != 0 {
		t.Errorf("after stop() the hotend target is %v, want 0", ht)
	}
}

func TestSilence(t *testing.T) {
	s := New(Config{Faults: []Trigger{{Fault: FaultSilence, AtLine: 2}}})
	h := serve(t, s)
	h.boot()
	h.send("G1 X1", "G1 X2", "G1 X3")
	h.expect("ok", "ok")
	waitFor(t, "the firmware to read the third line", func() bool { return s.Stats().RXBytes >= 18 })
	h.quiet(100 * time.Millisecond)
	if got := s.Executed(); len(got) != 2 {
		t.Errorf("Executed() = %q, want 2 lines", got)
	}
}

func TestDisconnect(t *testing.T) {
	tests := []Trigger{{Fault: FaultDisconnect, AtLine: 3}, {Fault: FaultDisconnect, After: 50 * time.Millisecond}}
	for _, tr := range tests {
		s := New(Config{Faults: []Trigger{tr}})
		h := serve(t, s)
		h.boot()
		if tr.AtLine > 0 {
			h.conn.Write([]byte("G1 X1\nG1 X2\nG1 X3\nG1 X4\n")) // may fail once the link drops
		}
		if err := h.serveErr(); !errors.Is(err, ErrDisconnected) {
			t.Errorf("%+v: Serve = %v, want ErrDisconnected", tr, err)
		}
		if tr.AtLine > 0 && len(s.Executed()) != 3 {
			t.Errorf("%+v: executed %q, want 3 lines", tr, s.Executed())
		}
	}
}

func TestResetOnReconnect(t *testing.T) {
	s := New(Config{})
	for i := range 2 {
		h := serve(t, s)
		got := h.boot()
		if got[0] != "start" {
			t.Fatalf("connection %d began with %q, want start", i, got[0])
		}
		h.send("M104 S200")
		h.expect("ok")
		h.conn.Close()
		if err := h.serveErr(); err != nil {
			t.Fatalf("Serve after the host closed = %v, want nil", err)
		}
	}
	tg := s.Targets()
	if len(tg) != 3 || tg[1].Cause != "reset" {
		t.Errorf("Targets() = %+v, want set, reset (heaters off at boot), set", tg)
	}
	if st := s.Stats(); st.Boots != 2 {
		t.Errorf("Boots = %d, want 2", st.Boots)
	}
}

// TestM108WithoutEmergencyParser: without EMERGENCY_PARSER Marlin reads the serial line only
// between commands (get_serial_commands runs from loop(), not from idle()), so an M108 sent
// during M109 waits in the receive buffer until the wait has ended by itself; nor does M108
// end a G4 dwell with or without it (dwell() does not look at wait_for_heatup).
func TestM108WithoutEmergencyParser(t *testing.T) {
	s := New(Config{TimeScale: 0.05})
	h := serve(t, s)
	h.boot()
	h.send("M109 S100")
	h.until(func(l string) bool { return waitRE.MatchString(l) })
	h.send("M108")
	h.until(func(l string) bool { return l == "ok" }) // M109, at its target
	if ha, _, _, _ := s.Temps(); ha < 99 {
		t.Errorf("M109 ended at %v °C: without EMERGENCY_PARSER an M108 cannot break the wait", ha)
	}
	h.expect("ok") // M108 itself, read only now

	for _, ep := range []bool{false, true} {
		s := New(Config{TimeScale: 0.05, EmergencyParser: ep})
		h := serve(t, s)
		h.boot()
		start := time.Now()
		h.send("G4 S10") // 0.5 s of wall time
		h.send("M108")
		h.until(func(l string) bool { return l == "ok" })
		if d := time.Since(start); d < 400*time.Millisecond {
			t.Errorf("emergency parser %v: G4 S10 ended after %v: M108 must not end a dwell", ep, d)
		}
	}
}
