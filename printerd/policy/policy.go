// Package policy is the one G-code safety policy between every caller and a printer: an
// allow-list of commands, per-printer temperature and volume limits, and named refusals.
//
// Every path that reaches the serial port passes through a Policy: API temperature and move
// calls and the terminal (CheckLine with the caller's role), each line of an uploaded file at
// upload (CheckFile, FileLine) and again when it is sent (the controller's Filter, Check), and
// any raw serial bridge. M112, M108 and M410 are never refused.
package policy

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/printgate/printgate/printerd/gcode"
	"github.com/printgate/printgate/printerd/marlin"
)

// Role is who or what a line comes from. The first three match the roster's roles; Job is the
// lines of a stored file, whoever uploaded it.
type Role string

// Roles.
const (
	Viewer   Role = "viewer"   // may send nothing but the emergency commands
	Operator Role = "operator" // temperatures, fans, homing, moves inside the volume
	Admin    Role = "admin"    // operator + calibration and reports at the terminal
	Job      Role = "job"      // lines of an uploaded file: what slicers emit
)

// MaxCommandBytes is the longest command (comments, line number and checksum removed) the
// policy lets through. The gateway frames every command as "N<n> <cmd>*<cs>", which adds at
// most 15 bytes for line numbers below 10^9, and Marlin keeps only gcode.MaxLineBytes of a line.
const MaxCommandBytes = gcode.MaxLineBytes - 15

// Limits are one printer's safety limits. The zero value of each field means its default, so
// Limits{} is the policy for a stock Marlin printer with a 200 mm cube and one hotend.
type Limits struct {
	// MaxHotend is the highest hotend target in °C. Default 260: Marlin's HEATER_0_MAXTEMP 275
	// minus HOTEND_OVERSHOOT 15. Set 240 or lower for PTFE-lined hotends.
	MaxHotend float64
	// MaxBed is the highest bed target in °C. Default 110: below Marlin's BED_MAXTEMP 150 minus
	// BED_OVERSHOOT 10, hot enough for ABS and ASA, and within what PEI sheets are rated for.
	MaxBed float64
	// MaxChamber is the highest chamber target in °C. Default 50: Marlin's CHAMBER_MAXTEMP 60
	// minus CHAMBER_OVERSHOOT 10. A negative value means the printer has no chamber heater
	// and any chamber target above 0 is refused.
	MaxChamber float64
	// Min and Max are the build volume in mm (X, Y, Z) that operator moves stay inside.
	// Default 0..200 on each axis (Marlin's X_BED_SIZE, Y_BED_SIZE, Z_MAX_POS).
	Min [3]float64
	Max [3]float64
	// Extruders is the number of extruders; T<n> and T parameters must be below it. Default 1.
	Extruders int
	// MaxDwell is the longest G4 pause. Default 60 s: the link waits for the whole dwell.
	MaxDwell time.Duration
	// MaxExtrude is the longest E move in mm that an operator may send at once. Default 100.
	MaxExtrude float64
	// MinExtrudeTemp is the hotend temperature in °C below which operator E moves are refused
	// (Marlin's EXTRUDE_MINTEMP). Default 170.
	MinExtrudeTemp float64
}

// Hard ceilings no configuration may exceed: beyond these no common printer part survives.
const (
	ceilingHotend  = 450
	ceilingBed     = 150
	ceilingChamber = 100
)

// withDefaults returns l with every zero field set to its default.
func (l Limits) withDefaults() Limits {
	if l.MaxHotend == 0 {
		l.MaxHotend = 260
	}
	if l.MaxBed == 0 {
		l.MaxBed = 110
	}
	if l.MaxChamber == 0 {
		l.MaxChamber = 50
	}
	if l.Min == [3]float64{} && l.Max == [3]float64{} {
		l.Max = [3]float64{200, 200, 200}
	}
	if l.Extruders == 0 {
		l.Extruders = 1
	}
	if l.MaxDwell == 0 {
		l.MaxDwell = 60 * time.Second
	}
	if l.MaxExtrude == 0 {
		l.MaxExtrude = 100
	}
	if l.MinExtrudeTemp == 0 {
		l.MinExtrudeTemp = 170
	}
	return l
}

// Validate reports whether the limits (after defaults) make sense.
func (l Limits) Validate() error {
	l = l.withDefaults()
	switch {
	case !(l.MaxHotend > 0 && l.MaxHotend <= ceilingHotend):
		return fmt.Errorf("policy limits: max hotend %v °C outside (0, %d]", l.MaxHotend, ceilingHotend)
	case !(l.MaxBed > 0 && l.MaxBed <= ceilingBed):
		return fmt.Errorf("policy limits: max bed %v °C outside (0, %d]", l.MaxBed, ceilingBed)
	case !(l.MaxChamber <= ceilingChamber):
		return fmt.Errorf("policy limits: max chamber %v °C above %d", l.MaxChamber, ceilingChamber)
	case l.Extruders < 1 || l.Extruders > 16:
		return fmt.Errorf("policy limits: extruder count %d outside 1..16", l.Extruders)
	case l.MaxDwell < 0:
		return fmt.Errorf("policy limits: negative max dwell %v", l.MaxDwell)
	case !(l.MaxExtrude > 0):
		return fmt.Errorf("policy limits: max extrude %v mm must be positive", l.MaxExtrude)
	case !(l.MinExtrudeTemp > 0 && l.MinExtrudeTemp < l.MaxHotend):
		return fmt.Errorf("policy limits: min extrude temperature %v °C outside (0, max hotend)", l.MinExtrudeTemp)
	}
	for i := range 3 {
		if !(l.Min[i] < l.Max[i]) || l.Max[i]-l.Min[i] > 10000 {
			return fmt.Errorf("policy limits: volume axis %c: min %v, max %v", "XYZ"[i], l.Min[i], l.Max[i])
		}
	}
	return nil
}

// Policy checks G-code lines for one printer. It is safe for concurrent use.
//
// Check is the controller's Filter: it sees every line right before it is queued, whatever
// the path, and applies the rules that hold for everyone. CheckAs and CheckLine add the
// narrower rules of the caller's role (volume, busy states) at the API edge.
type Policy struct {
	lim Limits

	// mode is the printer's positioning mode as last queued (G90/G91), learnt in Check.
	// Operator moves are checked against the volume as absolute targets, or bounded by the
	// axis length when relative.
	mode struct {
		sync.Mutex
		relative bool
	}
}

var _ marlin.Filter = (*Policy)(nil)

// New returns the policy for the given limits; zero fields take their defaults.
func New(l Limits) (*Policy, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	return &Policy{lim: l.withDefaults()}, nil
}

// Limits returns the limits in force, defaults filled in.
func (p *Policy) Limits() Limits { return p.lim }

// Check is the controller's Filter: it allows a line if any role may send it (a stored file's
// lines or an admin's), with the temperature limits, the dangerous list and the client
// numbering rules applied to all. The caller's own role is checked earlier with CheckAs; Check
// is the last gate before the serial port. Allowed G90/G91 lines update the positioning mode.
func (p *Policy) Check(l gcode.Line, s marlin.Status) error {
	err := p.check(roleAny, l, s)
	p.track(l, s, err == nil)
	return err
}

// CheckAs checks a parsed line for a caller with the given role.
func (p *Policy) CheckAs(r Role, l gcode.Line, s marlin.Status) error {
	rs, ok := roleSets[r]
	if !ok {
		return refuse(RuleRole, l.Raw, "unknown role %q", string(r))
	}
	return p.check(rs, l, s)
}

// For returns a Filter that checks lines for role r and then as Check does (so it also
// follows G90/G91). Use it where one caller of known role owns a whole stream, such as a raw
// serial bridge for an admin.
func (p *Policy) For(r Role) marlin.Filter { return roleFilter{p, r} }

type roleFilter struct {
	p *Policy
	r Role
}

func (f roleFilter) Check(l gcode.Line, s marlin.Status) error {
	if err := f.p.CheckAs(f.r, l, s); err != nil {
		return err
	}
	return f.p.Check(l, s)
}

// CheckLine parses one line as typed at the terminal or built by the API (see Parse) and
// checks it for the given role. The returned line is what to send: its Raw text has no comment.
func (p *Policy) CheckLine(r Role, text string, s marlin.Status) (gcode.Line, error) {
	l, err := Parse(text)
	if err != nil {
		return gcode.Line{}, err
	}
	return l, p.CheckAs(r, l, s)
}

// track follows the positioning mode of the lines queued to the printer. A printer that is not
// connected will boot (or has booted) in absolute mode.
func (p *Policy) track(l gcode.Line, s marlin.Status, allowed bool) {
	p.mode.Lock()
	defer p.mode.Unlock()
	if !linked(s.State) {
		p.mode.relative = false
	}
	if !allowed {
		return
	}
	switch l.Word {
	case "G90":
		p.mode.relative = false
	case "G91":
		p.mode.relative = true
	}
}

func (p *Policy) relative(s marlin.Status) bool {
	if !linked(s.State) {
		return false
	}
	p.mode.Lock()
	defer p.mode.Unlock()
	return p.mode.relative
}

// linked reports whether the printer has a live link in state st.
func linked(st marlin.State) bool {
	switch st {
	case marlin.Disconnected, marlin.Connecting, marlin.Error, marlin.Halted, "":
		return false
	}
	return true
}

// busy reports whether a job owns the motion system in state st.
func busy(st marlin.State) bool {
	switch st {
	case marlin.Printing, marlin.Pausing, marlin.Cancelling:
		return true
	}
	return false
}

// ErrRefused matches every *Refusal with errors.Is.
var ErrRefused = errors.New("refused by the safety policy")

// Rule names one rule of the policy. Rules are stable identifiers for logs, the audit record
// and API error bodies; docs/safety.md lists each with its reason.
type Rule string

// The rules.
const (
	RuleNotAllowed      Rule = "not-allowed"        // command not on the allow-list
	RuleRole            Rule = "role"               // allowed, but not for this role or path
	RuleFirmwareFlash   Rule = "firmware-flash"     // M997
	RuleEEPROM          Rule = "eeprom"             // M500 M501 M502 M504
	RuleSettings        Rule = "settings"           // steps, PID, currents, probe offsets...
	RulePinControl      Rule = "pin-control"        // M42 M43 M226 M260 M261
	RuleLaser           Rule = "laser-spindle"      // M3 M4 M5
	RuleEndstops        Rule = "endstop-override"   // M211 S0, M120, M121
	RuleCoordinates     Rule = "coordinate-shift"   // G92 X/Y/Z, M206, M428, G53-G59
	RuleColdExtrusion   Rule = "cold-extrusion"     // M302; operator E moves while cold
	RuleSDCard          Rule = "sd-card"            // M20-M34, M524, M928
	RuleBaud            Rule = "baud-change"        // M575
	RulePower           Rule = "power"              // M80 M81
	RulePassword        Rule = "password-lock"      // M510 M511 M512
	RuleBlockingWait    Rule = "blocking-wait"      // M0 M1 M600 M601
	RuleRestart         Rule = "restart"            // M999 in a file
	RuleMaxTemperature  Rule = "max-temperature"    // any heater target above its limit
	RuleTool            Rule = "tool"               // T<n> or T parameter beyond the extruders
	RuleVolume          Rule = "outside-volume"     // operator move outside the build volume
	RuleExtrude         Rule = "extrude-length"     // operator E move longer than MaxExtrude
	RuleDwell           Rule = "dwell"              // G4 longer than MaxDwell
	RuleInch            Rule = "inch-units"         // G20
	RuleBusy            Rule = "busy"               // moves, motors off while a job runs
	RuleLinkOwned       Rule = "link-owned"         // M110 M113 M155: the gateway's link settings
	RuleHostAction      Rule = "host-action"        // M118: can forge //action: lines
	RuleClientNumbering Rule = "client-numbering"   // N.. *cs from a client
	RuleDebug           Rule = "debug"              // !!DEBUG, M111
	RuleDuplicate       Rule = "duplicate-param"    // same letter twice
	RuleUnknownParam    Rule = "unknown-param"      // letter the command does not take here
	RuleBadValue        Rule = "bad-value"          // malformed or out-of-range number
	RuleAmbiguousNumber Rule = "ambiguous-number"   // "S4e2", "S0x190": exponent or hex tricks
	RuleTooLong         Rule = "line-too-long"      // longer than MaxCommandBytes
	RuleBadChar         Rule = "bad-character"      // control, non-ASCII, backslash
	RuleMalformed       Rule = "malformed"          // not a G-code line
	RuleEmergencyOnly   Rule = "viewer-emergency"   // viewers may only send M112/M108/M410
	RuleMaxFileLine     Rule = "file-line-too-long" // a file line (comments included) over the cap
	RuleOneCommand      Rule = "one-command"        // anything after M112/M108/M410 on its line
)

// allRules lists every rule, for tests and Rules.
var allRules = []Rule{
	RuleNotAllowed, RuleRole, RuleFirmwareFlash, RuleEEPROM, RuleSettings, RulePinControl,
	RuleLaser, RuleEndstops, RuleCoordinates, RuleColdExtrusion, RuleSDCard, RuleBaud, RulePower,
	RulePassword, RuleBlockingWait, RuleRestart, RuleMaxTemperature, RuleTool, RuleVolume,
	RuleExtrude, RuleDwell, RuleInch, RuleBusy, RuleLinkOwned, RuleHostAction,
	RuleClientNumbering, RuleDebug, RuleDuplicate, RuleUnknownParam, RuleBadValue,
	RuleAmbiguousNumber, RuleTooLong, RuleBadChar, RuleMalformed, RuleEmergencyOnly,
	RuleMaxFileLine, RuleOneCommand,
}

// Rules returns every rule the policy can refuse a line by.
func Rules() []Rule { return append([]Rule(nil), allRules...) }

// Refusal is the error for a refused line. The HTTP layer maps it to 422 (or 409 for
// RuleBusy) and shows Error() or the fields; it never echoes them as HTML.
type Refusal struct {
	Rule    Rule
	Line    int    // 1-based line number within a file; 0 for a single line
	Command string // the command (comment-free, at most 80 bytes); empty if unparsable
	Reason  string // one sentence saying what is wrong and why
}

func (r *Refusal) Error() string {
	var at string
	if r.Line > 0 {
		at = fmt.Sprintf("line %d: ", r.Line)
	}
	if r.Command != "" {
		return fmt.Sprintf("policy: %s%q refused by rule %s: %s", at, r.Command, r.Rule, r.Reason)
	}
	return fmt.Sprintf("policy: %srefused by rule %s: %s", at, r.Rule, r.Reason)
}

// Is makes errors.Is(err, ErrRefused) true for every refusal.
func (r *Refusal) Is(target error) bool { return target == ErrRefused }

func refuse(rule Rule, cmd, format string, args ...any) *Refusal {
	if len(cmd) > MaxCommandBytes {
		cmd = cmd[:MaxCommandBytes]
	}
	return &Refusal{Rule: rule, Command: cmd, Reason: fmt.Sprintf(format, args...)}
}
