package marlinsim

// The firmware's main loop, modelled on MarlinCore.cpp loop() and gcode/queue.cpp:
//
//  1. idle: emergency-parser flags, injected faults, M155 reports, busy keepalives.
//  2. getCommands: while the 4-slot queue has room, read the receive ring through the
//     stream parser; a complete line passes the line-number and checksum checks and is
//     queued, or is answered with Error/Resend after draining the ring.
//  3. advance: run the oldest queued command (it keeps its slot while it runs), then "ok".
//  4. sleep until the next event: a line break arriving, a timer, or news from the reader.
//
// All times are nanoseconds since the connection began; c.now is the firmware's own clock,
// which follows events rather than the moment the Go scheduler wakes us.

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/printgate/printgate/printerd/gcode"
)

const (
	bufSize       = 4  // BUFSIZE
	blockBuffer   = 16 // BLOCK_BUFFER_SIZE
	maxCmdSize    = 96 // MAX_CMD_SIZE
	keepaliveSecs = 2  // DEFAULT_KEEPALIVE_INTERVAL
)

// Marlin's strings (core/language.h, MarlinCore.cpp).
const (
	strErrLineNo     = "Line Number is not Last Line Number+1, Last Line: "
	strErrChecksum   = "checksum mismatch, Last Line: "
	strErrNoChecksum = "No Checksum with line number, Last Line: "
	strErrKilled     = "Error:Printer halted. kill() called!"
	strErrStopped    = "Printer stopped due to errors. Fix the error and use M999 to restart. (Temperature is reset. Set it after restarting)"
	strBusy          = "echo:busy: processing"
	strBusyUser      = "echo:busy: paused for user"
	strM112Kill      = "M112 Shutdown"
)

// errHalted unwinds a handler after kill(): no ok follows.
var errHalted = errors.New("marlinsim: firmware halted")

// queued is one command in the BUFSIZE queue.
type queued struct {
	buf      string // the line buffer as enqueued (C string)
	numbered bool
	n        int64
}

// fw is the firmware state of one connection. Only the goroutine running conn.run touches it.
type fw struct {
	c   *conn
	now int64

	rx     []byte // receive ring contents
	rxHead int
	rxCap  int

	line    []byte // stream parser line buffer
	lineEOL bool   // rest of line ignored (comment or overflow)
	lineEsc bool
	lastN   int32

	queue   []queued
	planner []int64 // end times of planned blocks, ascending

	pos      [4]float64 // X Y Z E
	relXYZ   bool
	relE     bool
	feedrate float64 // mm/s
	feedPct  float64

	keepalive  int64 // interval, connection ns; 0 off
	busy       string
	nextBusy   int64
	reportIvl  int64 // M155 interval; 0 off
	nextReport int64

	waitHeat bool // wait_for_heatup
	waitUser bool // wait_for_user

	stopped bool
	halted  bool
	silent  bool

	ep       epState
	epKill   bool
	epBreak  bool
	epQstop  bool
	boot     int
	triggers []bool // local view of scheduled faults checked
}

func (f *fw) init(c *conn) {
	f.c = c
	f.rxCap = c.cfg.RXBufferBytes - 1
	f.line = make([]byte, 0, maxCmdSize)
	f.feedrate = 1500.0 / 60
	f.feedPct = 100
	f.keepalive = f.interval(keepaliveSecs * time.Second)
}

// machine converts machine time to connection time (TimeScale; 0 is instant).
func (f *fw) machine(d time.Duration) int64 {
	return int64(float64(d) * f.c.cfg.TimeScale)
}

// interval converts a reporting interval to connection time; with TimeScale 0 it stays wall
// time so reports do not flood.
func (f *fw) interval(d time.Duration) int64 {
	if f.c.cfg.TimeScale == 0 {
		return int64(d)
	}
	return f.machine(d)
}

func (f *fw) setNow(t int64) {
	if t > f.now {
		f.now = t
	}
}

// run is the firmware from reset to the end of the link.
func (c *conn) run(ctx context.Context) error {
	c.bootUp()
	for {
		if err := c.idle(); err != nil {
			return err
		}
		if c.halted {
			return c.halt(ctx)
		}
		c.getCommands()
		if c.halted {
			continue
		}
		if len(c.queue) > 0 {
			if err := c.advance(ctx); err != nil {
				return err
			}
			continue
		}
		if err := c.sleep(ctx, c.nextEvent(-1)); err != nil {
			return err
		}
	}
}

// bootUp is setup(): targets off, banner.
func (c *conn) bootUp() {
	boot := 0
	c.s.stat(func(st *Stats) { st.Boots++; boot = st.Boots })
	c.boot = boot
	c.heatersOff("reset")
	c.print("start")
	if boot == 1 {
		c.print("PowerUp")
	} else {
		c.print(" External Reset")
	}
	c.print("Marlin " + version)
	c.print("echo: Last Updated: " + buildDay + " | Author: (printgate marlinsim)")
	c.print("echo:Compiled: " + buildDate)
	c.print("echo: Free Memory: 4863  PlannerBufferBytes: 1536")
	c.print("echo:Hardcoded Default Settings Loaded")
}

// idle is Marlin's idle(): everything that happens between and during commands.
func (c *conn) idle() error {
	if c.busy != "" {
		c.pump() // a handler is running: arriving bytes wait in the ring
	}
	if c.epKill && !c.halted {
		c.epKill = false
		c.kill(strM112Kill, "")
	}
	if c.epQstop {
		c.epQstop = false
		c.planner = c.planner[:0]
	}
	if c.epBreak {
		c.epBreak = false
		c.waitHeat, c.waitUser = false, false
	}
	if err := c.checkFaults(); err != nil {
		return err
	}
	c.in.Lock()
	rerr := c.in.err
	c.in.Unlock()
	if rerr != nil {
		if hostGone(rerr) {
			return errHostClosed
		}
		return rerr
	}
	if c.halted {
		return nil
	}
	if c.reportIvl > 0 && c.now >= c.nextReport {
		c.nextReport = c.now + c.reportIvl
		c.print(c.tempReport(""))
	}
	if c.busy != "" && c.keepalive > 0 && c.now >= c.nextBusy {
		c.nextBusy = c.now + c.keepalive
		c.print(c.busy)
	}
	return nil
}

// checkFaults fires injected and scheduled faults.
func (c *conn) checkFaults() error {
	s := c.s
	s.faults.Lock()
	fire := s.faults.pending
	s.faults.pending = nil
	for i, t := range c.cfg.Faults {
		if s.faults.fired[i] {
			continue
		}
		// Line triggers fire between commands, never inside a handler.
		atLine := t.AtLine > 0 && c.busy == "" && s.executedCount() >= t.AtLine
		if atLine || (t.After > 0 && c.now >= int64(t.After)) {
			s.faults.fired[i] = true
			fire = append(fire, t.Fault)
		}
	}
	s.faults.Unlock()
	for _, ft := range fire {
		s.logf("marlinsim: fault %v", ft)
		switch ft {
		case FaultDisconnect:
			return ErrDisconnected
		case FaultSilence:
			c.halted, c.silent = true, true
		case FaultRunaway:
			c.thermalError(hotend, "Thermal Runaway")
		case FaultBedRunaway:
			c.thermalError(bed, "Thermal Runaway")
		case FaultMaxTemp:
			c.s.heat.Lock()
			c.s.heat.h[hotend].actual = c.s.heat.h[hotend].maxTemp + 1
			c.s.heat.h[hotend].at = c.wall(c.now)
			c.s.heat.Unlock()
			c.thermalError(hotend, "MAXTEMP triggered")
		case FaultStop:
			c.stop()
		}
	}
	return nil
}

// nextFaultTime is the earliest pending timed trigger, or -1.
func (c *conn) nextFaultTime() int64 {
	next := int64(-1)
	c.s.faults.Lock()
	defer c.s.faults.Unlock()
	for i, t := range c.cfg.Faults {
		if !c.s.faults.fired[i] && t.After > 0 {
			next = minEvent(next, int64(t.After))
		}
	}
	return next
}

// minEvent is the earlier of two event times, where -1 means none.
func minEvent(a, b int64) int64 {
	if a < 0 {
		return b
	}
	if b < 0 || a < b {
		return a
	}
	return b
}

// nextEvent is the next time the firmware must look around: the given handler event, a line
// arriving (if it can read one or the emergency parser wants it), a report, a fault timer.
func (c *conn) nextEvent(handler int64) int64 {
	next := handler
	// The main loop reads lines as they arrive; inside a handler only the emergency parser
	// cares about them.
	if (c.busy == "" && len(c.queue) < bufSize) || c.cfg.EmergencyParser {
		c.in.Lock()
		if c.in.eolHead < len(c.in.eolAt) {
			next = minEvent(next, c.in.eolAt[c.in.eolHead])
		}
		c.in.Unlock()
	}
	if c.reportIvl > 0 {
		next = minEvent(next, c.nextReport)
	}
	if c.busy != "" && c.keepalive > 0 {
		next = minEvent(next, c.nextBusy)
	}
	return minEvent(next, c.nextFaultTime())
}

// sleep waits until the firmware time until (-1: until something happens).
func (c *conn) sleep(ctx context.Context, until int64) error {
	w := c.wallNS()
	if until >= 0 && w >= until {
		c.setNow(until)
		return nil
	}
	var tc <-chan time.Time
	if until >= 0 {
		t := time.NewTimer(time.Duration(until - w))
		defer t.Stop()
		tc = t.C
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-c.wake:
	case <-c.s.faults.wake:
	case <-tc:
		c.setNow(until)
		return nil
	}
	w = c.wallNS()
	if until >= 0 && w > until {
		w = until
	}
	c.setNow(w)
	return nil
}

// block runs Marlin's "while (cond) idle();" inside a handler, with the busy keepalive.
// cond reports whether the wait is over and, if not, when to look again (-1: on events only).
func (c *conn) block(ctx context.Context, busy string, cond func() (bool, int64)) error {
	prev := c.busy
	c.busy = busy
	c.nextBusy = c.now + c.keepalive
	defer func() { c.busy = prev }()
	for {
		if err := c.idle(); err != nil {
			return err
		}
		if c.halted {
			return errHalted
		}
		done, next := cond()
		if done {
			return nil
		}
		if err := c.sleep(ctx, c.nextEvent(next)); err != nil {
			return err
		}
	}
}

// halt is kill()'s endless loop (or a silent firmware): nothing is answered until the link
// ends or drops.
func (c *conn) halt(ctx context.Context) error {
	for {
		if err := c.idle(); err != nil {
			return err
		}
		c.pump()
		c.rx, c.rxHead = c.rx[:0], 0
		if err := c.sleep(ctx, c.nextFaultTime()); err != nil {
			return err
		}
	}
}

// take returns the next byte that has arrived by now and has not been pumped, as the main
// loop reads it the moment it arrives (running the emergency parser on it first).
func (c *conn) take() (x byte, at int64, ok bool) {
	c.in.Lock()
	defer c.in.Unlock()
	if c.in.head >= len(c.in.pend) || c.in.pendAt[c.in.head] > c.now {
		return 0, 0, false
	}
	x, at = c.in.pend[c.in.head], c.in.pendAt[c.in.head]
	c.in.head++
	if c.cfg.EmergencyParser {
		c.emergency(x)
	}
	for c.in.eolHead < len(c.in.eolAt) && c.in.eolAt[c.in.eolHead] <= at {
		c.in.eolHead++
	}
	return x, at, true
}

// dropArrived throws away bytes that arrived by time t (an error drain that catches them).
func (c *conn) dropArrived(t int64) int64 {
	c.in.Lock()
	defer c.in.Unlock()
	var n int64
	for c.in.head < len(c.in.pend) && c.in.pendAt[c.in.head] <= t {
		if c.cfg.EmergencyParser {
			c.emergency(c.in.pend[c.in.head])
		}
		c.in.head++
		n++
	}
	for c.in.eolHead < len(c.in.eolAt) && c.in.eolAt[c.in.eolHead] <= t {
		c.in.eolHead++
	}
	return n
}

// pump moves bytes that arrived while the firmware was not reading (a handler running, the
// queue full) into the receive ring, dropping those that find it full: the serial interrupt.
func (c *conn) pump() {
	c.in.Lock()
	defer c.in.Unlock()
	dropped := 0
	for c.in.head < len(c.in.pend) && c.in.pendAt[c.in.head] <= c.now {
		x := c.in.pend[c.in.head]
		c.in.head++
		if c.cfg.EmergencyParser {
			c.emergency(x)
		}
		if len(c.rx)-c.rxHead < c.rxCap {
			c.rx = append(c.rx, x)
		} else {
			dropped++
		}
	}
	for c.in.eolHead < len(c.in.eolAt) && c.in.eolAt[c.in.eolHead] <= c.now {
		c.in.eolHead++
	}
	if c.in.head > 4096 && c.in.head*2 > len(c.in.pend) {
		n := copy(c.in.pend, c.in.pend[c.in.head:])
		copy(c.in.pendAt, c.in.pendAt[c.in.head:])
		c.in.pend, c.in.pendAt, c.in.head = c.in.pend[:n], c.in.pendAt[:n], 0
	}
	if c.in.eolHead > 1024 && c.in.eolHead*2 > len(c.in.eolAt) {
		n := copy(c.in.eolAt, c.in.eolAt[c.in.eolHead:])
		c.in.eolAt, c.in.eolHead = c.in.eolAt[:n], 0
	}
	if dropped > 0 {
		c.s.stat(func(st *Stats) { st.RXDropped += int64(dropped) })
	}
}

// epState is the emergency parser's state (feature/e_parser.h).
type epState uint8

const (
	epReset epState = iota
	epN
	epM
	epM1
	epM10
	epM108
	epM11
	epM112
	epM4
	epM41
	epM410
	epIgnore
)

// emergency feeds one arriving byte to the emergency parser.
func (c *conn) emergency(x byte) {
	eol := x == '\n' || x == '\r'
	switch c.ep {
	case epReset:
		switch x {
		case ' ', '\n', '\r':
		case 'N':
			c.ep = epN
		case 'M':
			c.ep = epM
		default:
			c.ep = epIgnore
		}
	case epN:
		switch {
		case x >= '0' && x <= '9', x == '-', x == ' ':
		case x == 'M':
			c.ep = epM
		default:
			c.ep = epIgnore
		}
	case epM:
		c.ep = map[byte]epState{'1': epM1, '4': epM4}[x]
		if c.ep == epReset {
			c.ep = epIgnore
		}
	case epM1:
		c.ep = map[byte]epState{'0': epM10, '1': epM11}[x]
		if c.ep == epReset {
			c.ep = epIgnore
		}
	case epM10:
		c.ep = epIgnore
		if x == '8' {
			c.ep = epM108
		}
	case epM11:
		c.ep = epIgnore
		if x == '2' {
			c.ep = epM112
		}
	case epM4:
		c.ep = epIgnore
		if x == '1' {
			c.ep = epM41
		}
	case epM41:
		c.ep = epIgnore
		if x == '0' {
			c.ep = epM410
		}
	}
	if eol {
		switch c.ep {
		case epM108:
			c.epBreak = true
		case epM112:
			c.epKill = true
		case epM410:
			c.epQstop = true
		}
		c.ep = epReset
	}
}

// getCommands is get_serial_commands(): read lines while the queue has room.
// Bytes waiting in the ring are read first; then bytes are read as they arrive.
func (c *conn) getCommands() {
	for len(c.queue) < bufSize && !c.halted {
		var x byte
		at := c.now
		if c.rxHead < len(c.rx) {
			x = c.rx[c.rxHead]
			c.rxHead++
		} else {
			var ok bool
			if x, at, ok = c.take(); !ok {
				break
			}
		}
		if x == '\n' || x == '\r' {
			c.lineDone(at)
		} else {
			c.streamChar(x)
		}
	}
	if len(c.queue) >= bufSize {
		c.pump() // the queue is full: what arrived meanwhile waits in the ring
	}
	if c.rxHead == len(c.rx) {
		c.rx, c.rxHead = c.rx[:0], 0
	} else if c.rxHead > 1024 {
		n := copy(c.rx, c.rx[c.rxHead:])
		c.rx, c.rxHead = c.rx[:n], 0
	}
}

// streamChar is process_stream_char() with PAREN_COMMENTS and GCODE_QUOTED_STRINGS off.
func (c *conn) streamChar(x byte) {
	if c.lineEOL {
		return
	}
	if c.lineEsc {
		c.lineEsc = false
	} else if x == '\\' {
		c.lineEsc = true
		return
	} else if x == ';' {
		c.lineEOL = true
		return
	}
	if x == 0x08 {
		if len(c.line) > 0 {
			c.line = c.line[:len(c.line)-1]
		}
		return
	}
	c.line = append(c.line, x)
	if len(c.line) >= maxCmdSize-1 {
		c.lineEOL = true
	}
}

// lineDone handles a line break: process_line_done() and the checks of get_serial_commands().
// at is when its line break arrived.
func (c *conn) lineDone(at int64) {
	c.lineEOL, c.lineEsc = false, false
	if len(c.line) == 0 {
		return // empty: no ok
	}
	buf := cString(c.line)
	c.line = c.line[:0]
	cmd := strings.TrimLeft(buf, " ")
	q := queued{buf: buf}
	if len(cmd) > 0 && cmd[0] == 'N' {
		m110 := strings.Contains(cmd, "M110")
		npos := 0
		if m110 {
			if j := strings.IndexByte(cmd[4:], 'N'); j >= 0 {
				npos = 4 + j
			}
		}
		n := strtol(cmd[npos+1:])
		if n != int64(c.lastN+1) && !m110 {
			c.lineError(strErrLineNo, at)
			return
		}
		apos := strings.LastIndexByte(cmd, '*')
		if apos < 0 {
			c.lineError(strErrNoChecksum, at)
			return
		}
		if strtol(cmd[apos+1:]) != int64(gcode.Checksum(cmd[:apos])) {
			c.lineError(strErrChecksum, at)
			return
		}
		c.lastN = int32(n)
		q.numbered, q.n = true, n
	}
	if c.stopped {
		if g := strings.IndexByte(cmd, 'G'); g >= 0 {
			switch strtol(cmd[g+1:]) {
			case 0, 1, 2, 3:
				c.print(strErrStopped)
			}
		}
	}
	if !c.cfg.EmergencyParser && len(cmd) >= 4 && cmd[0] == 'M' {
		switch {
		case cmd[1:4] == "108":
			c.waitHeat, c.waitUser = false, false
		case cmd[1:4] == "112":
			c.kill(strM112Kill, "")
			return
		case cmd[1:4] == "410":
			c.planner = c.planner[:0]
		}
	}
	c.queue = append(c.queue, q)
}

// lineError is gcode_line_error(): report, drain the ring, ask for a resend.
// The drain empties the ring and takes whatever else has arrived by at.
func (c *conn) lineError(msg string, at int64) {
	c.print("Error:" + msg + strconv.Itoa(int(c.lastN)))
	drained := int64(len(c.rx)-c.rxHead) + c.dropArrived(at)
	c.rx, c.rxHead = c.rx[:0], 0
	c.resend()
	c.s.stat(func(st *Stats) { st.LineErrors++; st.Drained += drained })
}

// resend is flush_and_request_resend().
func (c *conn) resend() {
	c.print("Resend: " + strconv.Itoa(int(c.lastN+1)))
	if !c.cfg.ResendWithoutOK {
		c.print("ok")
	}
	c.s.stat(func(st *Stats) { st.Resends++ })
}

// advance runs the oldest queued command; it keeps its slot until the handler returns.
func (c *conn) advance(ctx context.Context) error {
	q := c.queue[0]
	err := c.execute(ctx, q)
	if len(c.queue) > 0 {
		c.queue = c.queue[1:]
	}
	if errors.Is(err, errHalted) {
		return nil
	}
	return err
}

// ok is ok_to_send().
func (c *conn) ok(q queued) {
	if !c.cfg.AdvancedOK {
		c.print("ok")
		return
	}
	var b strings.Builder
	b.WriteString("ok")
	if len(q.buf) > 0 && q.buf[0] == 'N' {
		b.WriteString(" N")
		for i := 1; i < len(q.buf) && numericSigned(q.buf[i]); i++ {
			b.WriteByte(q.buf[i])
		}
	}
	b.WriteString(" P")
	b.WriteString(strconv.Itoa(c.movesFree()))
	b.WriteString(" B")
	b.WriteString(strconv.Itoa(bufSize - len(c.queue)))
	c.print(b.String())
}

// kill is kill(): heaters off, messages, then nothing until a reset.
func (c *conn) kill(echo, errLine string) {
	c.heatersOff("kill")
	if errLine != "" {
		c.print(errLine)
	}
	if echo != "" {
		c.print("echo:" + echo)
	}
	c.print(strErrKilled)
	c.planner = c.planner[:0]
	c.halted = true
}

// thermalError is _temp_error(): the serial message, then kill().
func (c *conn) thermalError(h int, msg string) {
	if c.halted {
		return
	}
	id := c.s.heat.h[h].id
	c.kill("", "Error:"+msg+", system stopped! Heater_ID: "+id)
}

// stop is stop(): heaters off, STOPPED until M999.
func (c *conn) stop() {
	if c.halted {
		return
	}
	c.heatersOff("stop")
	if !c.stopped {
		c.print("Error:" + strErrStopped)
		c.stopped = true
	}
}

// cString is the C string a buffer holds: up to the first NUL.
func cString(b []byte) string {
	for i, x := range b {
		if x == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// strtol is C's strtol(s, NULL, 10) with a 32-bit long, as on Marlin's boards.
func strtol(s string) int64 {
	i := 0
	for i < len(s) && (s[i] == ' ' || (s[i] >= '\t' && s[i] <= '\r')) {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	var v int64
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		if v < 1<<40 {
			v = v*10 + int64(s[i]-'0')
		}
	}
	if neg {
		v = -v
	}
	const maxLong, minLong = 1<<31 - 1, -1 << 31
	if v > maxLong {
		return maxLong
	}
	if v < minLong {
		return minLong
	}
	return v
}

func numericSigned(x byte) bool { return (x >= '0' && x <= '9') || x == '-' || x == '+' }
