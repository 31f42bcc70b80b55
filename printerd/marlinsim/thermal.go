package marlinsim

// The thermal model: a hotend and a bed that heat and cool linearly, Marlin's temperature
// reports (module/temperature.cpp print_heater_states) and the M109/M190 waits.

import (
	"context"
	"math"
	"strconv"
	"time"
)

// Heater indexes.
const (
	hotend = 0
	bed    = 1
)

// Marlin's defaults for the waits (Configuration.h).
const (
	residency  = 10 * time.Second // TEMP_RESIDENCY_TIME, TEMP_BED_RESIDENCY_TIME
	tempWindow = 1.0              // TEMP_WINDOW, TEMP_BED_WINDOW
	tempHyster = 3.0              // TEMP_HYSTERESIS, TEMP_BED_HYSTERESIS
	heaterTick = 250 * time.Millisecond
	// MIN_COOLING_SLOPE_DEG and MIN_COOLING_SLOPE_TIME (the bed's are the same).
	minCoolingSlope = 1.5
	minCoolingTime  = 60 * time.Second
	wReportEach     = time.Second
)

// heater is one heater's physical state.
type heater struct {
	name, id  string
	actual    float64
	target    float64
	at        time.Time // when actual was computed
	heat      float64   // °C per machine second
	cool      float64
	ambient   float64
	maxTarget float64
	maxTemp   float64
}

// update advances the temperature to now. scale is Config.TimeScale (0: instant).
func (h *heater) update(now time.Time, scale float64) {
	dt := now.Sub(h.at)
	if dt <= 0 {
		return
	}
	h.at = now
	goal, rate := h.target, h.heat
	if goal <= h.ambient {
		goal, rate = h.ambient, h.cool
	}
	if h.actual > goal {
		rate = h.cool
	}
	if scale == 0 {
		h.actual = goal
		return
	}
	step := rate * dt.Seconds() / scale
	if math.Abs(goal-h.actual) <= step {
		h.actual = goal
	} else if goal > h.actual {
		h.actual += step
	} else {
		h.actual -= step
	}
}

// power is the soft-PWM amount Marlin reports after '@:' (0-127).
func (h *heater) power() int {
	if h.target <= 0 {
		return 0
	}
	if h.actual < h.target-tempWindow {
		return 127
	}
	if h.actual > h.target+tempWindow {
		return 0
	}
	return int(min(127, max(0, (h.target-h.ambient)*0.3)))
}

// heaterNow returns heater h brought up to the firmware's time.
func (c *conn) heaterNow(h int) heater {
	c.s.heat.Lock()
	defer c.s.heat.Unlock()
	c.s.heat.h[h].ambient = c.cfg.Ambient
	c.s.heat.h[h].update(c.wall(c.now), c.cfg.TimeScale)
	return c.s.heat.h[h]
}

// setTarget sets a target, clamped as Marlin clamps it, and records the change.
func (c *conn) setTarget(h int, v float64, cause string) {
	c.s.heat.Lock()
	ht := &c.s.heat.h[h]
	ht.ambient = c.cfg.Ambient
	ht.update(c.wall(c.now), c.cfg.TimeScale)
	v = min(max(v, 0), ht.maxTarget)
	ht.target = v
	name := ht.name
	c.s.heat.Unlock()
	c.s.addTarget(Target{Time: c.wall(c.now), Heater: name, Target: v, Cause: cause})
}

// heatersOff is disable_all_heaters(); it records only real changes.
func (c *conn) heatersOff(cause string) {
	for h := range 2 {
		if c.heaterNow(h).target != 0 {
			c.setTarget(h, 0, cause)
		}
	}
}

// tempReport is print_heater_states(): " T:a /t B:a /t @:p B@:p" plus a suffix.
func (c *conn) tempReport(suffix string) string {
	t, b := c.heaterNow(hotend), c.heaterNow(bed)
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
	return " T:" + f(t.actual) + " /" + f(t.target) + " B:" + f(b.actual) + " /" + f(b.target) +
		" @:" + strconv.Itoa(t.power()) + " B@:" + strconv.Itoa(b.power()) + suffix
}

// waitHeater is Temperature::wait_for_hotend/wait_for_bed. noWaitForCooling is M109/M190 S.
func (c *conn) waitHeater(ctx context.Context, h int, noWaitForCooling bool) error {
	res := c.machine(residency)
	nextTemp := c.now
	resStart := int64(-1)
	seen := -1.0
	wantsToCool := false
	nextCoolCheck, oldTemp := int64(-1), 9999.0
	c.waitHeat = true
	return c.block(ctx, strBusy, func() (bool, int64) {
		ht := c.heaterNow(h)
		if ht.target != seen {
			seen = ht.target
			wantsToCool = ht.target < ht.actual
			if noWaitForCooling && wantsToCool {
				return true, -1
			}
		}
		if c.now >= nextTemp {
			nextTemp = c.now + c.interval(wReportEach)
			w := "?"
			if resStart >= 0 {
				left := res - (c.now - resStart)
				if c.cfg.TimeScale > 0 {
					left = int64(float64(left) / c.cfg.TimeScale)
				}
				w = strconv.FormatInt(left/int64(time.Second), 10)
			}
			c.print(c.tempReport(" W:" + w))
		}
		if wantsToCool && (nextCoolCheck < 0 || c.now >= nextCoolCheck) {
			// MIN_COOLING_SLOPE: give up a wait that cools too slowly (M109 R0).
			if oldTemp-ht.actual < minCoolingSlope {
				return true, -1
			}
			nextCoolCheck, oldTemp = c.now+c.machine(minCoolingTime), ht.actual
		}
		diff := math.Abs(ht.target - ht.actual)
		if resStart < 0 {
			if diff < tempWindow {
				resStart = c.now
			}
		} else if diff > tempHyster {
			resStart = -1
		}
		if !c.waitHeat || (resStart >= 0 && c.now-resStart >= res) {
			return true, -1
		}
		next := min(nextTemp, c.now+c.interval(heaterTick))
		if wantsToCool {
			next = min(next, nextCoolCheck)
		}
		if resStart >= 0 {
			next = min(next, resStart+res)
		}
		return false, next
	})
}
