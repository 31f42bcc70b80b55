package marlin

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/printgate/printgate/printerd/gcode"
)

// This file feeds jobs: reading a file line by line as the window allows, progress from the
// firmware's oks, pause and resume with the head parked, cancel, and how a job ends.

// DefaultPauseScript parks the head: retract 2 mm, raise Z by 10 mm, then move to X0 Y0. It
// runs after the job's lines in flight, so the head is where the last of them left it.
func DefaultPauseScript() []string {
	return []string{
		"G91",
		"G1 E-2 F2400",
		"G1 Z10 F600",
		"G90",
		"G1 X0 Y0 F6000",
	}
}

// DefaultResumeScript returns the head: back over the part at the raised height, down, and
// the filament pushed back. {X} {Y} {Z} {E} {F} are the position and feed rate the job had
// reached (a line whose placeholder is unknown is left out). After the script the controller
// restores the job's G90/G91 and M82/M83 modes and its feed rate.
func DefaultResumeScript() []string {
	return []string{
		"G90",
		"G1 X{X} Y{Y} F6000",
		"G91",
		"G1 Z-10 F600",
		"G1 E2 F2400",
	}
}

// DefaultCancelScript runs after the controller has turned heaters (M104, M140, M141) and the
// part fan (M107) off, as OctoPrint's default afterPrintCancelled script does: retract 2 mm,
// lift Z by 10 mm, clear of the part, and turn the motors off (M84).
func DefaultCancelScript() []string {
	return []string{
		"G91",
		"G1 E-2 F2400",
		"G1 Z10 F600",
		"G90",
		"M84",
	}
}

// estimateScan is how much of the head and the tail of a file is searched for the slicer's
// time estimate (Cura writes it first, PrusaSlicer last).
const estimateScan = 64 << 10

// maxFileLine bounds one line of a job file.
const maxFileLine = 4096

// job is a print job being fed.
type job struct {
	name string
	r    io.ReaderAt
	size int64
	br   *bufio.Reader
	off  int64 // bytes read so far
	line int64 // file lines read so far
	eof  bool

	estimate time.Duration
	rewait   string // a heating wait (M109, M190, M191) a pause broke: run again on resume
	written  int64  // job lines written (first time)
	acked    int64  // job lines acked
	feeding  bool   // false while pausing, paused or cancelling

	// A G4 longer than dwellPiece being written in pieces.
	dwellLeft int64 // ms not yet written
	dwellOff  int64 // file offset after the G4 line

	// What the job's lines have set, for pause and resume.
	relXYZ, relE bool
	pos          [4]float64 // X Y Z E as the job commanded them
	known        [4]bool
	feed         float64
}

func newJob(name string, r io.ReaderAt, size int64) (*job, error) {
	if r == nil || size < 0 {
		return nil, errors.New("no file")
	}
	j := &job{name: name, r: r, size: size, feeding: true}
	j.br = bufio.NewReaderSize(io.NewSectionReader(r, 0, size), maxFileLine)
	est, err := scanEstimate(r, size)
	if err != nil {
		return nil, err
	}
	j.estimate = est
	return j, nil
}

// scanEstimate looks for a slicer's time estimate in the head and tail of the file.
func scanEstimate(r io.ReaderAt, size int64) (time.Duration, error) {
	read := func(off, n int64) (string, error) {
		if off < 0 {
			n += off
			off = 0
		}
		if n <= 0 {
			return "", nil
		}
		b := make([]byte, n)
		m, err := r.ReadAt(b, off)
		if err != nil && err != io.EOF {
			return "", fmt.Errorf("read: %w", err)
		}
		return string(b[:m]), nil
	}
	head, err := read(0, min(size, estimateScan))
	if err != nil {
		return 0, err
	}
	tail := ""
	if size > estimateScan {
		if tail, err = read(max(size-estimateScan, estimateScan), estimateScan); err != nil {
			return 0, err
		}
	}
	for _, part := range []string{head, tail} {
		for _, l := range strings.Split(part, "\n") {
			if d, ok := gcode.ParseEstimate(l); ok {
				return d, nil
			}
		}
	}
	return 0, nil
}

// startJob begins feeding a job.
func (s *session) startJob(j *job) error {
	c := s.c
	s.job = j
	now := time.Now()
	c.mu.Lock()
	c.mu.st.Job = &Job{File: j.name, Size: j.size, Started: now, Estimate: j.estimate}
	c.mu.clock = jobClock{started: now}
	c.mu.Unlock()
	c.setState(Printing, "")
	c.publish("job", "")
	return nil
}

// nextJobLine reads the job's next command, or returns nil when there is none to send now.
func (s *session) nextJobLine() *sent {
	j := s.job
	if j == nil || !j.feeding || s.stopped {
		return nil
	}
	if j.dwellLeft > 0 {
		return j.nextDwellPiece()
	}
	if j.eof {
		return nil
	}
	for {
		b, err := j.br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			s.jobFailed(fmt.Sprintf("line %d: longer than %d bytes", j.line+1, maxFileLine))
			return nil
		}
		if err != nil && err != io.EOF {
			s.jobFailed(fmt.Sprintf("read: %v", err))
			return nil
		}
		if len(b) == 0 && err == io.EOF {
			j.eof = true
			s.checkJobDone()
			return nil
		}
		j.off += int64(len(b))
		j.line++
		l, perr := Prepare(string(b))
		if perr != nil {
			s.jobFailed(fmt.Sprintf("line %d: %v", j.line, perr))
			return nil
		}
		if err == io.EOF {
			j.eof = true
		}
		if l.Empty() {
			if j.eof {
				s.checkJobDone()
				return nil
			}
			continue
		}
		if f := s.c.cfg.Filter; f != nil {
			if ferr := f.Check(l, s.c.Status()); ferr != nil {
				s.jobFailed(fmt.Sprintf("line %d refused: %v", j.line, ferr))
				return nil
			}
		}
		j.track(l)
		j.written++
		if ms, ok := dwellMillis(l); ok && ms > dwellPiece {
			j.dwellLeft, j.dwellOff = ms, j.off
			return j.nextDwellPiece()
		}
		return &sent{text: l.Raw, kind: kJob, off: j.off}
	}
}

// track follows the modes and position the job's lines set, for pause and resume.
func (j *job) track(l gcode.Line) {
	switch l.Word {
	case "G90":
		j.relXYZ, j.relE = false, false
	case "G91":
		j.relXYZ, j.relE = true, true
	case "M82":
		j.relE = false
	case "M83":
		j.relE = true
	case "G92":
		for i, a := range []byte("XYZE") {
			if v, ok, err := l.Float(a); ok && err == nil {
				j.pos[i], j.known[i] = v, true
			}
		}
	case "G28":
		for i := 0; i < 3; i++ {
			j.known[i] = false
		}
	case "G0", "G1", "G2", "G3":
		for i, a := range []byte("XYZE") {
			v, ok, err := l.Float(a)
			if !ok || err != nil {
				continue
			}
			rel := j.relXYZ
			if a == 'E' {
				rel = j.relE
			}
			if rel {
				if j.known[i] {
					j.pos[i] += v
				}
			} else {
				j.pos[i], j.known[i] = v, true
			}
		}
		if v, ok, err := l.Float('F'); ok && err == nil {
			j.feed = v
		}
	}
}

// jobAcked counts a job line the firmware took.
func (s *session) jobAcked(e *sent) {
	j := s.job
	if j == nil || e.piece {
		return
	}
	j.acked++
	c := s.c
	c.mu.Lock()
	if c.mu.st.Job != nil {
		c.mu.st.Job.Pos = e.off
		c.mu.st.Job.Lines = j.acked
	}
	c.mu.Unlock()
	s.checkJobDone()
}

// checkJobDone ends the job once every line was read and acked.
func (s *session) checkJobDone() {
	j := s.job
	if j == nil || !j.eof || j.acked < j.written || !j.feeding {
		return
	}
	s.endJob(func(p *Job) { p.Done = true; p.Pos = j.size })
	s.c.setState(Operational, "")
}

// endJob records how the job ended and stops its clock.
func (s *session) endJob(f func(*Job)) {
	c := s.c
	s.job = nil
	s.script = 0
	c.mu.Lock()
	if c.mu.st.Job != nil {
		f(c.mu.st.Job)
	}
	now := time.Now()
	if !c.mu.clock.pausedAt.IsZero() {
		c.mu.clock.paused += now.Sub(c.mu.clock.pausedAt)
		c.mu.clock.pausedAt = time.Time{}
	}
	c.mu.clock.ended = now
	c.mu.Unlock()
	c.publish("job", "")
}

// jobFailed fails the running job: feeding stops, heaters go off (the lines already in
// flight still run), and the controller is Operational again.
func (s *session) jobFailed(reason string) {
	if s.job == nil {
		return
	}
	s.c.logf("marlin %s: job failed: %s", s.c.cfg.Name, reason)
	s.endJob(func(p *Job) { p.Failed = reason })
	s.queueHeatersOff(kInternal)
	s.queue = append(s.queue, &sent{text: "M107", kind: kInternal})
	s.c.setState(Operational, "")
}

// failJob marks the job failed when the link or the firmware went away; nothing is queued.
func (s *session) failJob(reason string) {
	if s.job == nil {
		return
	}
	s.c.logf("marlin %s: job failed: %s", s.c.cfg.Name, reason)
	s.endJob(func(p *Job) { p.Failed = reason })
}

// script expands a pause/resume/cancel script and checks every line with the Filter before
// any is queued: a refusal changes nothing.
func (s *session) expand(lines []string) ([]*sent, error) {
	j := s.job
	var out []*sent
	st := s.c.Status()
	for _, raw := range lines {
		text, ok := j.substitute(raw)
		if !ok {
			continue
		}
		l, err := Prepare(text)
		if err != nil {
			return nil, err
		}
		if l.Empty() {
			continue
		}
		if f := s.c.cfg.Filter; f != nil {
			if err := f.Check(l, st); err != nil {
				return nil, fmt.Errorf("script line %q refused: %w", l.Raw, err)
			}
		}
		out = append(out, &sent{text: l.Raw, kind: kScript})
	}
	return out, nil
}

// substitute fills {X} {Y} {Z} {E} {F}; ok is false when one of them is unknown.
func (j *job) substitute(s string) (string, bool) {
	if !strings.Contains(s, "{") {
		return s, true
	}
	for i, a := range []string{"{X}", "{Y}", "{Z}", "{E}"} {
		if strings.Contains(s, a) {
			if !j.known[i] {
				return "", false
			}
			s = strings.ReplaceAll(s, a, strconv.FormatFloat(j.pos[i], 'f', 3, 64))
		}
	}
	if strings.Contains(s, "{F}") {
		if j.feed <= 0 {
			return "", false
		}
		s = strings.ReplaceAll(s, "{F}", strconv.FormatFloat(j.feed, 'f', 0, 64))
	}
	return s, true
}

func (s *session) pauseJob() error {
	c := s.c
	if s.job == nil || c.state() != Printing {
		return fmt.Errorf("pause: %w", ErrNoJob)
	}
	lines, err := s.expand(c.cfg.PauseScript)
	if err != nil {
		return fmt.Errorf("pause: %w", err)
	}
	s.job.feeding = false
	// A pause during heat-up ends the wait (M108), so the head parks and the state is Paused
	// within a second; the resume heats up again first.
	s.job.rewait = s.breakWait()
	s.queueScript(lines)
	c.mu.Lock()
	c.mu.clock.pausedAt = time.Now()
	c.mu.Unlock()
	c.setState(Pausing, "")
	if s.script == 0 {
		c.setState(Paused, "")
	}
	return nil
}

func (s *session) resumeJob() error {
	c := s.c
	if s.job == nil || (c.state() != Paused && c.state() != Pausing) {
		return fmt.Errorf("resume: %w", ErrNoJob)
	}
	j := s.job
	lines, err := s.expand(c.cfg.ResumeScript)
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	restore := []string{"G90", "M82"}
	if j.relXYZ {
		restore[0] = "G91"
	}
	if j.relE {
		restore[1] = "M83"
	}
	if j.feed > 0 {
		restore = append(restore, "G1 F"+strconv.FormatFloat(j.feed, 'f', 0, 64))
	}
	for _, l := range restore {
		lines = append(lines, &sent{text: l, kind: kInternal})
	}
	if j.rewait != "" && s.belowTarget(j.rewait) {
		// The pause broke the job's heating wait before the target was reached: wait again
		// before the head returns to the part.
		lines = append([]*sent{{text: j.rewait, kind: kInternal}}, lines...)
	}
	j.rewait = ""
	s.queue = append(s.queue, lines...)
	j.feeding = true
	c.mu.Lock()
	if !c.mu.clock.pausedAt.IsZero() {
		c.mu.clock.paused += time.Since(c.mu.clock.pausedAt)
		c.mu.clock.pausedAt = time.Time{}
	}
	c.mu.Unlock()
	s.script = 0
	c.setState(Printing, "")
	return nil
}

func (s *session) cancelJob() error {
	c := s.c
	st := c.state()
	if s.job == nil || (st != Printing && st != Pausing && st != Paused) {
		return fmt.Errorf("cancel: %w", ErrNoJob)
	}
	lines, err := s.expand(c.cfg.CancelScript)
	if err != nil {
		return fmt.Errorf("cancel: %w", err)
	}
	s.job.feeding = false
	// The heaters-off lines queue behind a heating wait the firmware is in: end it (M108).
	s.breakWait()
	var all []*sent
	for _, l := range heatersOff(s.tools, s.chamber || c.cfg.Chamber) {
		all = append(all, &sent{text: l, kind: kScript})
	}
	all = append(all, &sent{text: "M107", kind: kScript})
	all = append(all, lines...)
	s.script = 0
	s.queueScript(all)
	c.setState(Cancelling, "")
	return nil
}

func (s *session) queueScript(lines []*sent) {
	s.queue = append(s.queue, lines...)
	s.script += len(lines)
}

// scriptAcked counts pause and cancel script lines; when the last is done, the state moves on.
func (s *session) scriptAcked() {
	if s.script > 0 {
		s.script--
	}
	if s.script > 0 {
		return
	}
	c := s.c
	switch c.state() {
	case Pausing:
		c.setState(Paused, "")
	case Cancelling:
		s.endJob(func(p *Job) { p.Cancelled = true })
		c.setState(Operational, "")
	}
}

// heatWait reports the commands whose wait M108 ends (Marlin's wait_for_heatup): M109, M190
// and M191. G4 and G28 are not ended by anything but their own end.
func heatWait(cmd string) bool {
	w, _, _ := strings.Cut(cmd, " ")
	switch strings.ToUpper(w) {
	case "M109", "M190", "M191":
		return true
	}
	return false
}

// breakWait ends a heating wait of the job that the firmware is in, by writing M108 ahead of
// everything queued, and returns that wait's line ("" when none is in flight). Firmware with
// EMERGENCY_PARSER acts on it as it arrives; without it, Marlin reads nothing while it waits,
// so the M108 is read (and does nothing) once the wait has ended by itself.
func (s *session) breakWait() string { return s.breakWaitOf(kJob) }

// breakWaitOf is breakWait for a heating wait of any line of the given kind; -1 means any.
func (s *session) breakWaitOf(kind lineKind) string {
	c := s.c
	c.tx.Lock()
	wait := ""
	for _, e := range c.tx.inflight {
		if (kind < 0 || e.kind == kind) && heatWait(e.text) {
			wait = e.text
		}
	}
	c.tx.Unlock()
	if wait == "" {
		return ""
	}
	if err := c.jump("M108"); err != nil {
		c.logf("marlin %s: break %s: %v", c.cfg.Name, wait, err)
	}
	return wait
}

// belowTarget reports whether the heater of a heating-wait line is still more than Marlin's
// TEMP_HYSTERESIS (3 °C) from its target in the latest reading; true when unknown.
func (s *session) belowTarget(wait string) bool {
	const hysteresis = 3
	t := s.c.Status().Temps
	var h *Temp
	switch w, _, _ := strings.Cut(wait, " "); strings.ToUpper(w) {
	case "M109":
		tool := 0
		if l, err := gcode.Parse(wait); err == nil {
			if v, ok, err := l.Float('T'); ok && err == nil && v >= 0 && int(v) < maxTools {
				tool = int(v)
			}
		}
		if tool < len(t.Tools) {
			h = &t.Tools[tool]
		}
	case "M190":
		h = t.Bed
	case "M191":
		h = t.Chamber
	}
	return h == nil || h.Target <= 0 || h.Actual < h.Target-hysteresis
}

// ReadScript reads a pause, resume or cancel script: one command per line, comments and blank
// lines ignored, each line as Prepare takes it ({X} {Y} {Z} {E} {F} placeholders allowed). An
// empty script is an empty, non-nil list: no script, where nil means the default.
func ReadScript(r io.Reader) ([]string, error) {
	out := []string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 256), maxFileLine)
	n := 0
	for sc.Scan() {
		n++
		l, err := Prepare(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("script line %d: %w", n, err)
		}
		if !l.Empty() {
			out = append(out, l.Raw)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("script line %d: %w", n+1, err)
	}
	return out, nil
}
