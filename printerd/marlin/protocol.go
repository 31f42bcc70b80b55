package marlin

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/printgate/printgate/printerd/gcode"
)

// This file holds the two parsers that see outside input: ParseReply for what the firmware
// says, and Prepare for a G-code line before it is numbered and queued.

// ReplyKind classifies one line from the firmware, in OctoPrint's order: ok first, then
// resend, error, busy, and the rest.
type ReplyKind int

// Reply kinds.
const (
	ReplyInfo     ReplyKind = iota // anything else: boot text, unprefixed output
	ReplyOK                        // "ok", with optional N/P/B (ADVANCED_OK) or temperatures (M105)
	ReplyResend                    // "Resend: n" or "rs n"
	ReplyError                     // "Error:..." or "!!"
	ReplyBusy                      // "echo:busy: ..." or "busy: ..." keepalive
	ReplyEcho                      // "echo:..."
	ReplyStart                     // "start": the firmware booted (reset)
	ReplyFirmware                  // M115's first line: "FIRMWARE_NAME:..."
	ReplyCap                       // M115's "Cap:NAME:0|1"
	ReplyWait                      // "wait" (NO_TIMEOUTS): idle
	ReplyTemp                      // an auto-report or M109/M190 wait line: " T:.. /.. B:.. @:.."
	ReplyAction                    // "//action:..." host action command
)

// HaltKind says whether a reply reports that the firmware stopped.
type HaltKind int

// Halt kinds.
const (
	NoHalt  HaltKind = iota
	Killed           // kill(): "Error:Printer halted. kill() called!" or a thermal "system stopped!"; needs a reset
	Stopped          // stop(): "Error:Printer stopped due to errors..."; M999 recovers
)

// Reply is one parsed firmware line.
type Reply struct {
	Kind ReplyKind
	Raw  string // the line without its line ending

	// For ReplyOK with ADVANCED_OK: the acknowledged line number and the free planner (P) and
	// command buffer (B) slots. Has* say which were present.
	N          int64
	P, B       int
	HasN       bool
	HasP, HasB bool

	// Line is the line number of a ReplyResend.
	Line int64

	// Text is the message of ReplyError, ReplyEcho, ReplyBusy and ReplyAction, prefix removed.
	Text string

	// Temps holds the temperatures found on the line (any kind); nil when there were none.
	Temps *Temps

	// Halt says whether the firmware stopped, and Reason why (for a thermal fault, the fault
	// and the heater: "Thermal Runaway, heater 0").
	Halt   HaltKind
	Reason string

	// Fields are M115's "KEY:value" fields of a ReplyFirmware line; Cap and CapOn the name
	// and value of a ReplyCap line.
	Fields map[string]string
	Cap    string
	CapOn  bool
}

// ParseReply parses one line received from the firmware. It never fails: what it does not
// recognise is ReplyInfo.
func ParseReply(line string) Reply {
	line = strings.TrimRight(line, "\r\n")
	r := Reply{Raw: line}
	s := strings.TrimSpace(line)
	lower := asciiLower(s)
	switch {
	case lower == "ok" || strings.HasPrefix(lower, "ok ") || strings.HasPrefix(lower, "ok\t"):
		r.Kind = ReplyOK
		parseOK(&r, s[2:])
	case strings.HasPrefix(lower, "resend") || strings.HasPrefix(lower, "rs "):
		r.Kind = ReplyResend
		n, ok := resendLine(s)
		if !ok {
			r.Kind = ReplyInfo
			break
		}
		r.Line = n
	case strings.HasPrefix(lower, "error:") || strings.HasPrefix(s, "!!"):
		r.Kind = ReplyError
		if strings.HasPrefix(s, "!!") {
			r.Text = strings.TrimSpace(s[2:])
		} else {
			r.Text = strings.TrimSpace(s[len("error:"):])
		}
		parseHalt(&r)
	case strings.HasPrefix(lower, "echo:busy:") || strings.HasPrefix(lower, "busy:"):
		r.Kind = ReplyBusy
		r.Text = strings.TrimSpace(s[strings.IndexByte(s, ':')+1:])
		if strings.HasPrefix(lower, "echo:") {
			r.Text = strings.TrimSpace(s[len("echo:busy:"):])
		}
	case strings.HasPrefix(lower, "echo:"):
		r.Kind = ReplyEcho
		r.Text = strings.TrimSpace(s[len("echo:"):])
	case s == "start":
		r.Kind = ReplyStart
	case strings.HasPrefix(s, "FIRMWARE_NAME:"):
		r.Kind = ReplyFirmware
		r.Fields = splitFirmware(s)
		return r // the name can hold "T:"-like text; no temperatures here
	case strings.HasPrefix(s, "Cap:"):
		r.Kind = ReplyCap
		rest := s[len("Cap:"):]
		if i := strings.LastIndexByte(rest, ':'); i > 0 {
			r.Cap = strings.TrimSpace(rest[:i])
			r.CapOn = strings.TrimSpace(rest[i+1:]) == "1"
		} else {
			r.Cap = strings.TrimSpace(rest)
		}
		return r
	case lower == "wait":
		r.Kind = ReplyWait
	case strings.HasPrefix(s, "//action:"):
		r.Kind = ReplyAction
		r.Text = strings.TrimSpace(s[len("//action:"):])
		return r
	}
	if r.Kind != ReplyResend && r.Kind != ReplyFirmware && r.Kind != ReplyEcho {
		if t, ok := parseTemps(s); ok {
			r.Temps = &t
			if r.Kind == ReplyInfo {
				r.Kind = ReplyTemp
			}
		}
	}
	return r
}

// parseOK reads the fields after "ok": " N12 P15 B3" or " T:20.0 /0.0 ...".
func parseOK(r *Reply, rest string) {
	for _, f := range strings.Fields(rest) {
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseInt(f[1:], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case 'N':
			r.N, r.HasN = v, true
		case 'P':
			if v >= 0 && v < 1<<20 {
				r.P, r.HasP = int(v), true
			}
		case 'B':
			if v >= 0 && v < 1<<20 {
				r.B, r.HasB = int(v), true
			}
		}
	}
}

// resendLine reads the number of "Resend: 42", "Resend:42", "rs N42" or "rs 42".
func resendLine(s string) (int64, bool) {
	i := strings.IndexAny(s, ": ")
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(strings.TrimLeft(s[i:], ": "))
	if len(f) == 0 {
		return 0, false
	}
	v := strings.TrimPrefix(strings.TrimPrefix(f[0], "N"), "n")
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}

// parseHalt recognises the kill and stop messages of reference A.9.
func parseHalt(r *Reply) {
	t := r.Text
	lt := asciiLower(t)
	switch {
	case strings.Contains(lt, "system stopped"):
		r.Halt = Killed
		msg := t
		if i := strings.Index(lt, ", system stopped"); i >= 0 {
			msg = t[:i]
		}
		heater := ""
		if i := strings.Index(lt, "heater_id:"); i >= 0 {
			heater = strings.TrimSpace(t[i+len("heater_id:"):])
		}
		r.Reason = msg
		if heater != "" {
			r.Reason = fmt.Sprintf("%s, heater %s", msg, heater)
		}
	case strings.Contains(lt, "kill() called") || strings.Contains(lt, "printer halted"):
		r.Halt, r.Reason = Killed, "printer halted: kill() called"
	case strings.Contains(lt, "printer stopped due to errors"):
		r.Halt, r.Reason = Stopped, "printer stopped due to errors (M999 restarts)"
	}
}

// splitFirmware splits M115's first line at "KEY:" words (reference A.8); values may hold
// spaces, as FIRMWARE_NAME does.
func splitFirmware(s string) map[string]string {
	m := map[string]string{}
	type mark struct{ key, val int }
	var marks []mark
	for i := 0; i < len(s); i++ {
		if i > 0 && s[i-1] != ' ' {
			continue
		}
		if s[i] < 'A' || s[i] > 'Z' {
			continue
		}
		j := i + 1
		for j < len(s) && (s[j] >= 'A' && s[j] <= 'Z' || s[j] >= '0' && s[j] <= '9' || s[j] == '_') {
			j++
		}
		if j < len(s) && s[j] == ':' && j-i >= 2 {
			marks = append(marks, mark{i, j + 1})
			i = j
		}
	}
	for k, mk := range marks {
		end := len(s)
		if k+1 < len(marks) {
			end = marks[k+1].key
		}
		m[s[mk.key:mk.val-1]] = strings.TrimSpace(s[mk.val:end])
	}
	return m
}

// maxTools bounds the hotend index taken from a report: Marlin supports up to 8.
const maxTools = 8

// parseTemps reads temperatures with OctoPrint's lenient grammar: "sensor:actual [/target]"
// words, where sensor is T, T<n>, B or C; other sensors (P, L, M, R, W, @) are skipped.
func parseTemps(s string) (Temps, bool) {
	var t Temps
	var cur *Temp
	var multi []Temp
	var haveMulti []bool
	found := false
	i := 0
	for i < len(s) {
		// Find a word start.
		if i > 0 && s[i-1] != ' ' && s[i-1] != '\t' {
			i++
			continue
		}
		j := i
		for j < len(s) && (isWordByte(s[j])) {
			j++
		}
		if j == i || j >= len(s) || s[j] != ':' {
			i++
			continue
		}
		name := s[i:j]
		k := j + 1
		for k < len(s) && s[k] == ' ' {
			k++
		}
		actual, n := leadingFloat(s[k:])
		if n == 0 {
			i = j + 1
			continue
		}
		k += n
		target, hasTarget := 0.0, false
		m := k
		for m < len(s) && s[m] == ' ' {
			m++
		}
		if m < len(s) && s[m] == '/' {
			m++
			for m < len(s) && s[m] == ' ' {
				m++
			}
			if v, n := leadingFloat(s[m:]); n > 0 {
				target, hasTarget = v, true
				k = m + n
			}
		}
		_ = hasTarget
		reading := Temp{Actual: actual, Target: target}
		switch {
		case name == "T":
			r := reading
			cur = &r
			found = true
		case name == "B":
			r := reading
			t.Bed = &r
			found = true
		case name == "C":
			r := reading
			t.Chamber = &r
			found = true
		case name[0] == 'T' && len(name) <= 2 && name[1] >= '0' && name[1] <= '9':
			idx := int(name[1] - '0')
			if idx < maxTools {
				for len(multi) <= idx {
					multi = append(multi, Temp{})
					haveMulti = append(haveMulti, false)
				}
				multi[idx], haveMulti[idx] = reading, true
				found = true
			}
		}
		i = k
	}
	if !found {
		return Temps{}, false
	}
	switch {
	case len(multi) > 0:
		t.Tools = multi
	case cur != nil:
		t.Tools = []Temp{*cur}
	}
	return t, true
}

func isWordByte(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '@'
}

// leadingFloat parses a decimal number at the start of s ("-12.5", "201.35") and returns it
// with the number of bytes it took; 0 bytes means none.
func leadingFloat(s string) (float64, int) {
	j := 0
	if j < len(s) && (s[j] == '-' || s[j] == '+') {
		j++
	}
	digits := 0
	for j < len(s) && s[j] >= '0' && s[j] <= '9' {
		j++
		digits++
	}
	if j < len(s) && s[j] == '.' {
		j++
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
			digits++
		}
	}
	if digits == 0 || j > 32 {
		return 0, 0
	}
	v, err := strconv.ParseFloat(s[:j], 64)
	if err != nil || v != v || v > 1e6 || v < -1e6 {
		return 0, 0
	}
	return v, j
}

// MaxCommandBytes is the longest command Prepare accepts: with "N<n> " (n below 10^9) in
// front and "*<cs>" behind, a line of this length still fits in gcode.MaxLineBytes.
const MaxCommandBytes = gcode.MaxLineBytes - len("N999999999 *255")

// Prepare turns one line of text (terminal, API or file) into the command the controller
// queues: comments stripped, checked by gcode.Parse, no line number or checksum of its own
// (the controller owns numbering), and short enough to fit gcode.MaxLineBytes once numbered.
// A blank or comment-only line returns an empty Line and no error.
func Prepare(s string) (gcode.Line, error) {
	l, err := gcode.Parse(s)
	if err != nil {
		return gcode.Line{}, fmt.Errorf("prepare %q: %w", clip(s), err)
	}
	if l.HasNumber || l.HasChecksum {
		return gcode.Line{}, fmt.Errorf("prepare %q: line numbers and checksums are added by the gateway", clip(s))
	}
	if len(l.Raw) > MaxCommandBytes {
		return gcode.Line{}, fmt.Errorf("prepare %q: command is %d bytes, longer than %d", clip(s), len(l.Raw), MaxCommandBytes)
	}
	return l, nil
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// The protocol engine: numbering and writing lines, the window of lines in flight, oks and
// resends. It runs on the session's goroutine; the in-flight list and the line counter live
// in Controller.tx because Emergency writes too.
//
// Outbound flow, per pump():
//  1. a resend in progress rewrites lines from the history, same number, same text;
//  2. queued lines (connect sequence, polls, terminal and API lines, scripts) get the next
//     number: "N<n> <cmd>*<cs>";
//  3. job lines, each Prepared and passed through the Filter as it is read, none while a
//     blocking command (longRunning: M109, M190, G4, G28...) is in flight; a G4 longer than
//     dwellPiece goes out in pieces of at most that (nextDwellPiece), so a cancel or a
//     pause is never stuck behind more than one;
//
// and only while the window has room: one line without ADVANCED_OK (ping-pong, what
// OctoPrint and Printrun do); with ADVANCED_OK, up to the firmware's free command buffer
// slots (B) and never more than its BUFSIZE (the largest B seen, plus one).

// maxWindow caps the lines in flight whatever the firmware says.
const maxWindow = 16

// window is how many lines may be in flight.
type window struct {
	advanced bool // an ok carried B: ADVANCED_OK
	bufsize  int  // the firmware's BUFSIZE as learned: largest B + 1
	limit    int
}

func (w *window) size() int {
	if !w.advanced || w.limit < 1 {
		return 1
	}
	return w.limit
}

// learn takes the B of an ok: b slots free while the acked line still held its own, with k
// lines of ours still in flight. The firmware holds at most the k lines plus b+1 free slots,
// and never more than BUFSIZE.
func (w *window) learn(b, k, max int) {
	w.advanced = true
	if b+1 > w.bufsize {
		w.bufsize = b + 1
	}
	lim := w.bufsize
	if lim > max {
		lim = max
	}
	if k+b+1 < lim {
		lim = k + b + 1
	}
	if lim < 1 {
		lim = 1
	}
	w.limit = lim
}

// Resend handling (reference A.5, modelled on OctoPrint's).
const (
	maxResends   = 10                     // consecutive requests for one line: stuck
	resendOkWait = 500 * time.Millisecond // OctoPrint's resendOk: the firmware sent no ok
)

type resendVariant int

const (
	variantUnknown   resendVariant = iota
	variantWithOk                  // "Resend: n" then "ok" (Marlin 2.1)
	variantWithoutOk               // "Resend: n" alone (some 2.0.x builds)
)

type resendState struct {
	active    bool  // lines n.. are being rewritten
	n         int64 // the line asked for
	rewritten bool  // line n went out again since the request
	count     int   // consecutive requests for n

	variant   resendVariant
	okPending int       // oks still due for Resend lines; they ack nothing
	waiting   bool      // variant unknown: wait for the ok or the timer before writing
	deadline  time.Time // when to assume the firmware sends no ok

	hold time.Time // with a window: no writes before this (the storm's end)
}

// expectOK notes that a Resend line may be followed by an ok that acks no line.
func (r *resendState) expectOK(now time.Time) {
	switch r.variant {
	case variantWithoutOk:
	case variantWithOk:
		r.okPending++
	default:
		r.okPending++
		r.waiting = true
		r.deadline = now.Add(resendOkWait)
	}
}

// tick learns, when no ok came in time, that this firmware sends none after Resend.
func (r *resendState) tick(now time.Time) bool {
	if r.waiting && !now.Before(r.deadline) {
		r.variant, r.okPending, r.waiting = variantWithoutOk, 0, false
		return true
	}
	return false
}

// writeNew numbers a line and writes it.
func (s *session) writeNew(e *sent) {
	c := s.c
	c.tx.Lock()
	if e.kind == kHello {
		c.tx.maxN, e.n = 0, 0
		s.ackedThrough = 0
		clear(s.hist)
	} else {
		c.tx.maxN++
		e.n = c.tx.maxN
	}
	e.wire = gcode.Number(e.n, e.text)
	s.hist[e.n%histSize] = e
	c.tx.Unlock()
	s.write(e)
}

// write puts one line on the wire and into the in-flight list.
func (s *session) write(e *sent) {
	c := s.c
	c.tx.Lock()
	if c.tx.halted || c.tx.w == nil {
		c.tx.Unlock()
		return
	}
	s.buf = append(append(s.buf[:0], e.wire...), '\n')
	_, err := c.tx.w.Write(s.buf)
	c.tx.wire += int64(len(s.buf))
	if len(c.tx.inflight) == 0 {
		s.waitStart = time.Now()
	}
	c.tx.inflight = append(c.tx.inflight, e)
	c.tx.Unlock()
	if err != nil {
		s.fail(fmt.Errorf("write: %w", err))
		return
	}
	if c.hasSubscribers() {
		c.publish("log", "Send: "+e.wire)
	}
}

// pump writes lines while the window has room.
func (s *session) pump() {
	c := s.c
	for !s.halted && s.end == endNone && !s.rs.waiting {
		c.tx.Lock()
		n, halted, maxN := len(c.tx.inflight), c.tx.halted, c.tx.maxN
		waiting := false
		for _, e := range c.tx.inflight {
			waiting = waiting || longRunning(e.text)
		}
		c.tx.Unlock()
		if halted || n >= s.win.size() {
			return
		}
		if s.cursor >= 0 {
			if !s.rs.hold.IsZero() {
				if time.Now().Before(s.rs.hold) {
					return
				}
				s.rs.hold = time.Time{}
			}
			if s.cursor <= s.ackedThrough {
				s.cursor = s.ackedThrough + 1
			}
			if s.cursor > maxN {
				s.cursor, s.rs.active = -1, false
				continue
			}
			e := s.hist[s.cursor%histSize]
			if e == nil || e.n != s.cursor {
				s.fail(fmt.Errorf("resend line %d: no longer in history", s.cursor))
				return
			}
			if s.cursor == s.rs.n {
				s.rs.rewritten = true
			}
			s.cursor++
			s.write(e)
			continue
		}
		if len(s.queue) > 0 {
			e := s.queue[0]
			s.queue[0] = nil
			s.queue = s.queue[1:]
			s.writeNew(e)
			continue
		}
		if waiting {
			// Nothing of the job goes behind a blocking command (M109, M190, G4, G28...):
			// were it in the firmware's queue, a cancel or pause could not keep it from
			// running once the wait ends.
			return
		}
		e := s.nextJobLine()
		if e == nil {
			return
		}
		s.writeNew(e)
	}
}

// onOK handles an ok. The ok that follows a Resend acks nothing. An ok with N (ADVANCED_OK)
// acks every line up to N: the firmware takes lines strictly in number order, so all of
// them ran, and a rewritten copy of one still in flight will only draw an error. An
// "ok T:" from M105 acks every line up to the poll. Any other ok acks the oldest line.
func (s *session) onOK(r Reply) {
	c := s.c
	s.okLine = r.Raw
	if s.rs.okPending > 0 && !r.HasN && r.Temps == nil {
		s.rs.okPending--
		s.rs.variant, s.rs.waiting = variantWithOk, false
		return
	}
	acked := s.acked[:0]
	c.tx.Lock()
	in := c.tx.inflight
	if r.HasN {
		keep := in[:0]
		for _, e := range in {
			if e.n >= 0 && e.n <= r.N {
				continue
			}
			keep = append(keep, e)
		}
		clear(in[len(keep):])
		c.tx.inflight = keep
		if r.N >= s.ackedThrough && r.N <= c.tx.maxN {
			for n := s.ackedThrough + 1; n <= r.N; n++ {
				if e := s.hist[n%histSize]; e != nil && e.n == n {
					acked = append(acked, e)
				}
			}
			s.ackedThrough = r.N
		}
		if s.cursor >= 0 && s.cursor <= r.N {
			s.cursor = r.N + 1 // the firmware has these already
		}
	} else {
		cut := 0
		if r.Temps != nil {
			for i, e := range in {
				if e.poll {
					cut = i + 1
					break
				}
			}
		}
		if cut == 0 && len(in) > 0 {
			cut = 1
		}
		acked = append(acked, in[:cut]...)
		clear(in[:cut])
		c.tx.inflight = in[cut:]
		for _, e := range acked {
			if e.n > s.ackedThrough {
				s.ackedThrough = e.n
			}
		}
	}
	k := len(c.tx.inflight)
	c.tx.Unlock()
	if r.HasB {
		s.win.learn(r.B, k, c.cfg.MaxInFlight)
	}
	for _, e := range acked {
		s.ack(e)
	}
	clear(acked)
	s.acked = acked
}

// ack runs when the firmware has taken one line.
func (s *session) ack(e *sent) {
	if e.acked {
		return
	}
	e.acked = true
	if e.notify != nil {
		e.notify <- ackResult{reply: strings.TrimSpace(s.okLine)}
		e.notify = nil
	}
	if e.poll {
		s.pollOut = false
	}
	if s.rs.count > 0 && e.n >= s.rs.n {
		s.rs.count = 0
	}
	switch e.kind {
	case kCaps:
		s.capsDone()
	case kReady:
		s.firstReading()
	case kJob:
		s.jobAcked(e)
	case kScript:
		s.scriptAcked()
	case kM999:
		if s.stopped {
			s.stopped = false
			s.c.setState(Operational, "")
		}
	}
}

// onResend handles "Resend: n": the firmware drained its receive buffer and wants line n
// and everything after it again.
//
// Lines that were on the wire when the firmware drained each draw another "Line Number is
// not Last Line Number+1" and "Resend: n" (duplicates), and each such error drains again,
// possibly eating a copy of line n sent in between. So the rewrite waits for a short
// silence (resendQuiet) after the last firmware line: by then every stale line has been
// answered or drained, duplicates that came meanwhile were ignored, and exactly one copy of
// n goes out. An ok N>=n arriving meanwhile (ADVANCED_OK) cancels what it covers.
func (s *session) onResend(n int64) {
	c := s.c
	if s.halted {
		return // no resend after kill
	}
	now := time.Now()
	s.rs.expectOK(now)
	c.tx.Lock()
	defer c.tx.Unlock()
	if c.tx.halted {
		return
	}
	for _, e := range c.tx.inflight {
		if e.kind == kHello {
			// The firmware has not taken our numbering yet: start over from the hello.
			n = 0
			break
		}
	}
	if n > c.tx.maxN || n < 0 {
		c.logf("marlin %s: resend %d for a line not sent yet (last %d): ignored", c.cfg.Name, n, c.tx.maxN)
		return
	}
	if e := s.hist[n%histSize]; c.tx.maxN-n >= histSize || e == nil || e.n != n {
		s.fail(fmt.Errorf("firmware asked to resend line %d, no longer in history", n))
		return
	}
	if s.ackedThrough >= n {
		// An ok came for a line whose N the noise destroyed (the firmware ran it as an
		// un-numbered line); the firmware's count is the truth.
		s.ackedThrough = n - 1
	}
	if s.rs.active && s.rs.n == n && !s.rs.rewritten {
		// A duplicate: line n has not gone out again since the request it repeats.
		s.holdLocked(now)
		return
	}
	if s.rs.n == n {
		s.rs.count++
	} else {
		s.rs.n, s.rs.count = n, 1
	}
	if s.rs.count > maxResends {
		s.fail(fmt.Errorf("communication stuck: %d resend requests for line %d", s.rs.count, n))
		return
	}
	s.rs.active, s.rs.rewritten = true, false
	for i, e := range c.tx.inflight {
		if e.n >= n {
			clear(c.tx.inflight[i:])
			c.tx.inflight = c.tx.inflight[:i]
			break
		}
	}
	s.cursor = n
	s.holdLocked(now)
}

// resendQuiet is the silence after a Resend that ends a resend storm (with a window).
const resendQuiet = 20 * time.Millisecond

// holdLocked delays the rewrite until resendQuiet after now; c.tx must be held.
func (s *session) holdLocked(now time.Time) {
	s.rs.hold = now.Add(resendQuiet)
}

// asciiLower lower-cases ASCII letters only, so byte offsets stay valid in the original.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; c >= 'A' && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
