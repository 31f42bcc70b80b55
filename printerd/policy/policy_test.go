package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/printgate/printgate/printerd/gcode"
	"github.com/printgate/printgate/printerd/marlin"
)

var (
	idle     = marlin.Status{State: marlin.Operational, Temps: marlin.Temps{Tools: []marlin.Temp{{Actual: 210}}}}
	printing = marlin.Status{State: marlin.Printing, Temps: marlin.Temps{Tools: []marlin.Temp{{Actual: 210}}}}
	paused   = marlin.Status{State: marlin.Paused, Temps: marlin.Temps{Tools: []marlin.Temp{{Actual: 210}}}}
	cold     = marlin.Status{State: marlin.Operational, Temps: marlin.Temps{Tools: []marlin.Temp{{Actual: 25}}}}
	allRoles = []Role{Viewer, Operator, Admin, Job}
	states   = []marlin.State{"", marlin.Disconnected, marlin.Connecting, marlin.Operational, marlin.Printing,
		marlin.Pausing, marlin.Paused, marlin.Cancelling, marlin.Error, marlin.Halted}
)

func newPolicy(t *testing.T, l Limits) *Policy {
	t.Helper()
	p, err := New(l)
	if err != nil {
		t.Fatalf("New(%+v): %v", l, err)
	}
	return p
}

// rule returns the rule of a refusal, "" for nil, and fails the test for other errors.
func rule(t *testing.T, err error) Rule {
	t.Helper()
	if err == nil {
		return ""
	}
	var r *Refusal
	if !errors.As(err, &r) {
		t.Fatalf("error %v is not a *Refusal", err)
	}
	if !errors.Is(err, ErrRefused) {
		t.Errorf("errors.Is(%v, ErrRefused) = false", err)
	}
	if !strings.Contains(err.Error(), string(r.Rule)) {
		t.Errorf("error %q does not name its rule %s", err, r.Rule)
	}
	return r.Rule
}

// The named cases: refused through every role and as a file line.
func TestNamedCasesRefused(t *testing.T) {
	p := newPolicy(t, Limits{})
	named := map[string]Rule{
		"M104 S400":     RuleMaxTemperature,
		"M140 S200":     RuleMaxTemperature,
		"M303 S400":     RuleMaxTemperature,
		"M997":          RuleFirmwareFlash,
		"M500":          RuleEEPROM,
		"M42":           RulePinControl,
		"M211 S0":       RuleEndstops,
		"M302 P1":       RuleColdExtrusion,
		"M28":           RuleSDCard,
		"M575":          RuleBaud,
		"M28 evil.g":    RuleSDCard,
		"M42 P4 S255":   RulePinControl,
		"M575 P0 B9600": RuleBaud,
	}
	for line, want := range named {
		for _, r := range []Role{Operator, Admin, Job} {
			_, err := p.CheckLine(r, line, idle)
			got := rule(t, err)
			if line == "M303 S400" && r != Admin {
				want := RuleRole // M303 is admin-only in the first place
				if got != want {
					t.Errorf("CheckLine(%s, %q) rule = %q, want %q", r, line, got, want)
				}
				continue
			}
			if got != want {
				t.Errorf("CheckLine(%s, %q) rule = %q, want %q", r, line, got, want)
			}
		}
		if got := rule(t, p.FileLine(7, line)); got == "" {
			t.Errorf("FileLine(%q) allowed", line)
		}
		l, err := Parse(line)
		if err != nil {
			t.Fatalf("Parse(%q): %v", line, err)
		}
		if got := rule(t, p.Check(l, idle)); got == "" {
			t.Errorf("Check(%q) (the controller's Filter) allowed", line)
		}
	}
}

// One row per rule, through the role that reaches it.
func TestRules(t *testing.T) {
	p := newPolicy(t, Limits{Extruders: 2, MaxChamber: -1})
	tests := []struct {
		role Role
		line string
		s    marlin.Status
		want Rule
	}{
		{Operator, "G28", idle, ""},
		{Operator, "G1 X10 Y10 Z5 F3000", idle, ""},
		{Operator, "G0 X200 Y0 Z200", idle, ""},
		{Operator, "M104 S260", idle, ""},
		{Operator, "M104 S200 T1", idle, ""},
		{Operator, "M109 R200", idle, ""},
		{Operator, "M140 S110", idle, ""},
		{Operator, "M190 S60", idle, ""},
		{Operator, "M106 S255", idle, ""},
		{Operator, "M106 P1 S128", idle, ""},
		{Operator, "M107", idle, ""},
		{Operator, "M105", idle, ""},
		{Operator, "M114", idle, ""},
		{Operator, "M115", idle, ""},
		{Operator, "M117 Hello there", idle, ""},
		{Operator, "M220 S120", printing, ""},
		{Operator, "M221 S95", printing, ""},
		{Operator, "M104 S215", printing, ""},
		{Operator, "M400", idle, ""},
		{Operator, "M84", idle, ""},
		{Operator, "T1", idle, ""},
		{Operator, "G4 P500", idle, ""},
		{Operator, "G92 E0", idle, ""},
		{Operator, "M999", idle, ""},
		{Operator, "G1 E5 F300", idle, ""},
		{Operator, "  g1 x10 ; comment with Ümlaut", idle, ""},
		{Operator, "G1 X10\r\n", idle, ""},
		{Admin, "M303 E0 S220 C8 U1", idle, ""},
		{Admin, "M303 E-1 S100 C5", idle, ""},
		{Admin, "M503", idle, ""},
		{Admin, "M119", idle, ""},
		{Admin, "M204 S1000", idle, ""},
		{Admin, "G2 X10 Y10 I5 J0", idle, ""},
		{Job, "M201 X500 Y500 Z100 E5000", printing, ""},
		{Job, "M203 X500 Y500 Z10 E60", printing, ""},
		{Job, "M204 P500 R1000 T500", printing, ""},
		{Job, "M205 X8.00 Y8.00 Z0.40 E5.00", printing, ""},
		{Job, "M900 K0.05", printing, ""},
		{Job, "M486 S0", printing, ""},
		{Job, "M486 Aobject.stl id:0 copy 0", printing, ""},
		{Job, "M73 P10 R20", printing, ""},
		{Job, "G1 X500 Y-20 E3.2", printing, ""}, // files: the firmware's software endstops
		{Job, "M84 X Y E", printing, ""},
		{Job, "G28 X Y", printing, ""},                 // homing in a file: the job owns the motion
		{Job, "G2 X500 Y-20 I5 J5 E900", printing, ""}, // arcs in a file: left to the firmware too
		{Job, "G29", printing, ""},
		{Job, "M420 S1 Z10", printing, ""},
		{Job, "G10", printing, ""},
		{Job, "G11", printing, ""},
		{Job, "M82", printing, ""},
		{Job, "G1 F1500 E-6.5", printing, ""},
		{Job, "G1 X.5 Y-.25 E+1.", printing, ""},

		{Operator, "M997", idle, RuleFirmwareFlash},
		{Admin, "M502", idle, RuleEEPROM},
		{Admin, "M501", idle, RuleEEPROM},
		{Admin, "M504", idle, RuleEEPROM},
		{Admin, "M92 X80", idle, RuleSettings},
		{Admin, "M301 P1 I1 D1", idle, RuleSettings},
		{Admin, "M906 X800", idle, RuleSettings},
		{Admin, "M851 Z-5", idle, RuleSettings},
		{Admin, "M43 T", idle, RulePinControl},
		{Admin, "M226 P1", idle, RulePinControl},
		{Admin, "M260 A5 B1", idle, RulePinControl},
		{Admin, "M261 A5", idle, RulePinControl},
		{Admin, "M3 S255", idle, RuleLaser},
		{Admin, "M120", idle, RuleEndstops},
		{Admin, "M121", idle, RuleEndstops},
		{Admin, "G92 X0 Y0", idle, RuleCoordinates},
		{Job, "G92 Z10", printing, RuleCoordinates},
		{Admin, "M206 Z5", idle, RuleCoordinates},
		{Admin, "M428", idle, RuleCoordinates},
		{Admin, "G54", idle, RuleCoordinates},
		{Admin, "M302 S0", idle, RuleColdExtrusion},
		{Admin, "M302", idle, RuleColdExtrusion},
		{Operator, "G1 E5", cold, RuleColdExtrusion},
		{Admin, "M29", idle, RuleSDCard},
		{Admin, "M30 x.g", idle, RuleSDCard},
		{Admin, "M928 log.txt", idle, RuleSDCard},
		{Admin, "M22", idle, RuleSDCard},
		{Admin, "M32 x.g", idle, RuleSDCard},
		{Admin, "M23 x.g", idle, RuleSDCard},
		{Admin, "M24", idle, RuleSDCard},
		{Admin, "M80", idle, RulePower},
		{Admin, "M81", idle, RulePower},
		{Admin, "M510", idle, RulePassword},
		{Admin, "M511 P1234", idle, RulePassword},
		{Admin, "M512 P1 S2", idle, RulePassword},
		{Job, "M0", printing, RuleBlockingWait},
		{Admin, "M1", idle, RuleBlockingWait},
		{Job, "M600", printing, RuleBlockingWait},
		{Job, "M999", printing, RuleRestart},
		{Operator, "M104 S261", idle, RuleMaxTemperature},
		{Operator, "M109 R300", idle, RuleMaxTemperature},
		{Operator, "M104 S200 B300 F1", idle, RuleMaxTemperature},
		{Operator, "M190 R111", idle, RuleMaxTemperature},
		{Operator, "M141 S40", idle, RuleMaxTemperature}, // no chamber on this printer
		{Admin, "M303 E-1 S150", idle, RuleMaxTemperature},
		{Admin, "M303 E1 S300", idle, RuleMaxTemperature},
		{Operator, "M104 S-5", idle, RuleBadValue},
		{Operator, "T2", idle, RuleTool},
		{Operator, "T12", idle, RuleTool},
		{Operator, "M104 T2 S200", idle, RuleTool},
		{Operator, "M104 T0.5 S200", idle, RuleTool},
		{Admin, "M303 E3 S200", idle, RuleTool},
		{Operator, "M106 P9 S1", idle, RuleTool},
		{Operator, "G1 X201", idle, RuleVolume},
		{Operator, "G0 Y-1", idle, RuleVolume},
		{Admin, "G1 Z250", idle, RuleVolume},
		{Operator, "G1 E101", idle, RuleExtrude},
		{Operator, "G4 S61", idle, RuleDwell},
		{Job, "G4 P60001", printing, RuleDwell},
		{Job, "G4 P30000 S31", printing, RuleDwell},
		{Job, "G20", printing, RuleInch},
		{Operator, "G28", printing, RuleBusy},
		{Operator, "G1 X10", printing, RuleBusy},
		{Operator, "M84", printing, RuleBusy},
		{Operator, "M18", paused, RuleBusy},
		{Admin, "G29", printing, RuleBusy},
		{Admin, "M155 S0", idle, RuleLinkOwned},
		{Admin, "M113 S0", idle, RuleLinkOwned},
		{Admin, "M110 N100", idle, RuleLinkOwned},
		{Admin, "M118 //action:cancel", idle, RuleHostAction},
		{Admin, gcode.Number(5, "G1 X1"), idle, RuleClientNumbering},
		{Admin, "N5 G1 X1", idle, RuleClientNumbering},
		{Admin, "!!DEBUG:drop_connection", idle, RuleDebug},
		{Admin, "  !!DEBUG", idle, RuleDebug},
		{Admin, "M111 S7", idle, RuleDebug},
		{Operator, "M104 S100 S400", idle, RuleDuplicate},
		{Operator, "M104 S200 s200", idle, RuleDuplicate},
		{Operator, "G1 X1 X2", idle, RuleDuplicate},
		{Operator, "M104 S200 P1", idle, RuleUnknownParam},
		{Operator, "M104 S4e2", idle, RuleAmbiguousNumber},
		{Operator, "M104 S4E2", idle, RuleAmbiguousNumber},
		{Operator, "M104 S0x190", idle, RuleAmbiguousNumber},
		{Job, "G1 X10E2", printing, RuleAmbiguousNumber},
		{Operator, "M104 S 400", idle, RuleMalformed},
		{Operator, "M104 S=400", idle, RuleBadValue},
		{Operator, "M104 S1.2.3", idle, RuleBadValue},
		{Operator, "M104 S+-3", idle, RuleBadValue},
		{Operator, "M106 S256", idle, RuleBadValue},
		{Operator, "M220 S1000", idle, RuleBadValue},
		{Admin, "M303 E0 S200 C50", idle, RuleBadValue},
		{Operator, "G1 X1 " + strings.Repeat("Y1 ", 30), idle, RuleTooLong},
		{Operator, "M117 " + strings.Repeat("a", 90), idle, RuleTooLong},
		{Operator, "G1 X1\x00", idle, RuleBadChar},
		{Operator, "G1 X1\rM104 S400", idle, RuleBadChar},
		{Operator, "G1 X1 ;\rM104 S400", idle, RuleBadChar},
		{Operator, "G1 X1\nM104 S400", idle, RuleBadChar},
		{Operator, "M117 h\u00e9", idle, RuleBadChar},
		{Operator, "M10\\4 S400", idle, RuleBadChar},
		{Operator, "G1 X1\x7f", idle, RuleBadChar},
		{Operator, "M 104 S400", idle, RuleMalformed},
		{Operator, "X10", idle, RuleMalformed},
		{Operator, "G1*abc", idle, RuleMalformed},
		{Operator, "M104.1 S200", idle, RuleNotAllowed},
		{Operator, "M7", idle, RuleNotAllowed},
		{Operator, "M862.3 P \"MK3S\"", idle, RuleNotAllowed},
		{Operator, "G2 X10 Y10 I5", idle, RuleRole},
		{Operator, "M303 E0 S200", idle, RuleRole},
		{Operator, "M204 S1000", idle, RuleRole},
		{Operator, "M503", idle, RuleRole},
		{Job, "M303 E0 S200", printing, RuleRole},
		{Job, "M119", printing, RuleRole},
		{Viewer, "M105", idle, RuleEmergencyOnly},
		{Viewer, "G28", idle, RuleEmergencyOnly},
	}
	for _, tt := range tests {
		_, err := p.CheckLine(tt.role, tt.line, tt.s)
		if got := rule(t, err); got != tt.want {
			t.Errorf("CheckLine(%s, %q, %s) = %v, want rule %q", tt.role, tt.line, tt.s.State, err, tt.want)
		}
	}
}

// Every rule constant appears in a test row or a dedicated test, so none is dead.
func TestEmergencyNeverBlocked(t *testing.T) {
	p := newPolicy(t, Limits{})
	for _, line := range []string{"M112", "M108", "M410", "m112", "  M112 ; stop", "M410 \t",
		"M0112", gcode.Number(5, "M112"), "N5 M112"} {
		for _, r := range allRoles {
			for _, st := range states {
				s := marlin.Status{State: st}
				l, err := p.CheckLine(r, line, s)
				if err != nil {
					t.Fatalf("CheckLine(%s, %q, %s) = %v, want allowed", r, line, st, err)
				}
				if err := p.Check(l, s); err != nil {
					t.Fatalf("Check(%q, %s) = %v, want allowed", l.Raw, st, err)
				}
				if !emergency(l.Word) || strings.ContainsAny(l.Raw, "\r\n\x00\\S") {
					t.Fatalf("CheckLine(%q) sends %q, want the bare emergency command", line, l.Raw)
				}
			}
		}
		if err := p.FileLine(1, line); err != nil {
			t.Errorf("FileLine(%q) = %v, want allowed", line, err)
		}
	}
	// One command per line: an emergency word with anything after it, or a control character
	// anywhere, is refused for every role and by the Filter, and never sent cut down.
	for line, want := range map[string]Rule{
		"M108 M104 S400": RuleOneCommand, "M112 M997": RuleOneCommand, "M112 S400 P1 junk": RuleOneCommand,
		"m410 G1 X1": RuleOneCommand, "M112 junk\\": RuleBadChar, "M410\rM997": RuleBadChar,
		"M112\rM104 S400": RuleBadChar, "M112\x00": RuleBadChar, "M410 \x00": RuleBadChar,
		"M108\xff": RuleBadChar, "G1 X1\x1bM997": RuleBadChar, gcode.Number(5, "M112 M997"): RuleOneCommand,
	} {
		for _, r := range allRoles {
			if _, err := p.CheckLine(r, line, marlin.Status{State: marlin.Operational}); rule(t, err) != want {
				t.Errorf("CheckLine(%s, %q) = %v, want rule %s", r, line, err, want)
			}
		}
		if err := p.FileLine(1, line); rule(t, err) != want {
			t.Errorf("FileLine(%q) = %v, want rule %s", line, err, want)
		}
		if l, err := gcode.Parse(line); err == nil && emergency(l.Word) {
			if err := p.Check(l, marlin.Status{State: marlin.Printing}); err == nil {
				t.Errorf("Check(gcode.Parse(%q)) allowed %q", line, l.Raw)
			}
		}
	}
	// Not emergency commands, though they start alike.
	for _, line := range []string{"M1120", "M112.5", "M41"} {
		l, _ := Parse(line)
		if emergency(l.Word) {
			t.Errorf("Parse(%q) = emergency %s", line, l.Word)
		}
	}
}

// Check (the Filter) applies the rules for everyone but not the role narrowing, and tracks G91.
func TestFilterTracksPositioningMode(t *testing.T) {
	p := newPolicy(t, Limits{})
	check := func(line string, s marlin.Status) error {
		t.Helper()
		l, err := Parse(line)
		if err != nil {
			t.Fatalf("Parse(%q): %v", line, err)
		}
		return p.Check(l, s)
	}
	// Absolute: operator moves must be inside the volume.
	if _, err := p.CheckLine(Operator, "G1 X-10", idle); rule(t, err) != RuleVolume {
		t.Fatalf("absolute G1 X-10 = %v, want outside-volume", err)
	}
	if err := check("G91", idle); err != nil {
		t.Fatal(err)
	}
	if _, err := p.CheckLine(Operator, "G1 X-10", idle); err != nil {
		t.Fatalf("relative G1 X-10 = %v, want allowed", err)
	}
	if _, err := p.CheckLine(Operator, "G1 X-250", idle); rule(t, err) != RuleVolume {
		t.Fatalf("relative G1 X-250 = %v, want outside-volume", err)
	}
	// A refused G90 changes nothing; an allowed one switches back.
	bad, _ := Parse("G90")
	bad.HasNumber = true
	if err := p.Check(bad, idle); err == nil {
		t.Fatal("numbered G90 allowed")
	}
	if _, err := p.CheckLine(Operator, "G1 X-10", idle); err != nil {
		t.Fatalf("after refused G90: relative G1 X-10 = %v, want allowed", err)
	}
	// A link loss means the firmware restarts in absolute mode.
	if err := check("M105", marlin.Status{State: marlin.Disconnected}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.CheckLine(Operator, "G1 X-10", idle); rule(t, err) != RuleVolume {
		t.Fatalf("after reconnect G1 X-10 = %v, want outside-volume", err)
	}
	// The Filter lets file moves and admin calibration through, never the dangerous list.
	for line, want := range map[string]Rule{"G1 X500": "", "M303 E0 S200": "", "M204 S900": "",
		"M999": "", "M104 S300": RuleMaxTemperature, "M500": RuleEEPROM} {
		if got := rule(t, check(line, printing)); got != want {
			t.Errorf("Check(%q) rule %q, want %q", line, got, want)
		}
	}
}

func TestFor(t *testing.T) {
	p := newPolicy(t, Limits{})
	op := p.For(Operator)
	for line, want := range map[string]Rule{"G1 X10": "", "G1 X300": RuleVolume, "M204 S100": RuleRole,
		"M500": RuleEEPROM, "M112": "", "G91": ""} {
		l, err := Parse(line)
		if err != nil {
			t.Fatal(err)
		}
		if got := rule(t, op.Check(l, idle)); got != want {
			t.Errorf("For(Operator).Check(%q) rule %q, want %q", line, got, want)
		}
	}
	// The G91 above went through Check, so relative moves are now bounded by the axis length.
	l, _ := Parse("G1 X-10")
	if err := op.Check(l, idle); err != nil {
		t.Errorf("after G91: G1 X-10 = %v", err)
	}
	if err := p.For(Viewer).Check(l, idle); rule(t, err) != RuleEmergencyOnly {
		t.Errorf("For(Viewer) = %v", err)
	}
}

func TestLimits(t *testing.T) {
	p := newPolicy(t, Limits{})
	got := p.Limits()
	if got.MaxHotend != 260 || got.MaxBed != 110 || got.MaxChamber != 50 || got.Extruders != 1 ||
		got.Max != [3]float64{200, 200, 200} || got.MaxDwell != time.Minute {
		t.Errorf("default limits = %+v", got)
	}
	bad := []Limits{
		{MaxHotend: 500}, {MaxHotend: -1}, {MaxBed: 200}, {MaxChamber: 150}, {Extruders: -1},
		{Extruders: 17}, {Min: [3]float64{0, 0, 10}, Max: [3]float64{10, 10, 5}}, {MaxExtrude: -1},
		{MinExtrudeTemp: 300}, {MaxDwell: -time.Second},
	}
	for _, l := range bad {
		if _, err := New(l); err == nil {
			t.Errorf("New(%+v) accepted bad limits", l)
		}
	}
	hot := newPolicy(t, Limits{MaxHotend: 300, MaxBed: 120})
	if _, err := hot.CheckLine(Operator, "M104 S290", idle); err != nil {
		t.Errorf("with max hotend 300: M104 S290 = %v", err)
	}
	if _, err := hot.CheckLine(Operator, "M140 S121", idle); rule(t, err) != RuleMaxTemperature {
		t.Errorf("with max bed 120: M140 S121 = %v", err)
	}
}

func TestRefusalError(t *testing.T) {
	p := newPolicy(t, Limits{})
	err := p.FileLine(42, "M104 S400 ; too hot")
	var r *Refusal
	if !errors.As(err, &r) || r.Line != 42 || r.Rule != RuleMaxTemperature || r.Command != "M104 S400" {
		t.Fatalf("FileLine = %#v, want line 42, max-temperature, command without comment", err)
	}
	want := `policy: line 42: "M104 S400" refused by rule max-temperature: hotend target 400 °C is above this printer's limit of 260 °C`
	if err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}
	if _, err := p.CheckLine("root", "M105", idle); rule(t, err) != RuleRole {
		t.Errorf("unknown role = %v, want role refusal", err)
	}
}

const prusaFile = `; generated by PrusaSlicer 2.7.1+linux-x64-GTK3 on 2024-01-01 at 10:00:00 UTC
; thumbnail begin 16x16 412
; iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAYAAAAf8/9hAAAA
; thumbnail end
M73 P0 R12
M201 X500 Y500 Z100 E5000 ; sets maximum accelerations, mm/sec^2
M203 X500 Y500 Z10 E60 ; sets maximum feedrates, mm / sec
M204 P500 R1000 T500 ; sets acceleration (P, T) and retract acceleration (R), mm/sec^2
M205 X8.00 Y8.00 Z0.40 E5.00 ; sets the jerk limits, mm/sec
M107
;TYPE:Custom
G90 ; use absolute coordinates
M83 ; extruder relative mode
M104 S215 ; set extruder temp
M140 S60 ; set bed temp
M190 S60 ; wait for bed temp
M109 S215 ; wait for extruder temp
G28 ; home all
G29
G1 Z2.0 F3000 ; move z up little to prevent scratching of surface
G1 X0.1 Y20 Z0.3 F5000.0 ; move to start-line position
G1 X0.1 Y200.0 Z0.3 F1500.0 E15 ; draw 1st line
G92 E0
M486 S0
M486 ACube.stl id:0 copy 0
;LAYER_CHANGE
;Z:0.2
G1 E-.8 F2100
G1 Z.2 F720
G1 X80.427 Y84.602
G1 F1200 E.8
G1 X119.573 Y84.602 E1.3
M106 S255
; objects_info = {"objects":[{"name":"Würfel"}]}
M486 S-1
M140 S0
M104 S0
M107
M84 X Y E
M73 P100 R0
; estimated printing time (normal mode) = 12m 3s
; filament_settings_id = "Prusament PLA"`

const curaFile = ";FLAVOR:Marlin\r\n;TIME:723\r\n;Filament used: 0.5m\r\n;Generated with Cura_SteamEngine 5.6.0\r\n" +
	"M140 S60\r\nM105\r\nM190 S60\r\nM104 S200\r\nM105\r\nM109 S200\r\nM82 ;absolute extrusion mode\r\n" +
	"G28 ;Home\r\nG92 E0\r\nG1 Z2.0 F3000\r\nG1 X10.1 Y20 Z0.28 F5000.0\r\nG1 X10.1 Y200.0 Z0.28 F1500.0 E15\r\n" +
	"G92 E0\r\nM204 S500\r\nM205 X8 Y8\r\n;LAYER:0\r\nG0 F6000 X60.2 Y55.1 Z0.2\r\nG1 F1500 E-6.5\r\n" +
	"M107\r\nM104 S0\r\nM140 S0\r\nG91\r\nG1 E-2 F2700\r\nG1 E-2 Z0.2 F2400\r\nG90\r\nM84 X Y E\r\nM82\r\n"

func TestCheckFile(t *testing.T) {
	p := newPolicy(t, Limits{})
	ctx := context.Background()
	for name, f := range map[string]string{"prusa": prusaFile, "cura": curaFile} {
		if err := p.CheckFile(ctx, strings.NewReader(f)); err != nil {
			t.Errorf("CheckFile(%s) = %v, want allowed", name, err)
		}
	}
	bad := []struct {
		body string
		line int
		rule Rule
	}{
		{"G28\nG1 X1\nM104 S400\nG1 X2\n", 3, RuleMaxTemperature},
		{"G28\r\nM997\r\n", 2, RuleFirmwareFlash},
		{"; header\n\n\nM500", 4, RuleEEPROM},
		{"G28\n; " + strings.Repeat("x", MaxFileLineBytes) + "\nG1\n", 2, RuleMaxFileLine},
		{"G28\nM28 firmware.bin\n", 2, RuleSDCard},
		{"G28\nM42 P13 S255\n", 2, RulePinControl},
		{"G28\nN3 G1 X0*12\n", 2, RuleMalformed},
		{"G28\nM303 E0 S200\n", 2, RuleRole},
	}
	for _, tt := range bad {
		err := p.CheckFile(ctx, strings.NewReader(tt.body))
		var r *Refusal
		if !errors.As(err, &r) || r.Line != tt.line || r.Rule != tt.rule {
			t.Errorf("CheckFile(%.40q) = %v, want line %d rule %s", tt.body, err, tt.line, tt.rule)
		}
	}
	// A reader that fails midway is not a clean file.
	errBoom := errors.New("connection reset")
	r := io.MultiReader(strings.NewReader("G28\nG1 X1"), errReader{errBoom})
	if err := p.CheckFile(ctx, r); !errors.Is(err, errBoom) {
		t.Errorf("CheckFile(failing reader) = %v, want %v", err, errBoom)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := p.CheckFile(cctx, strings.NewReader(strings.Repeat("G1 X1\n", 10000))); !errors.Is(err, context.Canceled) {
		t.Errorf("CheckFile(cancelled) = %v, want context.Canceled", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// Every rule named in the package is reached by some input in this file's tables.
func TestEveryRuleReached(t *testing.T) {
	p := newPolicy(t, Limits{Extruders: 2, MaxChamber: -1})
	reached := map[Rule]bool{}
	inputs := []string{"G1 X1 X2", "M997", "M500", "M92", "M42", "M3", "M120", "G92 X1", "M302",
		"M28", "M575", "M80", "M510", "M0", "M104 S999", "T9", "G4 S999", "G20", "M155",
		"M118 x", "N1 G1", "M111", "M104 S1 P1", "M104 S-1", "M104 S4e2", "G1 " + strings.Repeat("X", 90),
		"G1\x00", "X", "M7", "M303 E0 S1", "M105", "M112 M997"}
	for _, in := range inputs {
		_, err := p.CheckLine(Operator, in, idle)
		if r := rule(t, err); r != "" {
			reached[r] = true
		}
	}
	for _, in := range []string{"G1 X999", "G1 E999", "G28", "M999", "G1 E1"} {
		for _, s := range []marlin.Status{idle, printing, cold} {
			for _, r := range []Role{Operator, Job, Viewer} {
				_, err := p.CheckLine(r, in, s)
				if r := rule(t, err); r != "" {
					reached[r] = true
				}
			}
		}
	}
	reached[RuleMaxFileLine] = true // TestCheckFile
	for _, r := range allRules {
		if !reached[r] {
			t.Errorf("rule %s is never reached by a test input", r)
		}
	}
}

// TestPeopleChecks: a command whose check is for people (the allow-list's people flag) is
// never refused by that check in a stored file, whatever its values, and the check still
// refuses the same line from the operator or admin it is for. So the file check may skip
// those lines' values, and does.
func TestPeopleChecks(t *testing.T) {
	p, err := New(Limits{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for w, cmd := range allowed {
		if !cmd.people {
			continue
		}
		n++
		line := w
		for _, l := range cmd.letters {
			if l != 'O' { // G28 O: "only if not homed", a flag
				line += fmt.Sprintf(" %c9999", l)
			}
		}
		if cmd.roles&rJob != 0 {
			if err := p.FileLine(1, line); err != nil {
				t.Errorf("file line %q refused: %v", line, err)
			}
		}
		refusedOnce := false
		for _, r := range []Role{Operator, Admin} {
			if cmd.roles&roleSets[r] == 0 {
				continue
			}
			_, err := p.CheckLine(r, line, printing)
			if err == nil {
				t.Errorf("%s line %q while printing allowed; its check is for exactly this", r, line)
			}
			refusedOnce = true
		}
		if !refusedOnce {
			t.Errorf("%s: people's check, but no person may send it", w)
		}
	}
	if n == 0 {
		t.Fatal("no command has a check for people")
	}
}
