package marlin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A session is one connection, from open to close. It runs on the Run goroutine and owns
// everything about the connection except the write side (Controller.tx), which Emergency
// shares. Its flow:
//
//  1. open the port (a reset on most boards) and start the reader goroutine; write every
//     heater off at once, unnumbered (firstBytes);
//  2. boot: wait for "start" then a short silence, or BootWait of silence;
//  3. hello: N0 M110 N0, then heaters off (the first commands after the hello, every
//     time), then M115; when M115 is acked: M105, and M155 S<n> if AUTOREPORT_TEMP, else
//     M105 polling; Operational once the first M105 is answered (a reading in hand);
//  4. loop: firmware lines, API requests, a 100 ms tick (timeouts, polling, watchdog, the
//     resend-ok detector), and after each event pump() writes what the window allows;
//  5. end: on ctx done or Disconnect, heaters off (waiting up to 2 s for their ok) and close;
//     on a link error, close at once; the reader goroutine is always waited for.
type session struct {
	c     *Controller
	ctx   context.Context
	link  io.ReadWriteCloser
	lines chan string
	rerr  chan error

	booted   bool
	ready    bool // M115 and the first M105 acked: Operational
	stayedUp bool // reached ready: resets the back-off

	queue        []*sent // numbered lines waiting to be written, in order
	hist         []*sent // the last histSize numbered lines, at n % histSize
	cursor       int64   // next line number to rewrite after a Resend; -1 none
	ackedThrough int64   // every line up to this number has been acked
	rs           resendState
	win          window
	job          *job
	script       int // pause/cancel lines not yet acked

	busySeen   bool
	lastRecv   time.Time
	waitStart  time.Time // when the in-flight list last became non-empty
	timeouts   int
	autoreport bool
	nextPoll   time.Time
	pollOut    bool // an M105 poll is queued or in flight
	fw         map[string]string
	caps       map[string]bool
	tools      int
	chamber    bool
	halted     bool
	stopped    bool // firmware stop(): Error until an M999 is acked
	lastJobPub time.Time
	wd         watchdog

	end    end
	endErr error
	closed bool

	buf   []byte  // write buffer
	acked []*sent // scratch for onOK

	okLine  string  // the ok being handled, for SendAcked
	waiters []*sent // lines of SendAcked callers not yet acked (or already told)
}

// lineKind says where a line came from and what its ok means.
type lineKind int

const (
	kInternal lineKind = iota // heaters off, polling, M155, M113
	kHello                    // N0 M110 N0
	kCaps                     // M115
	kReady                    // the first M105, after M115: its answer makes the printer Operational
	kUser                     // Send
	kJob                      // a line of the job
	kScript                   // pause, resume or cancel script
	kM999                     // M999 sent while stopped
)

// sent is one line on its way to the printer.
type sent struct {
	text  string // the command, comment-free
	n     int64  // line number; -1 for an un-numbered line
	wire  string // what goes on the wire without "\n"
	kind  lineKind
	off   int64 // kJob: file offset after this line
	piece bool  // kJob: a piece of a split G4 other than its last; it acks no line of the file
	poll  bool  // an M105 poll
	acked bool  // an ok came for it already (a line can be taken twice when noise hits its N)

	notify chan<- ackResult // SendAcked's caller; nil once told
}

// histSize is how many numbered lines are kept for resends (OctoPrint keeps 50); it must
// exceed the largest window.
const histSize = 128

func newSession(c *Controller) *session {
	return &session{
		c:      c,
		hist:   make([]*sent, histSize),
		cursor: -1,
		tools:  c.cfg.Extruders,
		win:    window{limit: 1},
		wd:     newWatchdog(c.cfg.Watchdog),
		fw:     map[string]string{},
		caps:   map[string]bool{},
	}
}

func (s *session) run(ctx context.Context) (end, error) {
	c := s.c
	s.ctx = ctx
	c.setState(Connecting, "")
	open := c.cfg.Open
	if open == nil {
		open = func(ctx context.Context) (io.ReadWriteCloser, error) {
			return openSerial(ctx, c.cfg.Port, c.cfg.Baud)
		}
	}
	link, err := open(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return endCtx, nil
		}
		return endLink, fmt.Errorf("open: %w", err)
	}
	s.link = link
	s.lines = make(chan string, 256)
	s.rerr = make(chan error, 1)
	c.logf("marlin %s: reader starting", c.cfg.Name)
	go readLines(link, s.lines, s.rerr)
	defer s.close()

	c.tx.Lock()
	c.tx.w, c.tx.halted, c.tx.maxN, c.tx.inflight = link, false, 0, nil
	c.tx.Unlock()
	if err := s.firstBytes(); err != nil {
		return endLink, err
	}

	if why, err := s.boot(ctx); why != endNone {
		return why, err
	}
	s.hello()

	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	holdT := time.NewTimer(time.Hour)
	defer holdT.Stop()
	s.lastRecv = time.Now()
	for {
		s.pump()
		if s.end != endNone {
			break
		}
		if !s.rs.hold.IsZero() {
			if d := time.Until(s.rs.hold); s.cursor < 0 {
				s.rs.hold = time.Time{} // nothing waits for it
			} else if d > 0 {
				holdT.Reset(d) // else the next firmware line or tick runs pump
			}
		}
		select {
		case <-holdT.C:
		case l, ok := <-s.lines:
			if !ok {
				err := <-s.rerr
				s.fail(fmt.Errorf("read: %w", err))
				break
			}
			s.handle(l)
			// Take what else has arrived before writing again.
			for more := true; more && s.end == endNone; {
				select {
				case l, ok := <-s.lines:
					if !ok {
						err := <-s.rerr
						s.fail(fmt.Errorf("read: %w", err))
						more = false
						break
					}
					s.handle(l)
				default:
					more = false
				}
			}
		case r := <-c.reqs:
			s.request(r)
		case <-c.wake:
			s.emergencySent("emergency stop (M112)")
		case now := <-tick.C:
			s.tick(now)
		case <-ctx.Done():
			s.shutdown("gateway stopping")
			return endCtx, nil
		}
	}
	if s.end == endDisconnect {
		s.shutdown("disconnected")
		return endDisconnect, nil
	}
	if s.end == endReconnect {
		s.shutdown("reconnecting")
		return endReconnect, nil
	}
	s.failJob("link lost: " + s.endErr.Error())
	return endLink, s.endErr
}

// fail ends the session because the link or the protocol cannot go on.
func (s *session) fail(err error) {
	if s.end == endNone {
		s.endErr = err
		s.end = endLink
	}
}

// finish ends the session at the user's request.
func (s *session) finish(why end) {
	if s.end == endNone {
		s.end = why
	}
}

// close closes the link and waits for the reader goroutine to finish.
func (s *session) close() {
	if s.closed {
		return
	}
	s.closed = true
	c := s.c
	s.release(fmt.Errorf("link closed: %w", ErrNotConnected))
	c.tx.Lock()
	c.tx.w = nil
	c.tx.inflight = nil
	c.tx.Unlock()
	s.link.Close()
	for range s.lines {
	}
	c.logf("marlin %s: reader stopped", c.cfg.Name)
}

// firstBytes writes the first bytes of every open: every heater off, before the boot wait
// and the hello, unnumbered (DESIGN invariant 8). A board that does not reset when its port
// opens (native USB on most 32-bit boards) may still be heating from before a crash, and
// Marlin takes an unnumbered line whatever its line counter says; a board that resets loses
// these bytes in its bootloader and turns its heaters off by resetting. The leading line
// break ends a line the previous host may have left half-written; the trailing M108 ends a
// heating wait the firmware may still be in (at once with EMERGENCY_PARSER), so that the
// heaters-off lines queued behind it run. Their oks come during the boot wait, which ignores
// them. OctoPrint too writes its hello as soon as the port is open.
func (s *session) firstBytes() error {
	c := s.c
	var b strings.Builder
	b.WriteString("\n")
	for _, l := range heatersOff(s.tools, c.cfg.Chamber) {
		b.WriteString(l + "\n")
	}
	b.WriteString("M108\n")
	c.tx.Lock()
	_, err := io.WriteString(c.tx.w, b.String())
	c.tx.wire += int64(b.Len())
	c.tx.Unlock()
	if err != nil {
		return fmt.Errorf("heaters off on open: %w", err)
	}
	if c.hasSubscribers() {
		for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
			c.publish("log", "Send: "+l)
		}
	}
	return nil
}

// boot waits for the firmware's "start" and the boot text after it, or for BootWait of
// silence. endLink with a nil error means boot is over.
func (s *session) boot(ctx context.Context) (end, error) {
	c := s.c
	deadline := time.Now().Add(c.cfg.BootWait)
	limit := time.Now().Add(5 * c.cfg.BootWait)
	started := false
	timer := time.NewTimer(c.cfg.BootWait)
	defer timer.Stop()
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				return endLink, fmt.Errorf("boot: read: %w", <-s.rerr)
			}
			c.publish("log", "Recv: "+l)
			r := ParseReply(l)
			if r.Kind == ReplyStart {
				started = true
			}
			quiet := c.cfg.BootWait
			if started {
				quiet = c.cfg.BootWait / 8
			}
			deadline = time.Now().Add(quiet)
			if deadline.After(limit) {
				deadline = limit
			}
			timer.Reset(time.Until(deadline))
		case <-timer.C:
			s.booted = true
			return endNone, nil
		case r := <-c.reqs:
			switch r.kind {
			case reqDisconnect:
				r.reply <- nil
				return endDisconnect, nil
			case reqConnect:
				r.reply <- nil
				return endReconnect, nil
			default:
				r.reply <- fmt.Errorf("printer connecting: %w", ErrBusy)
			}
		case <-c.wake:
		case <-ctx.Done():
			return endCtx, nil
		}
	}
}

// heatersOff is the command list that turns every heater off.
func heatersOff(tools int, chamber bool) []string {
	var out []string
	for t := 0; t < tools; t++ {
		out = append(out, "M104 T"+strconv.Itoa(t)+" S0")
	}
	out = append(out, "M140 S0")
	if chamber {
		out = append(out, "M141 S0")
	}
	return out
}

// rehello forgets everything sent and queues the connect sequence again.
func (s *session) rehello() {
	c := s.c
	c.tx.Lock()
	c.tx.inflight = nil
	c.tx.Unlock()
	s.queue, s.cursor = nil, -1
	variant := s.rs.variant
	s.rs = resendState{variant: variant}
	s.hello()
}

// hello queues the connect sequence: the line number reset, heaters off, M115.
func (s *session) hello() {
	s.queue = append(s.queue, &sent{text: "M110 N0", kind: kHello})
	s.queueHeatersOff(kInternal)
	s.queue = append(s.queue, &sent{text: "M115", kind: kCaps})
}

func (s *session) queueHeatersOff(kind lineKind) {
	for _, l := range heatersOff(s.tools, s.chamber || s.c.cfg.Chamber) {
		s.queue = append(s.queue, &sent{text: l, kind: kind})
	}
}

// capsDone runs when M115 is acked: record firmware and caps, turn off the extra hotends,
// ask for the first reading (M105) and start temperature reports. Operational follows the
// first reading (firstReading).
func (s *session) capsDone() {
	c := s.c
	if n, err := strconv.Atoi(s.fw["EXTRUDER_COUNT"]); err == nil && n > s.tools && n <= maxTools {
		for t := s.tools; t < n; t++ {
			s.queue = append(s.queue, &sent{text: "M104 T" + strconv.Itoa(t) + " S0", kind: kInternal})
		}
		s.tools = n
	}
	// The first reading comes before Operational, as with OctoPrint: clients (Cura's
	// OctoPrint plugin) read temperature.tool0 as soon as the printer is operational.
	s.queue = append(s.queue, &sent{text: "M105", kind: kReady, poll: true})
	s.pollOut = true
	if s.caps["AUTOREPORT_TEMP"] {
		s.autoreport = true
		secs := int(c.cfg.PollInterval / time.Second)
		if secs < 1 {
			secs = 1
		}
		s.queue = append(s.queue, &sent{text: "M155 S" + strconv.Itoa(secs), kind: kInternal})
	} else {
		s.nextPoll = time.Now().Add(c.cfg.PollInterval)
	}
	caps := make(map[string]bool, len(s.caps))
	for k, v := range s.caps {
		caps[k] = v
	}
	c.mu.Lock()
	c.mu.st.Firmware = s.fw["FIRMWARE_NAME"]
	c.mu.st.Caps = caps
	c.mu.Unlock()
}

// firstReading runs when the M105 after M115 is acked: its "ok T:..." has been recorded (the
// reply's temperatures are taken before its ok), and the printer is Operational.
func (s *session) firstReading() {
	s.ready, s.stayedUp = true, true
	s.wd.reset(time.Now())
	s.c.setState(Operational, "")
}

// request serves one API call.
func (s *session) request(r request) {
	r.reply <- s.serve(r)
}

func (s *session) serve(r request) error {
	c := s.c
	switch r.kind {
	case reqConnect:
		s.finish(endReconnect)
		return nil
	case reqDisconnect:
		s.finish(endDisconnect)
		return nil
	}
	if !s.ready {
		return fmt.Errorf("printer connecting: %w", ErrBusy)
	}
	if s.halted {
		return fmt.Errorf("printer halted (reconnect to reset): %w", ErrNotConnected)
	}
	st := c.state()
	switch r.kind {
	case reqSend:
		kind := kUser
		if r.line.Word == "M999" && s.stopped {
			kind = kM999
		}
		e := &sent{text: r.line.Raw, kind: kind, notify: r.acked}
		s.queue = append(s.queue, e)
		if e.notify != nil {
			s.waiters = slices.DeleteFunc(s.waiters, func(w *sent) bool { return w.notify == nil })
			s.waiters = append(s.waiters, e)
		}
		return nil
	case reqStart:
		if st != Operational {
			return fmt.Errorf("start: printer is %s: %w", st, ErrBusy)
		}
		return s.startJob(r.job)
	case reqPause:
		return s.pauseJob()
	case reqResume:
		return s.resumeJob()
	case reqCancel:
		return s.cancelJob()
	}
	return fmt.Errorf("unknown request %d", r.kind)
}

// handle processes one line from the firmware.
func (s *session) handle(line string) {
	c := s.c
	now := time.Now()
	s.lastRecv = now
	s.timeouts = 0
	if !s.rs.hold.IsZero() {
		s.rs.hold = now.Add(resendQuiet) // the storm goes on
	}
	c.publish("log", "Recv: "+line)
	r := ParseReply(line)
	if r.Temps != nil {
		s.temps(*r.Temps, now)
	}
	switch r.Kind {
	case ReplyOK:
		s.onOK(r)
	case ReplyResend:
		s.onResend(r.Line)
	case ReplyError:
		s.onError(r)
	case ReplyBusy:
		if !s.busySeen {
			s.busySeen = true
			s.queue = append(s.queue, &sent{text: "M113 S2", kind: kInternal})
		}
	case ReplyStart:
		if !s.ready {
			// The board finished booting only now (a slow bootloader): start the connect
			// sequence over.
			s.rehello()
			break
		}
		// The board reset under us: whatever was queued is gone.
		s.fail(errors.New("printer reset itself (firmware sent start)"))
	case ReplyFirmware:
		s.fw = r.Fields
	case ReplyCap:
		s.caps[r.Cap] = r.CapOn
	case ReplyEcho:
		if strings.HasPrefix(r.Text, "Unknown command") {
			c.logf("marlin %s: %s", c.cfg.Name, r.Text)
		}
	}
}

// onError handles Error: lines: halts, stops, and the protocol errors that come with a Resend.
func (s *session) onError(r Reply) {
	c := s.c
	switch r.Halt {
	case Killed:
		s.halt(r.Reason)
		return
	case Stopped:
		if !s.stopped {
			s.stopped = true
			s.failJob(r.Reason)
			c.setState(Error, r.Reason)
		}
		return
	}
	lt := asciiLower(r.Text)
	for _, k := range []string{"line number", "checksum", "expected line", "format error", "missing linenumber"} {
		if strings.Contains(lt, k) {
			return // a Resend follows
		}
	}
	c.errorf("marlin %s: firmware error: %s", c.cfg.Name, r.Text)
}

// halt records kill(): nothing more is written (no resend after kill) and the job fails.
func (s *session) halt(reason string) {
	c := s.c
	c.tx.Lock()
	emergency := c.tx.halted // Emergency wrote M112: this is its kill
	c.tx.halted = true
	c.tx.inflight = nil
	c.tx.Unlock()
	if emergency && !s.halted {
		s.emergencySent("emergency stop (M112)")
		return
	}
	if s.halted {
		return // keep the first reason: the thermal line comes before the kill line
	}
	s.halted = true
	s.queue, s.cursor = nil, -1
	s.release(fmt.Errorf("printer halted: %w", ErrNotConnected))
	s.failJob("printer halted: " + reason)
	c.setState(Halted, reason)
	c.publish("alarm", reason)
}

// emergencySent runs after Emergency wrote M112.
func (s *session) emergencySent(reason string) {
	if s.halted {
		return
	}
	s.halted = true
	s.queue, s.cursor = nil, -1
	s.release(fmt.Errorf("printer halted: %w", ErrNotConnected))
	s.failJob(reason)
}

// release tells every SendAcked caller still waiting that its line will not be acked.
func (s *session) release(err error) {
	for _, e := range s.waiters {
		if e.notify != nil {
			e.notify <- ackResult{err: err}
			e.notify = nil
		}
	}
	s.waiters = nil
}

// temps records a temperature report and runs the watchdog over it.
func (s *session) temps(t Temps, now time.Time) {
	c := s.c
	t.Time = now
	if t.Chamber != nil {
		s.chamber = true
	}
	c.mu.Lock()
	if t.Tools == nil {
		t.Tools = c.mu.st.Temps.Tools
	}
	c.mu.st.Temps = t
	c.mu.hist[c.mu.histN%len(c.mu.hist)] = t
	c.mu.histN++
	c.mu.Unlock()
	c.publish("temps", "")
	if reason := s.wd.observe(t, now); reason != "" {
		s.alarm(reason)
	}
}

// alarm is the watchdog's emergency stop.
func (s *session) alarm(reason string) {
	c := s.c
	c.errorf("marlin %s: watchdog alarm: %s", c.cfg.Name, reason)
	if !s.halted {
		if err := c.Emergency(); err != nil {
			c.errorf("marlin %s: watchdog: emergency stop: %v", c.cfg.Name, err)
		}
		s.emergencySent("watchdog: " + reason)
		c.setState(Halted, "watchdog: "+reason)
	}
	c.publish("alarm", "watchdog: "+reason)
}

// tick runs every 100 ms: timeouts, polling, the resend-ok detector, the watchdog, progress.
func (s *session) tick(now time.Time) {
	c := s.c
	s.rs.tick(now)
	if s.ready && !s.autoreport && !s.halted && !s.pollOut && !now.Before(s.nextPoll) {
		s.queue = append(s.queue, &sent{text: "M105", kind: kInternal, poll: true})
		s.pollOut = true
		s.nextPoll = now.Add(c.cfg.PollInterval)
	}
	s.checkTimeout(now)
	if s.ready && !s.halted {
		switch act := s.wd.tick(now, s.job != nil); act.kind {
		case wdAlarm:
			s.alarm(act.reason)
		case wdHeatersOff:
			c.errorf("marlin %s: watchdog: %s; heaters off", c.cfg.Name, act.reason)
			s.queueHeatersOff(kInternal)
			c.publish("alarm", "watchdog: "+act.reason)
		}
	}
	if s.job != nil && now.Sub(s.lastJobPub) >= time.Second {
		s.lastJobPub = now
		c.publish("job", "")
	}
}

// checkTimeout pokes a silent firmware with M105 and gives up after a few tries (OctoPrint:
// 2 when idle, 5 when printing).
func (s *session) checkTimeout(now time.Time) {
	c := s.c
	c.tx.Lock()
	waiting := len(c.tx.inflight) > 0
	var last *sent
	if waiting {
		last = c.tx.inflight[len(c.tx.inflight)-1]
	}
	c.tx.Unlock()
	if !waiting || s.halted {
		return
	}
	limit := c.cfg.Timeout
	if s.busySeen {
		limit = c.cfg.BusyTimeout
	}
	if !s.ready && limit > connectTimeout {
		limit = connectTimeout
	}
	since := s.lastRecv
	if s.waitStart.After(since) {
		since = s.waitStart
	}
	if now.Sub(since) < limit {
		return
	}
	s.timeouts++
	s.lastRecv = now
	max := 2
	if s.job != nil || longRunning(last.text) {
		max = 5
	}
	if s.timeouts > max {
		s.fail(fmt.Errorf("no answer from the printer for %v (%d tries)", time.Duration(s.timeouts)*limit, s.timeouts))
		return
	}
	c.logf("marlin %s: no answer for %v, poking with M105", c.cfg.Name, limit)
	// Written outside the window: if the firmware lost a line, its number makes the firmware
	// ask for a resend; if an ok was lost, the M105's "ok T:" acks everything before it.
	s.writeNew(&sent{text: "M105", kind: kInternal, poll: true})
	s.pollOut = true
}

// connectTimeout bounds the wait for each answer of the connect sequence.
const connectTimeout = 5 * time.Second

// longRunning reports commands whose ok may take long (OctoPrint's longRunningCommands, plus
// the heat-and-wait ones).
func longRunning(cmd string) bool {
	w, _, _ := strings.Cut(cmd, " ")
	switch strings.ToUpper(w) {
	case "G4", "G28", "G29", "G30", "G32", "M400", "M226", "M600", "M109", "M190", "M191", "M303":
		return true
	}
	return false
}

// shutdown turns the heaters off before the link closes (daemon stop, Disconnect), waiting
// up to 2 s for the firmware to take the lines.
func (s *session) shutdown(why string) {
	c := s.c
	s.failJob(why)
	if s.halted || !s.booted {
		return
	}
	s.queue = nil
	s.cursor = -1
	s.job = nil
	s.breakWaitOf(-1) // the heaters-off lines would wait behind an M109 or M190
	off := heatersOff(s.tools, s.chamber || c.cfg.Chamber)
	for _, l := range off {
		s.queue = append(s.queue, &sent{text: l, kind: kInternal})
	}
	s.endErr, s.end = nil, endNone
	deadline := time.NewTimer(2 * time.Second)
	defer deadline.Stop()
	for {
		s.pump()
		c.tx.Lock()
		idle := len(c.tx.inflight) == 0
		c.tx.Unlock()
		if (idle && len(s.queue) == 0) || s.end != endNone {
			return
		}
		select {
		case l, ok := <-s.lines:
			if !ok {
				return
			}
			s.handle(l)
		case <-deadline.C:
			return
		}
	}
}
