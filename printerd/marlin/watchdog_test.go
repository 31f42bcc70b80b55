package marlin

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// waitAlarm waits for an "alarm" event whose text holds want.
func waitAlarm(t *testing.T, ch <-chan Event, want string) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case ev := <-ch:
			if ev.Kind == "alarm" && strings.Contains(ev.Line, want) {
				return
			}
		case <-deadline:
			t.Fatalf("no alarm containing %q", want)
		}
	}
}

func TestWatchdog(t *testing.T) {
	for _, tc := range []struct {
		name   string
		wd     WatchdogConfig
		first  string // temperatures reported after connect
		then   string // temperatures reported later; "" means silence
		alarm  string
		m112   bool
		offCmd bool // heaters turned off (not an emergency)
	}{
		{name: "over limit", first: "T:200.0 /200.0 B:60.0 /60.0 @:0 B@:0", then: "T:275.5 /200.0 B:60.0 /60.0 @:0 B@:0", alarm: "hotend 0 at 275.5", m112: true},
		{name: "bed over limit", first: "T:20.0 /0.0 B:60.0 /60.0", then: "T:20.0 /0.0 B:131.0 /60.0", alarm: "bed at 131.0", m112: true},
		{name: "custom limit", wd: WatchdogConfig{MaxHotend: 230}, first: "T:200.0 /200.0 B:20.0 /0.0", then: "T:235.0 /200.0 B:20.0 /0.0", alarm: "above the 230", m112: true},
		{name: "rising with target 0", first: "T:25.0 /0.0 B:25.0 /0.0", then: "T:45.0 /0.0 B:25.0 /0.0", alarm: "rising", m112: true},
		{name: "silence while heating", wd: WatchdogConfig{Silence: 400 * time.Millisecond}, first: "T:150.0 /200.0 B:25.0 /0.0", then: "", alarm: "no temperature report", m112: true},
		{name: "idle heaters", wd: WatchdogConfig{IdleHeaters: 400 * time.Millisecond}, first: "T:200.0 /200.0 B:60.0 /60.0", then: "T:200.0 /200.0 B:60.0 /60.0", alarm: "no job", offCmd: true},
		{name: "checks off", wd: WatchdogConfig{MaxHotend: -1, Rise: -1}, first: "T:25.0 /0.0 B:25.0 /0.0", then: "T:300.0 /0.0 B:25.0 /0.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, Config{PollInterval: 50 * time.Millisecond, Watchdog: tc.wd}, func(f *fakeMarlin) { f.setTemps(tc.first) })
			ch, cancel := r.c.Subscribe()
			defer cancel()
			r.waitState(Operational)
			f := r.fake(0)
			waitFor(t, "first report", func() bool { return len(r.c.History()) >= 3 })
			_, before := f.snapshot()
			if tc.then == "" {
				f.mu.Lock()
				f.onCommand = func(f *fakeMarlin, cmd string) ([]string, bool) { return nil, cmd == "M105" }
				f.mu.Unlock()
			} else {
				f.setTemps(tc.then)
			}
			if tc.alarm == "" {
				n := len(r.c.History())
				waitFor(t, "more reports", func() bool { return len(r.c.History()) > n+5 })
				if st := r.c.Status(); st.State != Operational {
					t.Errorf("state %s (%s), want operational with the checks off", st.State, st.Error)
				}
				return
			}
			waitAlarm(t, ch, tc.alarm)
			if tc.m112 {
				r.waitState(Halted)
				waitFor(t, "M112 at the firmware", func() bool { rec, _ := f.snapshot(); return slices.Contains(rec, "M112") })
				if st := r.c.Status(); !strings.Contains(st.Error, tc.alarm) {
					t.Errorf("halted with %q, want %q", st.Error, tc.alarm)
				}
			}
			if tc.offCmd {
				waitFor(t, "heaters off", func() bool {
					_, ex := f.snapshot()
					return slices.Contains(ex[len(before):], "M104 T0 S0") && slices.Contains(ex[len(before):], "M140 S0")
				})
				if st := r.c.Status(); st.State != Operational {
					t.Errorf("state %s, want operational after idle heaters off", st.State)
				}
			}
		})
	}
}

func TestWatchdogRules(t *testing.T) {
	cfg := WatchdogConfig{}.withDefaults()
	now := time.Unix(1000, 0)
	w := newWatchdog(cfg)
	w.reset(now)
	// Cooling after a print is fine; warming a little (a hot bed nearby) too.
	for i, v := range []float64{200, 150, 100, 60, 62, 70} {
		if r := w.observe(Temps{Tools: []Temp{{v, 0}}}, now.Add(time.Duration(i)*time.Second)); r != "" {
			t.Fatalf("observe(%v °C, target 0) = %q, want no alarm", v, r)
		}
	}
	if r := w.observe(Temps{Tools: []Temp{{76, 0}}}, now.Add(10*time.Second)); r == "" {
		t.Errorf("observe(76 °C after a low of 60, target 0) = no alarm, want one")
	}
	// Heating with a target never trips the rise check.
	w = newWatchdog(cfg)
	for i, v := range []float64{20, 80, 150, 200} {
		if r := w.observe(Temps{Tools: []Temp{{v, 200}}}, now.Add(time.Duration(i)*time.Second)); r != "" {
			t.Fatalf("observe(%v °C, target 200) = %q", v, r)
		}
	}
	if a := w.tick(now.Add(3*time.Second+cfg.Silence+time.Second), true); a.kind != wdAlarm {
		t.Errorf("tick after %v of silence while heating = %v, want an alarm", cfg.Silence, a.kind)
	}
	// Silence with no target is not an alarm.
	w = newWatchdog(cfg)
	w.observe(Temps{Tools: []Temp{{20, 0}}}, now)
	if a := w.tick(now.Add(time.Hour), false); a.kind != wdNone {
		t.Errorf("tick after an hour of silence, heaters off = %v, want nothing", a.kind)
	}
}
