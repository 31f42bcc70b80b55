// Package marlinsim simulates a printer running Marlin 2.1 firmware on a serial link, for tests, the demo and benchmarks.
//
// A Sim is one printer. Serve runs its firmware on any byte stream (net.Pipe, os.Pipe, a
// socket); OpenPTY exposes it on a pseudo-terminal that a host opens with go.bug.st/serial
// exactly as it would open a USB printer. Every connection starts with a reset, as an Arduino
// style board does when the host opens the port: the firmware boots and prints "start".
//
// # What is simulated
//
// The link and the firmware follow Marlin's sources (gcode/queue.cpp, module/temperature.cpp,
// MarlinCore.cpp, gcode/host/M115.cpp) and ../shared/reference/marlin-protocol.md:
//
//   - The wire: bytes take 10 bits each at Config.Baud in both directions; every line the
//     firmware prints reaches the host Config.OKLatency later (a USB-serial bridge's latency
//     timer, or a native USB round trip).
//   - The receive ring (Config.RXBufferBytes, default 128, holding one byte less, as Marlin's
//     ring buffers do). The firmware reads it only while its command queue has room; bytes that
//     arrive while it is full are dropped, as on a real overrun.
//   - The stream parser: ';' comments end a line's content, '\' escapes a character, backspace
//     erases one, and after MAX_CMD_SIZE-1 = 95 bytes the rest of the line is dropped. Empty
//     lines are ignored and get no "ok". PAREN_COMMENTS is off, as in Marlin's default config.
//   - Line numbers and checksums exactly as get_serial_commands checks them: a line is numbered
//     only when 'N' is its first non-space byte; M110 takes its number from the first 'N' after
//     the command; the sequence is checked before the checksum; the checksum is the XOR of the
//     bytes before the last '*'. A failed line prints "Error:<text>, Last Line: <n>", drains the
//     receive ring, prints "Resend: <n+1>" and (unless Config.ResendWithoutOK, the 2.0.x
//     variant) "ok". Unnumbered lines are never checked.
//   - BUFSIZE 4 command queue and a 16-block planner. A move takes distance/feedrate of machine
//     time; "ok" is sent after a command's handler returns, so it is late for G28, G29, G4,
//     M400, M109 and M190 and for a move that waits for planner room. With Config.AdvancedOK
//     the ok reads "ok N<n> P<planner free> B<queue free>", B one lower than the real free
//     count (an idle printer says "ok N.. P15 B3"). M105 answers "ok T:..." without N/P/B.
//   - "echo:busy: processing" every 2 s (M113) while a handler blocks; temperature reports
//     ("ok T:.. /.. B:.. /.. @:.. B@:..", M155 auto-reports with a leading space, " W:" lines
//     every second inside M109/M190); M115 with FIRMWARE_NAME and Cap: lines; unknown commands
//     answer `echo:Unknown command: "<cmd>"` and ok.
//   - Halt states: M112 and thermal faults call kill() ("Error:Printer halted. kill() called!",
//     heaters off, then silence until the next reset); Inject(FaultStop) calls stop(), left
//     with M999. With Config.EmergencyParser, M108, M112 and M410 act as their bytes arrive,
//     even while the queue is full or a handler blocks.
//   - A thermal model: a hotend (T0) and a bed heat and cool linearly at configurable rates;
//     targets are clamped to Marlin's defaults (hotend 260 °C, bed 140 °C).
//
// # Time
//
// Wire time (Baud, OKLatency) is wall-clock time, so benchmarks measure a real link. Machine
// time (moves, dwells, homing, heating, residency, keepalive and W: intervals, M155 reports,
// the thermal protection periods) is scaled by Config.TimeScale: 1 runs in real time, 0.01 a
// hundred times faster, and 0 makes moves, dwells and heating instant (periodic reports then
// keep their wall-clock intervals). Tests therefore never sleep for long.
//
// Internally the firmware is a discrete-event simulation: each byte gets an arrival time when
// the host writes it, and the firmware handles a line at the moment its last byte arrives, not
// when the Go scheduler gets round to it, so timer jitter does not change what the firmware
// sees (for instance how much of the next line an error drain throws away).
//
// # Injection
//
// Config.Noise corrupts one byte (a single-bit error) of a numbered line with the given
// probability, deterministically from Config.Seed. Only numbered lines are hit, and never their
// first byte nor into a line break or backspace: Marlin cannot detect damage to an unnumbered
// line or to framing, so such noise would test luck, not the host. Every corruption made is
// therefore caught by Marlin's checks and answered with a resend. Config.Faults schedules
// disconnects, silence, thermal runaway, MAXTEMP and stop(); Inject fires one at once.
//
// # The record
//
// The Sim records every line its firmware executed, in order, once each, with the line number
// and checksum removed (Record, Executed, WaitExecuted), and every change of a heater target
// (Targets). A line is recorded when its handler starts (a kill may cut the handler short);
// unknown commands are recorded too, marked Unknown. Both records are safe for concurrent use
// and survive resets.
//
// # A hazard of real Marlin that the simulator keeps
//
// An error drain throws away the receive ring and every byte that has arrived by then. A host
// that keeps several lines in flight (ADVANCED_OK windows, byte counting) can have a line cut
// in two: its head is drained, its tail arrives afterwards as a line of its own without "N",
// which Marlin does not check and runs (usually as an unknown command, answered with an extra
// ok; if the cut falls just before the command word, as that command, which then runs twice).
// This happens only when the line was waiting in the ring, that is while the queue was full
// or a handler ran; a firmware that reads every line as it arrives (instant moves, room in the
// queue) never cuts one, because the next line's first byte arrives after the drain.
//
// # The pty
//
// OpenPTY opens a pty pair with github.com/creack/pty, puts the slave in raw mode and closes
// its own slave descriptor. An inotify watch on the slave device reports every open and close
// by any process, so the simulator sees the host open the port (the firmware resets: a
// moment later it prints "start") and close it (the session ends), however quickly a close
// and a reopen follow each other; each open resets the firmware again, as DTR does on a real
// board, unless Config.NoReset: then the firmware boots at the first open and runs on across
// closes and reopens, as a native-USB board does, dropping what it prints while no host holds
// the port. The count of open descriptors takes every queued event when it is asked, so it is
// exact for whatever happened before: a host's first line is answered however soon after the
// open it comes. (POLLHUP on the master was tried first: it misses a quick close and reopen.) A
// FaultDisconnect closes the master (the host's reads fail, as when a USB cable is pulled)
// and, after Config.ReplugAfter, opens a new pty; Config.Link names a symlink kept pointing at
// the current slave, the way /dev/serial/by-id names follow a replugged printer.
package marlinsim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Sim. The zero value is a default-config Marlin 2.1 printer on an
// unpaced, zero-latency link with instant moves and heating.
type Config struct {
	// Baud paces the wire: each byte takes 10/Baud seconds in each direction (8N1). Zero means
	// no pacing: bytes arrive as soon as they are written.
	Baud int
	// OKLatency delays every line the firmware prints by this much before it goes on the wire:
	// the per-ok USB round trip (about 16 ms for an FTDI bridge at its default latency timer,
	// 1-2 ms for native USB). Zero means none.
	OKLatency time.Duration
	// AdvancedOK turns on ADVANCED_OK: "ok N<n> P<p> B<b>". Off by default, as in Marlin.
	AdvancedOK bool
	// ResendWithoutOK selects the Marlin 2.0.x variant that sends no "ok" after "Resend: n".
	// False is the 2.1 behaviour: "Resend: n" then "ok".
	ResendWithoutOK bool
	// EmergencyParser turns on EMERGENCY_PARSER: M108, M112 and M410 act as soon as their line
	// arrives, whatever the firmware is doing. Off by default, as in Marlin's default config;
	// then only an unnumbered line starting with M108/M112/M410 is handled early, and only when
	// the firmware reads it.
	EmergencyParser bool
	// RXBufferBytes is RX_BUFFER_SIZE, the receive ring (it holds one byte less). Zero means 128.
	RXBufferBytes int
	// TimeScale converts machine time to wall time (see the package doc). Zero means instant
	// moves, dwells and heating; 1 means real time.
	TimeScale float64
	// Noise is the probability, per numbered line the host sends, of a single-bit error in one
	// of its bytes. Zero means none.
	Noise float64
	// Seed seeds the noise; the same seed and the same host bytes give the same corruption.
	Seed uint64
	// Faults are scheduled faults; each fires once per Sim.
	Faults []Trigger
	// Ambient is the room temperature in °C; zero means 25.
	Ambient float64
	// HotendHeatRate, HotendCoolRate, BedHeatRate and BedCoolRate are the heaters' linear
	// rates in °C per second of machine time. Zero means 4, 1.5, 1 and 0.3.
	HotendHeatRate, HotendCoolRate float64
	BedHeatRate, BedCoolRate       float64
	// Link, for OpenPTY only, is a symlink path kept pointing at the current pty slave. Empty
	// means none.
	Link string
	// NoReset, for OpenPTY only, is a board that does not reset when its port is opened
	// (native USB on most 32-bit boards, or a relay in front of the port): the firmware boots
	// once, at the first open, and keeps running while hosts close and reopen the port, its
	// heaters, waits, queue and line counter untouched. What it prints while no host holds
	// the port is lost. False is the Arduino-style board that resets on every open.
	NoReset bool
	// ReplugAfter, for OpenPTY only, is how long the port is gone after a FaultDisconnect
	// before a new pty appears. Zero means 200 ms.
	ReplugAfter time.Duration
	// Logf logs at verbose level; nil discards.
	Logf func(format string, args ...any)
}

// Fault is something that goes wrong on purpose.
type Fault int

// Faults.
const (
	// FaultDisconnect drops the link: Serve closes the stream and returns ErrDisconnected; on a
	// pty the master is closed, as when a USB cable is pulled.
	FaultDisconnect Fault = iota + 1
	// FaultSilence makes the firmware stop answering: it reads and discards everything and
	// prints nothing until the next reset.
	FaultSilence
	// FaultRunaway is a hotend thermal runaway: "Error:Thermal Runaway, system stopped!
	// Heater_ID: 0", then kill().
	FaultRunaway
	// FaultBedRunaway is the same for the bed (Heater_ID: bed).
	FaultBedRunaway
	// FaultMaxTemp is a hotend MAXTEMP: the reading jumps above 275 °C, "Error:MAXTEMP
	// triggered, system stopped! Heater_ID: 0", then kill().
	FaultMaxTemp
	// FaultStop calls stop(): "Error:Printer stopped due to errors. ...", heaters off, moves
	// refused until M999.
	FaultStop
)

func (f Fault) String() string {
	switch f {
	case FaultDisconnect:
		return "disconnect"
	case FaultSilence:
		return "silence"
	case FaultRunaway:
		return "runaway"
	case FaultBedRunaway:
		return "bed-runaway"
	case FaultMaxTemp:
		return "maxtemp"
	case FaultStop:
		return "stop"
	}
	return "fault(?)"
}

// Trigger schedules a Fault: it fires between two commands once the Sim has executed AtLine
// lines in total, across connections (if AtLine > 0), or once After has passed since the
// current connection began (if After > 0), whichever comes first. Each fires once per Sim.
type Trigger struct {
	Fault  Fault
	AtLine int
	After  time.Duration
}

// ErrDisconnected is returned by Serve when a FaultDisconnect dropped the link.
var ErrDisconnected = errors.New("marlinsim: link dropped (injected disconnect)")

// Exec is one executed line.
type Exec struct {
	// Seq counts executed lines from 1, across resets.
	Seq int
	// Line is the command as the firmware's parser saw it: no line number, no checksum, no
	// comment, surrounding spaces removed.
	Line string
	// Raw is the line buffer as the stream parser left it: comment removed, N and checksum
	// still there.
	Raw string
	// N is the line number when Numbered.
	N        int64
	Numbered bool
	// Unknown is set when the firmware answered "Unknown command".
	Unknown bool
	// Boot counts the resets before this line (1 for the first connection).
	Boot int
	Time time.Time
}

// Target is one change of a heater target.
type Target struct {
	Time   time.Time
	Heater string  // "T0" or "bed"
	Target float64 // °C; 0 is off
	Cause  string  // the command that set it, or "kill", "stop", "reset"
}

// Stats counts what crossed the link.
type Stats struct {
	Boots          int // connections served (resets)
	RXBytes        int64
	RXDropped      int64 // bytes lost to receive-ring overruns
	Drained        int64 // bytes thrown away by error drains
	TXBytes        int64
	NoisyLines     int64 // lines corrupted by injected noise
	LineErrors     int64 // "Error:...Last Line" answers
	Resends        int64 // "Resend:" lines
	OKs            int64
	UnknownCommand int64
}

// Sim is one simulated printer. Its zero value is not usable; call New.
type Sim struct {
	cfg  Config
	logf func(string, ...any)

	serving atomic.Bool

	// rec is what the printer did; it outlives connections.
	rec struct {
		sync.Mutex
		execs   []Exec
		targets []Target
		stats   Stats
		changed chan struct{} // closed and replaced on every new Exec
	}

	// heat is the physical state of the heaters, which a reset does not cool.
	heat struct {
		sync.Mutex
		h [2]heater
	}

	// faults holds pending injected faults and which scheduled triggers have fired.
	faults struct {
		sync.Mutex
		pending []Fault
		fired   []bool
		wake    chan struct{} // signalled on Inject; read by the running session
	}

	// noise is used only by the reader of the running connection.
	noise *rand.Rand
}

// New returns a simulator; it runs when served.
func New(cfg Config) *Sim {
	if cfg.RXBufferBytes <= 0 {
		cfg.RXBufferBytes = 128
	}
	if cfg.RXBufferBytes < 2 {
		cfg.RXBufferBytes = 2
	}
	if cfg.Ambient == 0 {
		cfg.Ambient = 25
	}
	def := func(v *float64, d float64) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.HotendHeatRate, 4)
	def(&cfg.HotendCoolRate, 1.5)
	def(&cfg.BedHeatRate, 1)
	def(&cfg.BedCoolRate, 0.3)
	if cfg.TimeScale < 0 {
		cfg.TimeScale = 0
	}
	if cfg.ReplugAfter <= 0 {
		cfg.ReplugAfter = 200 * time.Millisecond
	}
	s := &Sim{cfg: cfg, logf: cfg.Logf}
	if s.logf == nil {
		s.logf = func(string, ...any) {}
	}
	s.rec.changed = make(chan struct{})
	s.faults.fired = make([]bool, len(cfg.Faults))
	s.faults.wake = make(chan struct{}, 1)
	s.noise = rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	now := time.Now()
	s.heat.h[hotend] = heater{name: "T0", id: "0", actual: cfg.Ambient, at: now,
		heat: cfg.HotendHeatRate, cool: cfg.HotendCoolRate, maxTarget: 260, maxTemp: 275}
	s.heat.h[bed] = heater{name: "bed", id: "bed", actual: cfg.Ambient, at: now,
		heat: cfg.BedHeatRate, cool: cfg.BedCoolRate, maxTarget: 140, maxTemp: 150}
	return s
}

// Serve runs the firmware on rw until ctx is done, the host closes its end (a read fails), or
// an injected disconnect. It begins with a reset (the boot banner, "start"). Commands received
// but not executed when the link ends are dropped. When Serve returns, all its goroutines have
// stopped: to unblock them it closes rw if rw is an io.Closer.
//
// Serve returns nil when the host closed the stream, ErrDisconnected after an injected
// disconnect, and ctx.Err() when ctx is done. One Sim serves one connection at a time.
func (s *Sim) Serve(ctx context.Context, rw io.ReadWriter) error {
	if !s.serving.CompareAndSwap(false, true) {
		return errors.New("marlinsim: serve: already serving a connection")
	}
	defer s.serving.Store(false)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := newConn(s, rw)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		c.readLoop()
	}()
	go func() {
		defer wg.Done()
		c.writeLoop(ctx)
	}()
	s.logf("marlinsim: connection up")
	err := c.run(ctx)
	cancel()
	if cl, ok := rw.(io.Closer); ok {
		cl.Close()
	}
	wg.Wait()
	s.logf("marlinsim: connection down: %v", err)
	if errors.Is(err, errHostClosed) {
		return nil
	}
	return err
}

// Inject fires a fault now (or as soon as a connection is served).
func (s *Sim) Inject(f Fault) {
	s.faults.Lock()
	s.faults.pending = append(s.faults.pending, f)
	s.faults.Unlock()
	select {
	case s.faults.wake <- struct{}{}:
	default:
	}
}

// Record returns every executed line so far, oldest first.
func (s *Sim) Record() []Exec {
	s.rec.Lock()
	defer s.rec.Unlock()
	return append([]Exec(nil), s.rec.execs...)
}

// Executed returns the text of every executed line so far, in order.
func (s *Sim) Executed() []string {
	s.rec.Lock()
	defer s.rec.Unlock()
	out := make([]string, len(s.rec.execs))
	for i, e := range s.rec.execs {
		out[i] = e.Line
	}
	return out
}

// WaitExecuted waits until at least n lines have been executed in total, or ctx is done.
func (s *Sim) WaitExecuted(ctx context.Context, n int) error {
	for {
		s.rec.Lock()
		got, ch := len(s.rec.execs), s.rec.changed
		s.rec.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("marlinsim: wait for %d executed lines (have %d): %w", n, got, ctx.Err())
		}
	}
}

// Targets returns every heater target change so far, oldest first.
func (s *Sim) Targets() []Target {
	s.rec.Lock()
	defer s.rec.Unlock()
	return append([]Target(nil), s.rec.targets...)
}

// Stats returns the link counters so far.
func (s *Sim) Stats() Stats {
	s.rec.Lock()
	defer s.rec.Unlock()
	return s.rec.stats
}

// Temps returns the current hotend and bed readings and targets.
func (s *Sim) Temps() (hotendActual, hotendTarget, bedActual, bedTarget float64) {
	s.heat.Lock()
	defer s.heat.Unlock()
	now := time.Now()
	h, b := s.heat.h[hotend], s.heat.h[bed]
	h.update(now, s.cfg.TimeScale)
	b.update(now, s.cfg.TimeScale)
	return h.actual, h.target, b.actual, b.target
}

func (s *Sim) addExec(e Exec) int {
	s.rec.Lock()
	defer s.rec.Unlock()
	e.Seq = len(s.rec.execs) + 1
	s.rec.execs = append(s.rec.execs, e)
	close(s.rec.changed)
	s.rec.changed = make(chan struct{})
	return e.Seq
}

func (s *Sim) addTarget(t Target) {
	s.rec.Lock()
	defer s.rec.Unlock()
	s.rec.targets = append(s.rec.targets, t)
}

func (s *Sim) stat(f func(st *Stats)) {
	s.rec.Lock()
	defer s.rec.Unlock()
	f(&s.rec.stats)
}

func (s *Sim) executedCount() int {
	s.rec.Lock()
	defer s.rec.Unlock()
	return len(s.rec.execs)
}
