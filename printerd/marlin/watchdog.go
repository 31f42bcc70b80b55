package marlin

import (
	"fmt"
	"time"
)

// The thermal watchdog watches every temperature report, independent of the firmware's own
// thermal protection, and acts in two ways:
//   - emergency stop (M112) and an "alarm" event: a reading above its heater's limit; a heater
//     rising while its target is 0; no temperature report for too long while a target is set;
//   - heaters off and an "alarm" event: heaters left on with no job for too long.
// Heaters are also turned off as the first commands after every connect and before every
// disconnect (session.go), whatever the watchdog says.

// WatchdogConfig configures the thermal watchdog. For every duration and limit, zero means
// the default given and a negative value turns that check off.
type WatchdogConfig struct {
	// MaxHotend, MaxBed and MaxChamber are the highest readings in °C before an emergency
	// stop. Defaults 270, 120 and 65: a few degrees above the policy's highest targets (260,
	// 110, 50) and below Marlin's MAXTEMP (275, 150, 60+overshoot), so the gateway stops the
	// printer before the firmware's last line of defence.
	MaxHotend, MaxBed, MaxChamber float64
	// Rise is how far in °C a heater with target 0 may climb above the lowest reading since
	// its target became 0 (ambient drift, overshoot, a hot bed warming the nozzle); default 15.
	Rise float64
	// Silence is the longest time without a temperature report while any target is above 0;
	// default 20 s (reports come every 2 s).
	Silence time.Duration
	// IdleHeaters is how long heaters may stay on with no job before they are turned off;
	// default 30 minutes.
	IdleHeaters time.Duration
}

func (w WatchdogConfig) withDefaults() WatchdogConfig {
	def := func(v *float64, d float64) {
		if *v == 0 {
			*v = d
		}
	}
	def(&w.MaxHotend, 270)
	def(&w.MaxBed, 120)
	def(&w.MaxChamber, 65)
	def(&w.Rise, 15)
	if w.Silence == 0 {
		w.Silence = 20 * time.Second
	}
	if w.IdleHeaters == 0 {
		w.IdleHeaters = 30 * time.Minute
	}
	return w
}

// watchdog is the per-session state of the checks.
type watchdog struct {
	cfg        WatchdogConfig
	lastReport time.Time
	heating    bool      // some target > 0 in the last report
	idleSince  time.Time // heaters on and no job since; zero when not
	lowest     map[string]float64
}

func newWatchdog(cfg WatchdogConfig) watchdog {
	return watchdog{cfg: cfg, lowest: map[string]float64{}}
}

// reset starts the silence clock (at connect).
func (w *watchdog) reset(now time.Time) {
	w.lastReport = now
}

// observe checks one report and returns the reason for an emergency stop, or "".
func (w *watchdog) observe(t Temps, now time.Time) string {
	w.lastReport = now
	w.heating = false
	check := func(name string, h *Temp, max float64) string {
		if h == nil {
			return ""
		}
		if max > 0 && h.Actual > max {
			return fmt.Sprintf("%s at %.1f°C, above the %.0f°C limit", name, h.Actual, max)
		}
		if h.Target > 0 {
			w.heating = true
			delete(w.lowest, name)
			return ""
		}
		low, ok := w.lowest[name]
		if !ok || h.Actual < low {
			w.lowest[name] = h.Actual
			return ""
		}
		if w.cfg.Rise > 0 && h.Actual > low+w.cfg.Rise {
			return fmt.Sprintf("%s rising to %.1f°C with its target at 0 (was %.1f°C)", name, h.Actual, low)
		}
		return ""
	}
	for i := range t.Tools {
		if r := check(fmt.Sprintf("hotend %d", i), &t.Tools[i], w.cfg.MaxHotend); r != "" {
			return r
		}
	}
	if r := check("bed", t.Bed, w.cfg.MaxBed); r != "" {
		return r
	}
	if r := check("chamber", t.Chamber, w.cfg.MaxChamber); r != "" {
		return r
	}
	return ""
}

type wdKind int

const (
	wdNone wdKind = iota
	wdAlarm
	wdHeatersOff
)

type wdAction struct {
	kind   wdKind
	reason string
}

// tick runs the time-based checks.
func (w *watchdog) tick(now time.Time, jobRunning bool) wdAction {
	if w.heating && w.cfg.Silence > 0 && now.Sub(w.lastReport) > w.cfg.Silence {
		return wdAction{wdAlarm, fmt.Sprintf("no temperature report for %v while heating", now.Sub(w.lastReport).Round(time.Second))}
	}
	if !w.heating || jobRunning {
		w.idleSince = time.Time{}
		return wdAction{}
	}
	if w.idleSince.IsZero() {
		w.idleSince = now
	}
	if w.cfg.IdleHeaters > 0 && now.Sub(w.idleSince) > w.cfg.IdleHeaters {
		w.idleSince = time.Time{}
		w.heating = false // until the next report says otherwise
		return wdAction{wdHeatersOff, fmt.Sprintf("heaters on with no job for %v: turned off", w.cfg.IdleHeaters)}
	}
	return wdAction{}
}
