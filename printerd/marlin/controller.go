package marlin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/printgate/printgate/printerd/gcode"
)

// The controller's life cycle. Run owns one goroutine per connection (the session) plus the
// session's reader; every state change below happens on the Run goroutine, except the jump
// to Halted, which Emergency also makes directly.
//
//	          New
//	           │ Run
//	           ▼
//	   ┌──▶ Connecting ──(open fails / no answer)──▶ Error ──(back-off, or Connect)──┐
//	   │       │ heaters off; start or silence; M110 N0; M115; first M105 answered   │
//	   │       ▼                                                                     │
//	   │   Operational ◀──────── job done / cancelled / failed ─────────┐            │
//	   │       │ Start                                                   │            │
//	   │       ▼                                                         │            │
//	   │   Printing ──Pause──▶ Pausing ──(script acked)──▶ Paused        │            │
//	   │       │  ▲                                          │ Resume    │            │
//	   │       │  └──────────────────────────────────────────┘           │            │
//	   │       └──Cancel──▶ Cancelling ──(heaters off, script acked)─────┘            │
//	   │                                                                              │
//	   │   any connected state ──(link lost, printer reset)──▶ Error (job Failed) ────┘
//	   │   any connected state ──(kill(), thermal error, M112)──▶ Halted (job Failed)
//	   │   any connected state ──(stop(): "Printer stopped due to errors")──▶ Error
//	   │                         (link stays up; an acked M999 returns to Operational)
//	   └──── Connect (from Error, Halted or Disconnected)
//	         Disconnect (heaters off first) ──▶ Disconnected;  ctx done ──▶ heaters off, Run returns
//
// The Filter sees every line a caller or a file can put on the wire: Send, each job line as it
// is sent, and the pause, resume and cancel scripts (checked whole before any line is queued).
// The lines the controller makes itself are not filtered: the connect sequence (M110, M115,
// M155, M113), temperature polls (M105), heaters and fan off (M104 T<n> S0, M140 S0, M141 S0,
// M107), the job's G90/G91, M82/M83 and feed rate restored after a resume, and the emergency
// commands M112, M108 and M410, which no policy may block.
//
// Nothing leaves Error or Halted towards printing by itself: a job interrupted by a link loss
// or a halt is marked Failed and stays so (DESIGN invariant 8).

// Controller owns one printer link. Each Controller is independent: the package has no
// shared state, so a gateway runs one per printer.
type Controller struct {
	cfg    Config
	logf   func(string, ...any)
	errorf func(string, ...any)

	reqs    chan request  // API calls to the Run goroutine
	wake    chan struct{} // Emergency tells the session it wrote M112
	running atomic.Bool   // Run was called
	done    chan struct{} // closed when Run returns

	mu struct {
		sync.Mutex
		st    Status
		hist  []Temps // ring of temperature reports
		histN int     // reports ever stored
		clock jobClock
	}

	subs struct {
		sync.Mutex
		m map[chan Event]struct{}
	}

	// tx is the write side of the link: the session and Emergency both write through it, a
	// whole line at a time, so emergency lines go out between two queued lines.
	tx struct {
		sync.Mutex
		w        io.Writer // nil while there is no link
		halted   bool      // kill() or M112: nothing but emergency lines goes out
		maxN     int64     // highest line number written since the last M110
		inflight []*sent   // written and not yet acknowledged, in write order
		wire     int64     // bytes written, for wire accounting
	}
}

// jobClock measures a job's printing time without its pauses.
type jobClock struct {
	started  time.Time
	pausedAt time.Time // non-zero while paused
	paused   time.Duration
	ended    time.Time // non-zero once the job ended
}

func (k *jobClock) elapsed(now time.Time) time.Duration {
	if k.started.IsZero() {
		return 0
	}
	end := now
	if !k.ended.IsZero() {
		end = k.ended
	}
	d := end.Sub(k.started) - k.paused
	if !k.pausedAt.IsZero() {
		d -= end.Sub(k.pausedAt)
	}
	if d < 0 {
		d = 0
	}
	return d
}

// Errors returned by the controller's methods.
var (
	ErrNotConnected = errors.New("printer not connected")
	ErrBusy         = errors.New("printer busy")
	ErrNoJob        = errors.New("no job running")
	errNotRunning   = errors.New("controller not running")
)

// New returns a controller; Run drives it.
func New(cfg Config) *Controller {
	if cfg.Baud == 0 {
		cfg.Baud = DefaultBaud
	}
	if cfg.Extruders <= 0 {
		cfg.Extruders = 1
	}
	if cfg.Extruders > maxTools {
		cfg.Extruders = maxTools
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.BusyTimeout <= 0 {
		cfg.BusyTimeout = 5 * time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 2 * time.Second
	}
	if cfg.BootWait <= 0 {
		cfg.BootWait = 2 * time.Second
	}
	if cfg.ReconnectMin <= 0 {
		cfg.ReconnectMin = time.Second
	}
	if cfg.ReconnectMax <= 0 {
		cfg.ReconnectMax = 30 * time.Second
	}
	if cfg.ReconnectMax < cfg.ReconnectMin {
		cfg.ReconnectMax = cfg.ReconnectMin
	}
	if cfg.HistorySize <= 0 {
		cfg.HistorySize = 900
	}
	if cfg.MaxInFlight <= 0 || cfg.MaxInFlight > maxWindow {
		cfg.MaxInFlight = maxWindow
	}
	if cfg.PauseScript == nil {
		cfg.PauseScript = DefaultPauseScript()
	}
	if cfg.ResumeScript == nil {
		cfg.ResumeScript = DefaultResumeScript()
	}
	if cfg.CancelScript == nil {
		cfg.CancelScript = DefaultCancelScript()
	}
	cfg.Watchdog = cfg.Watchdog.withDefaults()
	c := &Controller{
		cfg:  cfg,
		logf: cfg.Logf,
		reqs: make(chan request),
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
	if c.logf == nil {
		c.logf = func(string, ...any) {}
	}
	c.errorf = cfg.Errorf
	if c.errorf == nil {
		c.errorf = func(string, ...any) {}
	}
	c.mu.st = Status{Name: cfg.Name, State: Disconnected, Port: cfg.Port, Baud: cfg.Baud}
	c.mu.hist = make([]Temps, cfg.HistorySize)
	c.subs.m = map[chan Event]struct{}{}
	return c
}

// Status returns a snapshot.
func (c *Controller) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.statusLocked(time.Now())
}

// statusLocked copies the status; c.mu must be held.
func (c *Controller) statusLocked(now time.Time) Status {
	s := c.mu.st
	if s.Job != nil {
		j := *s.Job
		j.Elapsed = c.mu.clock.elapsed(now)
		if j.Estimate > 0 {
			j.Left = j.Estimate - j.Elapsed
			if j.Left < 0 || j.Done || j.Failed != "" || j.Cancelled {
				j.Left = 0
			}
		}
		s.Job = &j
	}
	return s
}

// History returns recent temperature reports, oldest first.
func (c *Controller) History() []Temps {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.mu.hist)
	if c.mu.histN < n {
		return append([]Temps(nil), c.mu.hist[:c.mu.histN]...)
	}
	i := c.mu.histN % n
	out := make([]Temps, 0, n)
	out = append(out, c.mu.hist[i:]...)
	return append(out, c.mu.hist[:i]...)
}

// subscriberBuffer is how many events a subscriber may lag behind before it misses some.
const subscriberBuffer = 64

// Subscribe returns a channel of events and a function that ends the subscription. Slow
// subscribers miss events rather than block the controller.
func (c *Controller) Subscribe() (<-chan Event, func()) {
	ch := make(chan Event, subscriberBuffer)
	c.subs.Lock()
	c.subs.m[ch] = struct{}{}
	c.subs.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			c.subs.Lock()
			delete(c.subs.m, ch)
			c.subs.Unlock()
		})
	}
}

func (c *Controller) hasSubscribers() bool {
	c.subs.Lock()
	defer c.subs.Unlock()
	return len(c.subs.m) > 0
}

// publish sends an event to every subscriber that has room.
func (c *Controller) publish(kind, line string) {
	if !c.hasSubscribers() {
		return
	}
	ev := Event{Kind: kind, Status: c.Status(), Line: line}
	c.subs.Lock()
	defer c.subs.Unlock()
	for ch := range c.subs.m {
		select {
		case ch <- ev:
		default:
		}
	}
}

// setState changes the state (and the reason for Error and Halted) and tells subscribers.
func (c *Controller) setState(s State, reason string) {
	c.mu.Lock()
	changed := c.mu.st.State != s || c.mu.st.Error != reason
	c.mu.st.State, c.mu.st.Error = s, reason
	c.mu.Unlock()
	if changed {
		c.logf("marlin %s: state %s %s", c.cfg.Name, s, reason)
		c.publish("state", "")
	}
}

func (c *Controller) state() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.st.State
}

// request is one API call handed to the Run goroutine.
type request struct {
	kind  reqKind
	line  gcode.Line
	job   *job
	reply chan error
	acked chan<- ackResult // reqSend from SendAcked: told when the firmware acks the line
}

// ackResult is the firmware's answer to a line sent with SendAcked.
type ackResult struct {
	reply string // the ok line that acknowledged it
	err   error  // the line will never be acknowledged (link closed, printer halted)
}

type reqKind int

const (
	reqConnect reqKind = iota
	reqDisconnect
	reqSend
	reqStart
	reqPause
	reqResume
	reqCancel
)

// apiTimeout bounds the API calls that take no context.
const apiTimeout = 10 * time.Second

func (c *Controller) call(ctx context.Context, r request) error {
	if !c.running.Load() {
		return errNotRunning
	}
	r.reply = make(chan error, 1)
	select {
	case c.reqs <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return errNotRunning
	}
	select {
	case err := <-r.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return errNotRunning
	}
}

func (c *Controller) callTimeout(r request) error {
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	return c.call(ctx, r)
}

// Connect asks for the link to be opened; Disconnect closes it (heaters off first). Connect
// while connected re-opens the link, which resets most boards: it is how a person clears
// Halted.
func (c *Controller) Connect() error { return c.callTimeout(request{kind: reqConnect}) }

// Disconnect closes the link after turning the heaters off; the controller stays
// Disconnected until Connect.
func (c *Controller) Disconnect() error { return c.callTimeout(request{kind: reqDisconnect}) }

// Send queues one command line (terminal or API) after the Filter allows it. M112 goes out
// at once as Emergency does; M108 and M410 are written straight to the link, ahead of
// everything queued. Send returns once the line is queued, not when the firmware answers.
func (c *Controller) Send(ctx context.Context, line string) error {
	l, err := c.prepareSend(line)
	if err != nil {
		return err
	}
	switch l.Word {
	case "M112":
		return c.Emergency()
	case "M108", "M410":
		return c.jump(l.Raw)
	}
	return c.call(ctx, request{kind: reqSend, line: l})
}

// SendAcked is Send that returns once the firmware has acknowledged the line, with the ok
// line that did ("ok", "ok N.. P.. B..", or "ok T:..." for M105): the serial bridge paces its
// host with the firmware's own flow control, so an M109 holds the host until the hotend is
// hot. M108 and M410 return "ok" once written, M112 once the emergency stop is out. An error
// after the line was queued means it will never be acknowledged (link lost, printer halted).
func (c *Controller) SendAcked(ctx context.Context, line string) (string, error) {
	l, err := c.prepareSend(line)
	if err != nil {
		return "", err
	}
	switch l.Word {
	case "M112":
		return "ok", c.Emergency()
	case "M108", "M410":
		return "ok", c.jump(l.Raw)
	}
	acked := make(chan ackResult, 1)
	if err := c.call(ctx, request{kind: reqSend, line: l, acked: acked}); err != nil {
		return "", err
	}
	select {
	case r := <-acked:
		return r.reply, r.err
	case <-ctx.Done():
		return "", ctx.Err()
	case <-c.done:
		return "", errNotRunning
	}
}

// prepareSend prepares a caller's line and passes it through the Filter.
func (c *Controller) prepareSend(line string) (gcode.Line, error) {
	l, err := Prepare(line)
	if err != nil {
		return gcode.Line{}, fmt.Errorf("send: %w", err)
	}
	if l.Empty() {
		return gcode.Line{}, fmt.Errorf("send %q: no command", clip(line))
	}
	if c.cfg.Filter != nil {
		if err := c.cfg.Filter.Check(l, c.Status()); err != nil {
			return gcode.Line{}, fmt.Errorf("send %q: %w", clip(l.Raw), err)
		}
	}
	return l, nil
}

// Emergency sends M112 ahead of everything queued: bare (Marlin handles a line that starts
// with M112 before its queue) and then numbered, then heaters off, as OctoPrint does. The
// controller goes to Halted and writes nothing else until a person reconnects.
func (c *Controller) Emergency() error {
	c.tx.Lock()
	if c.tx.w == nil {
		c.tx.Unlock()
		return fmt.Errorf("emergency stop: %w", ErrNotConnected)
	}
	var b strings.Builder
	b.WriteString("M112\n")
	b.WriteString(gcode.Number(c.tx.maxN+1, "M112") + "\n")
	for _, l := range heatersOff(c.cfg.Extruders, c.cfg.Chamber) {
		b.WriteString(l + "\n")
	}
	_, err := io.WriteString(c.tx.w, b.String())
	c.tx.wire += int64(b.Len())
	c.tx.halted = true
	c.tx.inflight = nil
	c.tx.Unlock()
	c.setState(Halted, "emergency stop (M112)")
	select {
	case c.wake <- struct{}{}:
	default:
	}
	if err != nil {
		return fmt.Errorf("emergency stop: write: %w", err)
	}
	return nil
}

// jump writes an un-numbered line (M108, M410) straight to the link. Its ok comes back in
// turn with the others, so it joins the in-flight list at its place.
func (c *Controller) jump(cmd string) error {
	c.tx.Lock()
	defer c.tx.Unlock()
	if c.tx.w == nil {
		return fmt.Errorf("send %s: %w", cmd, ErrNotConnected)
	}
	if _, err := io.WriteString(c.tx.w, cmd+"\n"); err != nil {
		return fmt.Errorf("send %s: write: %w", cmd, err)
	}
	c.tx.wire += int64(len(cmd) + 1)
	if !c.tx.halted {
		c.tx.inflight = append(c.tx.inflight, &sent{text: cmd, n: -1, kind: kUser})
	}
	return nil
}

// WireBytes returns the bytes written to the printer since the controller was made.
func (c *Controller) WireBytes() int64 {
	c.tx.Lock()
	defer c.tx.Unlock()
	return c.tx.wire
}

// Start starts printing a job read from r (size bytes, named name). Each line passes the Filter
// again as it is sent.
func (c *Controller) Start(ctx context.Context, name string, r io.ReaderAt, size int64) error {
	j, err := newJob(name, r, size)
	if err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	return c.call(ctx, request{kind: reqStart, job: j})
}

// Pause parks the head with the pause script once the lines in flight are done; Resume
// returns it and goes on; Cancel stops feeding, turns heaters and fan off and runs the
// cancel script. Each acts on the running job.
func (c *Controller) Pause() error  { return c.callTimeout(request{kind: reqPause}) }
func (c *Controller) Resume() error { return c.callTimeout(request{kind: reqResume}) }
func (c *Controller) Cancel() error { return c.callTimeout(request{kind: reqCancel}) }

// end says why a session ended.
type end int

const (
	endNone       end = iota // still running
	endCtx                   // Run's context is done
	endDisconnect            // Disconnect was asked
	endReconnect             // Connect was asked while connected
	endLink                  // the link failed or the protocol could not go on
)

// Run connects and keeps the link up (reconnecting with back-off) until ctx is done, then turns
// heaters off and disconnects. The caller runs it in a goroutine. Run may be called once.
func (c *Controller) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("marlin: run: already running")
	}
	defer close(c.done)
	c.logf("marlin %s: run starting", c.cfg.Name)
	defer c.logf("marlin %s: run stopped", c.cfg.Name)
	bo := backoff{first: c.cfg.ReconnectMin, max: c.cfg.ReconnectMax}
	want := true
	lastErr := "" // the link error last logged at error level, to log each one once
	for {
		if want {
			s := newSession(c)
			why, err := s.run(ctx)
			if s.stayedUp {
				bo.reset()
				lastErr = ""
			}
			switch why {
			case endCtx:
				c.setState(Disconnected, "")
				return nil
			case endDisconnect:
				c.setState(Disconnected, "")
				want = false
				continue
			case endReconnect:
				continue
			}
			c.setState(Error, err.Error())
			if msg := err.Error(); msg != lastErr {
				c.errorf("marlin %s: link %s: %v (retrying)", c.cfg.Name, c.cfg.Port, err)
				lastErr = msg
			} else {
				c.logf("marlin %s: link %s: %v (still)", c.cfg.Name, c.cfg.Port, err)
			}
		}
		// Wait: for the back-off while we want a link, forever otherwise.
		var timer <-chan time.Time
		var t *time.Timer
		if want {
			t = time.NewTimer(bo.next())
			timer = t.C
		}
		if ok := c.wait(ctx, &want, timer); !ok {
			if t != nil {
				t.Stop()
			}
			return nil
		}
		if t != nil {
			t.Stop()
		}
	}
}

// wait serves API calls while there is no link, until the back-off timer fires or Connect is
// asked. It returns false when ctx is done.
func (c *Controller) wait(ctx context.Context, want *bool, timer <-chan time.Time) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case <-timer:
			return true
		case r := <-c.reqs:
			switch r.kind {
			case reqConnect:
				*want = true
				r.reply <- nil
				return true
			case reqDisconnect:
				*want = false
				timer = nil
				c.setState(Disconnected, "")
				r.reply <- nil
			default:
				r.reply <- ErrNotConnected
			}
		}
	}
}
