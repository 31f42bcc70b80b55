package marlinsim

// Command execution: Marlin's parser (gcode/parser.cpp) and the handlers the simulator
// implements, with the planner that gives moves their time.

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/printgate/printgate/printerd/gcode"
)

const (
	version   = "2.1.2.4"
	buildDay  = "2024-06-06"
	buildDate = "Jun  6 2024"
	buildTime = "12:00:00"
	uuid      = "cede2a2f-41a2-4748-9b12-c55c62f367ff"
)

// caps are the M115 Cap: lines of a default-config Marlin 2.1 with auto-level, in M115.cpp's
// order. EMERGENCY_PARSER follows Config.
var caps = []struct {
	name string
	on   bool
}{
	{"SERIAL_XON_XOFF", false}, {"BINARY_FILE_TRANSFER", false}, {"EEPROM", true},
	{"VOLUMETRIC", true}, {"AUTOREPORT_POS", false}, {"AUTOREPORT_TEMP", true},
	{"PROGRESS", false}, {"PRINT_JOB", true}, {"AUTOLEVEL", true}, {"RUNOUT", false},
	{"Z_PROBE", true}, {"LEVELING_DATA", true}, {"BUILD_PERCENT", false},
	{"SOFTWARE_POWER", false}, {"TOGGLE_LIGHTS", false}, {"CASE_LIGHT_BRIGHTNESS", false},
	{"EMERGENCY_PARSER", false}, {"HOST_ACTION_COMMANDS", false}, {"PROMPT_SUPPORT", false},
	{"SDCARD", false}, {"REPEAT", false}, {"SD_WRITE", false}, {"AUTOREPORT_SD_STATUS", false},
	{"LONG_FILENAME", false}, {"LFN_WRITE", false}, {"CUSTOM_FIRMWARE_UPLOAD", false},
	{"EXTENDED_M20", false}, {"THERMAL_PROTECTION", true}, {"MOTION_MODES", false},
	{"ARCS", true}, {"BABYSTEPPING", false}, {"EP_BABYSTEP", false},
	{"CHAMBER_TEMPERATURE", false}, {"COOLER_TEMPERATURE", false}, {"MEATPACK", false},
	{"CONFIG_EXPORT", false},
}

// noops are commands this firmware knows and accepts with nothing visible but the ok.
var noops = map[string]bool{
	"G17": true, "G18": true, "G19": true, "G20": true, "G21": true, "G80": true,
	"M17": true, "M18": true, "M84": true, "M73": true, "M75": true, "M76": true, "M77": true,
	"M78": true, "M85": true, "M92": true, "M106": true, "M107": true, "M108": true,
	"M111": true, "M117": true, "M119": true, "M120": true, "M121": true, "M149": true,
	"M200": true, "M201": true, "M203": true, "M204": true, "M205": true, "M206": true,
	"M207": true, "M208": true, "M209": true, "M211": true, "M221": true, "M280": true,
	"M290": true, "M300": true, "M301": true, "M302": true, "M303": true, "M304": true,
	"M420": true, "M500": true, "M501": true, "M502": true, "M503": true, "M504": true,
	"M851": true, "M900": true, "M906": true, "M907": true, "M428": true, "M81": true,
}

// parserText is what GCodeParser::parse() leaves as command_ptr: leading spaces and an
// "N<n>" skipped, everything from the first '*' after the command letter (and the spaces
// before it) cut.
func parserText(buf string) string {
	p := strings.TrimLeft(buf, " ")
	if len(p) >= 2 && (p[0] == 'N' || p[0] == 'n') && numericSigned(p[1]) {
		p = p[2:]
		for len(p) > 0 && p[0] >= '0' && p[0] <= '9' {
			p = p[1:]
		}
		p = strings.TrimLeft(p, " ")
	}
	if len(p) > 1 {
		if i := strings.IndexByte(p[1:], '*'); i >= 0 {
			e := i // index of the byte before '*'
			for e > 0 && p[e] == ' ' {
				e--
			}
			p = p[:e+1]
		}
	}
	return p
}

// execute runs one queued command and sends its ok.
func (c *conn) execute(ctx context.Context, q queued) error {
	text := parserText(q.buf)
	l, perr := gcode.Parse(text)
	known := perr == nil && !l.Empty() && c.known(l.Word)
	c.s.addExec(Exec{
		Line: strings.TrimRight(text, " "), Raw: q.buf, N: q.n, Numbered: q.numbered,
		Unknown: !known, Boot: c.boot, Time: c.wall(c.now),
	})
	if !known {
		c.s.stat(func(st *Stats) { st.UnknownCommand++ })
		c.print(`echo:Unknown command: "` + text + `"`)
		c.ok(q)
		return nil
	}
	noOK, err := c.handle(ctx, l, text)
	if err != nil {
		return err
	}
	if !noOK {
		c.ok(q)
	}
	return nil
}

// known reports whether this firmware has a handler for a command word.
func (c *conn) known(w string) bool {
	switch w {
	case "G0", "G1", "G2", "G3", "G4", "G28", "G29", "G90", "G91", "G92",
		"M82", "M83", "M104", "M105", "M109", "M110", "M112", "M113", "M114", "M115",
		"M118", "M140", "M155", "M190", "M220", "M400", "M410", "M999":
		return true
	case "M0", "M1":
		return c.cfg.EmergencyParser // HAS_RESUME_CONTINUE without a display
	}
	if w[0] == 'T' {
		return true
	}
	return noops[w]
}

// handle runs a known command's handler. noOK is set when the handler answered itself.
func (c *conn) handle(ctx context.Context, l gcode.Line, text string) (noOK bool, err error) {
	num := func(letter byte) (float64, bool) {
		v, ok, err := l.Float(letter)
		return v, ok && err == nil
	}
	switch l.Word {
	case "G0", "G1", "G2", "G3":
		if c.stopped {
			return false, nil
		}
		return false, c.move(ctx, l)
	case "G4":
		// G4.cpp: P is whole milliseconds (value_millis is strtoul), S seconds as a float
		// times 1000, truncated; S wins. Then planner.synchronize() and dwell(), which loops
		// until the time is up: M108, even through the emergency parser, does not end it.
		ms := int64(0)
		if v, ok := l.Param('P'); ok && v != "" {
			ms = strtoul(v)
		}
		if v, ok := l.Param('S'); ok && v != "" {
			f, _ := strconv.ParseFloat(leadingFloat(v), 32)
			// Out of millis_t's range the cast saturates, as on the ARM boards.
			ms = int64(min(max(float32(f)*1000, 0), math.MaxUint32))
		}
		if err := c.synchronize(ctx); err != nil {
			return false, err
		}
		return false, c.dwell(ctx, time.Duration(ms)*time.Millisecond)
	case "G28":
		if err := c.synchronize(ctx); err != nil {
			return false, err
		}
		all := !l.Has('X') && !l.Has('Y') && !l.Has('Z')
		var secs float64
		for i, a := range []byte{'X', 'Y', 'Z'} {
			if all || l.Has(a) {
				rate := 50.0
				if a == 'Z' {
					rate = 4
				}
				secs = max(secs, math.Abs(c.pos[i])/rate)
				c.pos[i] = 0
			}
		}
		return false, c.dwell(ctx, time.Duration((secs+1.5)*float64(time.Second)))
	case "G29":
		if err := c.synchronize(ctx); err != nil {
			return false, err
		}
		return false, c.dwell(ctx, 10*time.Second)
	case "G90":
		c.relXYZ, c.relE = false, false
	case "G91":
		c.relXYZ, c.relE = true, true
	case "M82":
		c.relE = false
	case "M83":
		c.relE = true
	case "G92":
		for i, a := range []byte{'X', 'Y', 'Z', 'E'} {
			if v, ok := num(a); ok {
				c.pos[i] = v
			}
		}
	case "M220":
		if v, ok := num('S'); ok && v > 0 {
			c.feedPct = v
		}
	case "M104", "M140":
		h := hotend
		if l.Word == "M140" {
			h = bed
		} else if t, ok := num('T'); ok && t != 0 {
			c.print(fmt.Sprintf("echo:T%d Invalid extruder", int(t)))
			return false, nil
		}
		if v, ok := num('S'); ok {
			c.setTarget(h, v, text)
		}
	case "M109", "M190":
		h := hotend
		if l.Word == "M190" {
			h = bed
		}
		v, hasS := num('S')
		r, hasR := num('R')
		if !hasS && !hasR {
			return false, nil
		}
		if hasR && !hasS {
			v = r
		}
		c.setTarget(h, v, text)
		return false, c.waitHeater(ctx, h, hasS)
	case "M105":
		c.print("ok" + c.tempReport(""))
		return true, nil
	case "M110":
		if v, ok := l.Param('N'); ok && v != "" {
			c.lastN = int32(strtol(v))
		}
	case "M112":
		c.kill(strM112Kill, "")
		return false, errHalted
	case "M113":
		if v, ok := num('S'); ok {
			c.keepalive = c.interval(time.Duration(min(max(v, 0), 60) * float64(time.Second)))
		} else {
			c.print(fmt.Sprintf("echo:M113 S%d", int(float64(c.keepalive)/float64(c.interval(time.Second))+0.5)))
		}
	case "M114":
		c.print(fmt.Sprintf("X:%.2f Y:%.2f Z:%.2f E:%.2f Count X:%d Y:%d Z:%d",
			c.pos[0], c.pos[1], c.pos[2], c.pos[3],
			int(math.Round(c.pos[0]*80)), int(math.Round(c.pos[1]*80)), int(math.Round(c.pos[2]*400))))
	case "M115":
		c.m115()
	case "M118":
		t := l.Text
		prefix := ""
		for len(t) >= 2 && (t[0] == 'E' || t[0] == 'A' || t[0] == 'P') && t[1] >= '0' && t[1] <= '9' {
			if t[0] == 'E' && t[1] == '1' {
				prefix = "echo:"
			}
			if t[0] == 'A' && t[1] == '1' {
				prefix = "//"
			}
			t = strings.TrimLeft(t[2:], " ")
		}
		c.print(prefix + t)
	case "M155":
		if v, ok := num('S'); ok {
			c.reportIvl = c.interval(time.Duration(min(max(v, 0), 60) * float64(time.Second)))
			c.nextReport = c.now + c.reportIvl
		}
	case "M400":
		return false, c.synchronize(ctx)
	case "M410":
		c.planner = c.planner[:0]
	case "M999":
		c.stopped = false
		if v, ok := num('S'); ok && v != 0 {
			return false, nil
		}
		c.resend()
	case "M0", "M1":
		return false, c.waitForUser(ctx, l)
	default:
		if l.Word[0] == 'T' {
			if n, err := strconv.Atoi(l.Word[1:]); err == nil && n != 0 {
				c.print(fmt.Sprintf("echo:T%d Invalid extruder", n))
			}
		}
	}
	return false, nil
}

// move plans a G0-G3 move, waiting for planner room as buffer_line() does.
func (c *conn) move(ctx context.Context, l gcode.Line) error {
	if f, ok, err := l.Float('F'); ok && err == nil && f > 0 {
		c.feedrate = f / 60
	}
	var d [4]float64
	for i, a := range []byte{'X', 'Y', 'Z', 'E'} {
		v, ok, err := l.Float(a)
		if !ok || err != nil {
			continue
		}
		rel := c.relXYZ
		if a == 'E' {
			rel = c.relE
		}
		target := v
		if rel {
			target = c.pos[i] + v
		}
		d[i] = target - c.pos[i]
		c.pos[i] = target
	}
	dist := math.Sqrt(d[0]*d[0] + d[1]*d[1] + d[2]*d[2])
	if dist == 0 {
		dist = math.Abs(d[3])
	}
	if dist == 0 {
		return nil
	}
	secs := dist / (c.feedrate * c.feedPct / 100)
	dur := c.machine(time.Duration(secs * float64(time.Second)))
	err := c.block(ctx, strBusy, func() (bool, int64) {
		c.retire()
		if len(c.planner) < blockBuffer-1 {
			return true, -1
		}
		return false, c.planner[0]
	})
	if err != nil {
		return err
	}
	start := c.now
	if n := len(c.planner); n > 0 && c.planner[n-1] > start {
		start = c.planner[n-1]
	}
	if dur > 0 {
		c.planner = append(c.planner, start+dur)
	}
	return nil
}

// retire drops finished blocks from the planner.
func (c *conn) retire() {
	i := 0
	for i < len(c.planner) && c.planner[i] <= c.now {
		i++
	}
	if i > 0 {
		c.planner = append(c.planner[:0], c.planner[i:]...)
	}
}

// movesFree is planner.moves_free(): BLOCK_BUFFER_SIZE-1 minus the blocks still planned.
func (c *conn) movesFree() int {
	c.retire()
	return blockBuffer - 1 - len(c.planner)
}

// synchronize is planner.synchronize(): wait until every block has run.
func (c *conn) synchronize(ctx context.Context) error {
	return c.block(ctx, strBusy, func() (bool, int64) {
		c.retire()
		if len(c.planner) == 0 {
			return true, -1
		}
		return false, c.planner[len(c.planner)-1]
	})
}

// strtoul reads an unsigned decimal as C's strtoul does: leading digits only, and a '-' sign
// wraps around, here into Marlin's 32-bit millis_t.
func strtoul(s string) int64 {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimLeft(s, "+-")
	var v uint32
	for i := 0; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		v = v*10 + uint32(s[i]-'0')
	}
	if neg {
		v = -v
	}
	return int64(v)
}

// leadingFloat is the longest prefix of s that strtof would read as a plain decimal.
func leadingFloat(s string) string {
	i := 0
	if i < len(s) && (s[i] == '-' || s[i] == '+') {
		i++
	}
	dot := false
	for ; i < len(s); i++ {
		if s[i] == '.' && !dot {
			dot = true
			continue
		}
		if s[i] < '0' || s[i] > '9' {
			break
		}
	}
	if p := s[:i]; p != "" && p != "-" && p != "+" && p != "." {
		return p
	}
	return "0"
}

// dwell waits d of machine time.
func (c *conn) dwell(ctx context.Context, d time.Duration) error {
	until := c.now + c.machine(d)
	return c.block(ctx, strBusy, func() (bool, int64) {
		return c.now >= until, until
	})
}

// waitForUser is M0/M1: wait for M108 (or the S/P timeout).
func (c *conn) waitForUser(ctx context.Context, l gcode.Line) error {
	until := int64(-1)
	if v, ok, err := l.Float('S'); ok && err == nil {
		until = c.now + c.machine(time.Duration(v*float64(time.Second)))
	}
	if v, ok, err := l.Float('P'); ok && err == nil {
		until = c.now + c.machine(time.Duration(v*float64(time.Millisecond)))
	}
	if err := c.synchronize(ctx); err != nil {
		return err
	}
	c.waitUser = true
	return c.block(ctx, strBusyUser, func() (bool, int64) {
		return !c.waitUser || (until >= 0 && c.now >= until), until
	})
}

// m115 prints the firmware name and capabilities.
func (c *conn) m115() {
	c.print("FIRMWARE_NAME:Marlin " + version + " (" + buildDate + " " + buildTime + ") " +
		"SOURCE_CODE_URL:github.com/MarlinFirmware/Marlin PROTOCOL_VERSION:1.0 " +
		"MACHINE_TYPE:3D Printer KINEMATICS:Cartesian EXTRUDER_COUNT:1 UUID:" + uuid)
	for _, cp := range caps {
		on := cp.on
		if cp.name == "EMERGENCY_PARSER" {
			on = c.cfg.EmergencyParser
		}
		v := "0"
		if on {
			v = "1"
		}
		c.print("Cap:" + cp.name + ":" + v)
	}
}
