package policy

import (
	"math"
	"strconv"
	"strings"

	"github.com/printgate/printgate/printerd/gcode"
	"github.com/printgate/printgate/printerd/marlin"
)

// roleSet is a set of roles as bits.
type roleSet uint8

const (
	rJob roleSet = 1 << iota
	rOperator
	rAdmin

	rJA  = rJob | rAdmin
	rJOA = rJob | rOperator | rAdmin
	rOA  = rOperator | rAdmin
	// roleAny is the Filter's view: a line any role may send. Role-only narrowing (volume,
	// busy states) is not applied to it.
	roleAny = rJOA
)

var roleSets = map[Role]roleSet{Viewer: 0, Operator: rOperator, Admin: rAdmin, Job: rJob}

// command is one allow-list entry.
type command struct {
	roles   roleSet
	letters string // parameter letters the command may carry
	text    bool   // takes free text (M117); letters are not checked
	why     string // for RuleRole: who may send it
	check   func(p *Policy, c *call) *Refusal
	// people: check is for lines a person sends (operator, admin). A stored file's lines
	// (the job role) skip it, so their values are never needed, only their grammar.
	people bool
}

// call is one line being checked.
type call struct {
	l       gcode.Line
	s       marlin.Status
	roles   roleSet
	values  [26]float64 // numeric value of each parameter letter A-Z; empty value is 0
	present [26]bool
}

// interactive reports whether the line comes from a person (terminal, API) rather than only a
// file. The Filter's roleAny is not interactive: it cannot tell the paths apart.
func (c *call) interactive() bool { return c.roles == rOperator || c.roles == rAdmin }

// param returns a parameter's value and whether it was given.
func (c *call) param(letter byte) (float64, bool) {
	return c.values[letter-'A'], c.present[letter-'A']
}

// value returns a parameter's value, 0 when absent.
func (c *call) value(letter byte) float64 { return c.values[letter-'A'] }

func (c *call) has(letter byte) bool { return c.present[letter-'A'] }

func (c *call) refuse(rule Rule, format string, args ...any) *Refusal {
	return refuse(rule, c.l.Raw, format, args...)
}

// allowed is the allow-list: every command not here is refused. Keep docs/safety.md in step.
var allowed = map[string]command{
	"G0":  {roles: rJOA, letters: "XYZEF", check: checkMove, people: true},
	"G1":  {roles: rJOA, letters: "XYZEF", check: checkMove, people: true},
	"G2":  {roles: rJA, letters: "XYZEFIJRP", check: checkMove, people: true, why: "arcs come from files or an admin"},
	"G3":  {roles: rJA, letters: "XYZEFIJRP", check: checkMove, people: true, why: "arcs come from files or an admin"},
	"G4":  {roles: rJOA, letters: "PS", check: checkDwell},
	"G10": {roles: rJA, letters: "S", why: "firmware retraction comes from files"},
	"G11": {roles: rJA, why: "firmware retraction comes from files"},
	"G17": {roles: rJA}, "G18": {roles: rJA}, "G19": {roles: rJA},
	"G21": {roles: rJOA},
	"G28": {roles: rJOA, letters: "XYZO", check: checkMotion, people: true},
	"G29": {roles: rJOA, check: checkMotion, people: true}, // bare only: G29 S<n> saves meshes to EEPROM
	"G90": {roles: rJOA}, "G91": {roles: rJOA},
	"G92": {roles: rJOA, letters: "E"}, // X/Y/Z shifts are RuleCoordinates, see refusals
	"M17": {roles: rJA, letters: "XYZE"},
	"M18": {roles: rJOA, letters: "XYZE", check: checkMotorsOff, people: true},
	"M84": {roles: rJOA, letters: "XYZE", check: checkMotorsOff, people: true},
	"M73": {roles: rJA, letters: "PRQSC", why: "progress comes from files"},
	"M82": {roles: rJOA}, "M83": {roles: rJOA},
	"M104": {roles: rJOA, letters: "SRTBF", check: checkHotend},
	"M109": {roles: rJOA, letters: "SRTBF", check: checkHotend},
	"M140": {roles: rJOA, letters: "S", check: checkBed},
	"M190": {roles: rJOA, letters: "SR", check: checkBed},
	"M141": {roles: rJOA, letters: "S", check: checkChamber},
	"M191": {roles: rJOA, letters: "SR", check: checkChamber},
	"M303": {roles: rAdmin, letters: "ESCUD", check: checkAutotune, why: "PID autotune is an admin's calibration at the terminal"},
	"M105": {roles: rJOA, letters: "TR"},
	"M106": {roles: rJOA, letters: "SP", check: checkFan},
	"M107": {roles: rJOA, letters: "P", check: checkFan},
	"M114": {roles: rJOA, letters: "DER"},
	"M115": {roles: rJOA},
	"M117": {roles: rJOA, text: true},
	"M119": {roles: rAdmin, why: "endstop reports are for admins"},
	"M31":  {roles: rJA},
	"M201": {roles: rJA, letters: "XYZET", why: "acceleration limits come from files (RAM only)"},
	"M203": {roles: rJA, letters: "XYZET", why: "feed rate limits come from files (RAM only)"},
	"M204": {roles: rJA, letters: "PRTS", why: "accelerations come from files (RAM only)"},
	"M205": {roles: rJA, letters: "XYZEBSTJ", why: "jerk settings come from files (RAM only)"},
	"M220": {roles: rJOA, letters: "S", check: checkPercent},
	"M221": {roles: rJOA, letters: "ST", check: checkPercent},
	"M300": {roles: rJA, letters: "SP"},
	"M400": {roles: rJOA},
	"M420": {roles: rJA, letters: "SZ", why: "bed levelling state comes from files"},
	"M486": {roles: rJA, letters: "STPUC", why: "object labels come from files"},
	"M503": {roles: rAdmin, why: "settings reports are for admins"},
	"M900": {roles: rJA, letters: "KT", why: "linear advance comes from files (RAM only)"},
	"M999": {roles: rOA, why: "only a person may restart the printer after an error"},
}

// refusals name the rule for commands that are off the allow-list for everyone and have a
// specific risk. Anything else not on the allow-list is RuleNotAllowed.
var refusals = map[string]struct {
	rule Rule
	why  string
}{}

func init() {
	add := func(rule Rule, why string, words ...string) {
		for _, w := range words {
			refusals[w] = struct {
				rule Rule
				why  string
			}{rule, why}
		}
	}
	add(RuleFirmwareFlash, "firmware updates reboot the board into its bootloader", "M997")
	add(RuleEEPROM, "EEPROM writes persist settings; M502/M501 replace calibration", "M500", "M501", "M502", "M504")
	add(RuleSettings, "steps, PID, currents and offsets can damage drivers or defeat thermal control",
		"M92", "M149", "M200", "M218", "M301", "M304", "M306", "M350", "M665", "M666", "M851",
		"M906", "M907", "M913", "M914")
	add(RulePinControl, "raw pin and I2C control can drive heaters outside thermal protection",
		"M42", "M43", "M226", "M260", "M261")
	add(RuleLaser, "spindle and laser power is not for a printer gateway", "M3", "M4", "M5")
	add(RuleEndstops, "disabling endstops lets the head crash into the frame", "M120", "M121", "M211")
	add(RuleCoordinates, "shifted coordinates defeat the volume limits and software endstops",
		"M206", "M428", "G53", "G54", "G55", "G56", "G57", "G58", "G59")
	add(RuleColdExtrusion, "cold extrusion grinds filament and jams the hotend", "M302")
	add(RuleSDCard, "SD writes and SD prints bypass the gateway's checks",
		"M20", "M21", "M22", "M23", "M24", "M25", "M26", "M27", "M28", "M29", "M30", "M32",
		"M33", "M34", "M524", "M928")
	add(RuleBaud, "a baud change drops the link", "M575")
	add(RulePower, "power supply control can cut the electronics mid-heat", "M80", "M81")
	add(RulePassword, "a password lock locks the gateway out of the printer", "M510", "M511", "M512")
	add(RuleBlockingWait, "it blocks the link until someone presses the printer's knob; use pause",
		"M0", "M1", "M600", "M601", "M125")
	add(RuleLinkOwned, "the gateway owns line numbering, keepalive and temperature reporting",
		"M110", "M113", "M155")
	add(RuleHostAction, "serial echo can forge //action: lines to the host", "M118")
	add(RuleDebug, "debug modes are not for remote use", "M111")
	add(RuleInch, "the limits are in millimetres; no FDM slicer emits inches", "G20")
}

// emergency are never refused for a role or state; only a line that holds more than the
// command alone, or a control character, is (one command per line).
func emergency(word string) bool { return word == "M112" || word == "M108" || word == "M410" }

// check is the rule engine shared by every entry point.
func (p *Policy) check(roles roleSet, l gcode.Line, s marlin.Status) error {
	if emergency(l.Word) {
		if r := checkChars(l.Raw); r != nil {
			return r
		}
		if r := alone(l); r != nil {
			return r
		}
		return nil
	}
	if l.Empty() {
		if l.HasNumber || l.HasChecksum {
			return refuse(RuleClientNumbering, l.Raw, "line numbers and checksums are the gateway's")
		}
		return nil
	}
	if roles == 0 {
		return refuse(RuleEmergencyOnly, l.Raw, "viewers may send only M112, M108 and M410")
	}
	if l.HasNumber || l.HasChecksum {
		return refuse(RuleClientNumbering, l.Raw, "line numbers and checksums are the gateway's")
	}
	if len(l.Raw) > MaxCommandBytes {
		return refuse(RuleTooLong, l.Raw, "command is %d bytes, longer than %d", len(l.Raw), MaxCommandBytes)
	}
	if r := checkChars(l.Raw); r != nil {
		return r
	}
	if l.Word[0] == 'T' {
		return p.checkToolChange(roles, l)
	}
	cmd, ok := allowed[l.Word]
	if !ok {
		if r, ok := refusals[l.Word]; ok {
			return refuse(r.rule, l.Raw, "%s %s", l.Word, r.why)
		}
		return refuse(RuleNotAllowed, l.Raw, "%s is not on the allow-list", l.Word)
	}
	if cmd.roles&roles == 0 {
		if l.Word == "M999" {
			return refuse(RuleRestart, l.Raw, "%s", cmd.why)
		}
		why := cmd.why
		if why == "" {
			why = "not for this role"
		}
		return refuse(RuleRole, l.Raw, "%s: %s", l.Word, why)
	}
	c := &call{l: l, s: s, roles: roles}
	if cmd.text {
		return nil
	}
	if l.Word == "G92" {
		for _, pr := range l.Params {
			if pr.Letter != 'E' {
				return refuse(RuleCoordinates, l.Raw, "G92 may reset only E; shifted coordinates defeat the volume limits and software endstops")
			}
		}
	}
	if r := c.parseParams(cmd); r != nil {
		return r
	}
	if cmd.check != nil && (!cmd.people || c.interactive()) {
		if r := cmd.check(p, c); r != nil {
			return r
		}
	}
	return nil
}

// checkChars refuses what Marlin's stream parser would treat specially.
func checkChars(raw string) *Refusal {
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c < 0x20 && c != '\t' || c >= 0x7f || c == '\\' {
			return refuse(RuleBadChar, "", "byte %d is %q: control, non-ASCII and escape characters are refused", i, c)
		}
	}
	return nil
}

// parseParams validates the parameters of c against cmd: letters A-Z from cmd.letters, each
// at most once, each value empty or a plain decimal number, no exponent or hex tricks.
func (c *call) parseParams(cmd command) *Refusal {
	if c.l.Word == "M486" {
		// "M486 A<name>" labels an object: the rest of the line is a name, harmless text.
		if len(c.l.Params) > 0 && c.l.Params[0].Letter == 'A' {
			return nil
		}
	}
	if r := ambiguous(c.l); r != nil {
		return r
	}
	for _, pr := range c.l.Params {
		if pr.Letter < 'A' || pr.Letter > 'Z' {
			return c.refuse(RuleMalformed, "%q is not a parameter letter", pr.Letter)
		}
		if c.has(pr.Letter) {
			return c.refuse(RuleDuplicate, "parameter %c given twice; firmware builds disagree on which wins", pr.Letter)
		}
		if !strings.ContainsRune(cmd.letters, rune(pr.Letter)) {
			return c.refuse(RuleUnknownParam, "%s does not take parameter %c here", c.l.Word, pr.Letter)
		}
		v, ok := number(pr.Value)
		if !ok {
			return c.refuse(RuleBadValue, "parameter %c: %q is not a plain decimal number", pr.Letter, pr.Value)
		}
		c.present[pr.Letter-'A'] = true
		c.values[pr.Letter-'A'] = v
	}
	return nil
}

// ambiguous refuses a number directly followed by E or X ("S4e2", "S0x190"): C's strtod reads
// those as exponent or hex, the G-code parser as a new parameter. Slicers always put a space.
func ambiguous(l gcode.Line) *Refusal {
	raw := l.Raw
	for i := 1; i < len(raw); i++ {
		switch raw[i] {
		case 'e', 'E', 'x', 'X':
			if p := raw[i-1]; p >= '0' && p <= '9' || p == '.' {
				// The word itself ends in digits ("G1X10" is fine: X follows the word, not a
				// value); only flag after the word.
				if i > len(wordPrefix(raw)) {
					return refuse(RuleAmbiguousNumber, raw, "%q at byte %d follows a number without a space: exponent and hex forms are refused", raw[i], i)
				}
			}
		}
	}
	return nil
}

// wordPrefix returns the command word as written at the start of raw ("g01" of "g01x1").
func wordPrefix(raw string) string {
	j := 1
	for j < len(raw) && (raw[j] >= '0' && raw[j] <= '9' || raw[j] == '.') {
		j++
	}
	return raw[:j]
}

// number parses a parameter value: empty (0) or [+-]digits[.digits] / [+-].digits.
func number(s string) (float64, bool) {
	if s == "" {
		return 0, true
	}
	t := s
	if t[0] == '+' || t[0] == '-' {
		t = t[1:]
	}
	digits, dot := 0, false
	for i := 0; i < len(t); i++ {
		switch c := t[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '.' && !dot:
			dot = true
		default:
			return 0, false
		}
	}
	if digits == 0 || digits > 12 {
		return 0, false
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, false
	}
	return v, true
}

// index reads an optional integer parameter (tool, fan index) and bounds it to [0, n).
func (c *call) index(letter byte, n int, what string) *Refusal {
	v, ok := c.param(letter)
	if !ok {
		return nil
	}
	if v != math.Trunc(v) || v < 0 || v >= float64(n) {
		return c.refuse(RuleTool, "%s %v does not exist (this printer has %d)", what, v, n)
	}
	return nil
}

func (p *Policy) checkToolChange(roles roleSet, l gcode.Line) error {
	n, err := strconv.Atoi(l.Word[1:])
	if err != nil || n < 0 || n >= p.lim.Extruders {
		return refuse(RuleTool, l.Raw, "tool %s does not exist (this printer has %d extruders)", l.Word[1:], p.lim.Extruders)
	}
	c := &call{l: l, roles: roles}
	return nilIfNone(c.parseParams(command{letters: "SF"}))
}

// nilIfNone turns a typed nil *Refusal into a nil error.
func nilIfNone(r *Refusal) error {
	if r == nil {
		return nil
	}
	return r
}

// targets refuses any of the given parameters above max or below 0.
func (c *call) targets(heater string, max float64, letters string) *Refusal {
	for i := 0; i < len(letters); i++ {
		v, ok := c.param(letters[i])
		if !ok {
			continue
		}
		if v < 0 {
			return c.refuse(RuleBadValue, "%s target %v °C is negative", heater, v)
		}
		if v > max {
			if max <= 0 {
				return c.refuse(RuleMaxTemperature, "this printer has no %s heater", heater)
			}
			return c.refuse(RuleMaxTemperature, "%s target %v °C is above this printer's limit of %v °C", heater, v, max)
		}
	}
	return nil
}

func checkHotend(p *Policy, c *call) *Refusal {
	if r := c.index('T', p.lim.Extruders, "hotend"); r != nil {
		return r
	}
	return c.targets("hotend", p.lim.MaxHotend, "SRB")
}

func checkBed(p *Policy, c *call) *Refusal { return c.targets("bed", p.lim.MaxBed, "SR") }

func checkChamber(p *Policy, c *call) *Refusal {
	return c.targets("chamber", p.lim.MaxChamber, "SR")
}

// checkAutotune bounds M303: E-1 is the bed, E-2 the chamber, E0.. the hotends.
func checkAutotune(p *Policy, c *call) *Refusal {
	e := c.value('E')
	var r *Refusal
	switch {
	case e == -1:
		r = c.targets("bed", p.lim.MaxBed, "S")
	case e == -2:
		r = c.targets("chamber", p.lim.MaxChamber, "S")
	default:
		if e != math.Trunc(e) || e < 0 || e >= float64(p.lim.Extruders) {
			return c.refuse(RuleTool, "heater E%v does not exist", e)
		}
		r = c.targets("hotend", p.lim.MaxHotend, "S")
	}
	if r != nil {
		return r
	}
	if n := c.value('C'); n < 0 || n > 20 {
		return c.refuse(RuleBadValue, "autotune cycles %v outside 0..20", n)
	}
	return nil
}

func checkFan(p *Policy, c *call) *Refusal {
	if r := c.index('P', 8, "fan"); r != nil {
		return r
	}
	if v := c.value('S'); v < 0 || v > 255 {
		return c.refuse(RuleBadValue, "fan speed %v outside 0..255", v)
	}
	return nil
}

func checkPercent(p *Policy, c *call) *Refusal {
	if r := c.index('T', p.lim.Extruders, "tool"); r != nil {
		return r
	}
	if v, ok := c.param('S'); ok && (v < 10 || v > 300) {
		return c.refuse(RuleBadValue, "factor %v%% outside 10..300", v)
	}
	return nil
}

func checkDwell(p *Policy, c *call) *Refusal {
	ms, s := c.value('P'), c.value('S')
	if ms < 0 || s < 0 {
		return c.refuse(RuleBadValue, "negative dwell")
	}
	if total := ms/1000 + s; total > p.lim.MaxDwell.Seconds() {
		return c.refuse(RuleDwell, "dwell of %vs is longer than %v: the link would wait for all of it", total, p.lim.MaxDwell)
	}
	return nil
}

// checkMotion refuses operator homing and levelling while a job owns the motion system.
func checkMotion(p *Policy, c *call) *Refusal {
	if busy(c.s.State) {
		return c.refuse(RuleBusy, "%s while %s: pause or cancel the job first", c.l.Word, c.s.State)
	}
	return nil
}

func checkMotorsOff(p *Policy, c *call) *Refusal {
	if busy(c.s.State) || c.s.State == marlin.Paused {
		return c.refuse(RuleBusy, "motors off while %s loses the position of the job", c.s.State)
	}
	return nil
}

// checkMove keeps operator and admin moves inside the build volume and bounds their
// extrusion. File moves are left to the firmware's software endstops (which the policy keeps on).
func checkMove(p *Policy, c *call) *Refusal {
	if r := checkMotion(p, c); r != nil {
		return r
	}
	rel := p.relative(c.s)
	for i, axis := range []byte("XYZ") {
		v, ok := c.param(axis)
		if !ok {
			continue
		}
		lo, hi := p.lim.Min[i], p.lim.Max[i]
		if rel {
			span := hi - lo
			if v < -span || v > span {
				return c.refuse(RuleVolume, "relative %c move of %v mm is longer than the axis (%v mm)", axis, v, span)
			}
			continue
		}
		if v < lo || v > hi {
			return c.refuse(RuleVolume, "%c%v is outside the build volume %v..%v mm", axis, v, lo, hi)
		}
	}
	if e, ok := c.param('E'); ok && e != 0 {
		if math.Abs(e) > p.lim.MaxExtrude {
			return c.refuse(RuleExtrude, "E move of %v mm is longer than %v mm", e, p.lim.MaxExtrude)
		}
		if hot, known := hottest(c.s.Temps); known && hot < p.lim.MinExtrudeTemp {
			return c.refuse(RuleColdExtrusion, "hotend at %v °C is below %v °C", hot, p.lim.MinExtrudeTemp)
		}
	}
	return nil
}

// hottest returns the highest hotend reading, and whether any is known.
func hottest(t marlin.Temps) (float64, bool) {
	if len(t.Tools) == 0 {
		return 0, false
	}
	hot := t.Tools[0].Actual
	for _, tt := range t.Tools[1:] {
		hot = max(hot, tt.Actual)
	}
	return hot, true
}
