package marlin

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/printgate/printgate/printerd/gcode"
)

// fakeMarlin is a small Marlin for the controller's unit tests: line numbers and checksums
// checked as queue.cpp does, RX drained on every error, Resend with or without ok, optional
// ADVANCED_OK, M115 caps, M105 temperatures, M112 kill, line noise, and a record of what it
// executed. The full simulator lives in printerd/marlinsim.
type fakeMarlin struct {
	advanced  bool
	resendOK  bool
	noise     float64 // probability that a line arrives with one byte changed
	autoTemp  bool    // advertise AUTOREPORT_TEMP
	rng       *rand.Rand
	conn      net.Conn
	rx        chan string
	delay     time.Duration // before each ok
	onCommand func(f *fakeMarlin, cmd string) (reply []string, handled bool)

	wmu sync.Mutex // serialises writes

	mu       sync.Mutex
	received []string // every line as it arrived (after noise)
	executed []string // every command executed, without N and checksum
	lastN    int64
	killed   bool
	temps    string // the temperature part of M105 answers
	done     chan struct{}
}

func newFake(t *testing.T, conn net.Conn, seed int64) *fakeMarlin {
	f := &fakeMarlin{
		conn:     conn,
		rng:      rand.New(rand.NewSource(seed)),
		rx:       make(chan string, 8),
		resendOK: true,
		temps:    "T:21.0 /0.0 B:21.0 /0.0 @:0 B@:0",
		done:     make(chan struct{}),
	}
	return f
}

// start runs the fake: boot text, then commands until the connection closes.
func (f *fakeMarlin) start() {
	go func() {
		defer close(f.rx)
		br := bufio.NewReader(f.conn)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			f.rx <- strings.TrimRight(l, "\n")
		}
	}()
	go func() {
		defer close(f.done)
		f.write("start", "echo: External Reset", "Marlin 2.1.3-fake")
		for l := range f.rx {
			f.process(l)
		}
	}()
}

func (f *fakeMarlin) write(lines ...string) {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	for _, l := range lines {
		if _, err := io.WriteString(f.conn, l+"\n"); err != nil {
			return
		}
	}
}

func (f *fakeMarlin) corrupt(l string) string {
	if f.noise == 0 || len(l) == 0 || f.rng.Float64() >= f.noise {
		return l
	}
	b := []byte(l)
	i := f.rng.Intn(len(b))
	c := byte('!' + f.rng.Intn(90))
	if c == b[i] {
		c++
	}
	b[i] = c
	return string(b)
}

// lineError is gcode_line_error: report, drain RX, ask for the next line.
func (f *fakeMarlin) lineError(msg string) {
	f.mu.Lock()
	last := f.lastN
	f.mu.Unlock()
	f.write(fmt.Sprintf("Error:%s, Last Line: %d", msg, last))
	for drained := true; drained; {
		select {
		case _, ok := <-f.rx:
			drained = ok
		default:
			drained = false
		}
	}
	out := []string{fmt.Sprintf("Resend: %d", last+1)}
	if f.resendOK {
		out = append(out, "ok")
	}
	f.write(out...)
}

func (f *fakeMarlin) process(raw string) {
	l := f.corrupt(raw)
	f.mu.Lock()
	f.received = append(f.received, l)
	killed := f.killed
	f.mu.Unlock()
	if killed {
		return
	}
	s := strings.TrimSpace(l)
	if strings.HasPrefix(s, "M112") {
		f.kill()
		return
	}
	numbered := strings.HasPrefix(s, "N")
	var n int64
	if numbered {
		j := 1
		for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] == '-') {
			j++
		}
		v, err := strconv.ParseInt(s[1:j], 10, 64)
		if err != nil {
			f.lineError("Line Number is not Last Line Number+1")
			return
		}
		n = v
		star := strings.LastIndexByte(s, '*')
		isM110 := strings.Contains(s, "M110")
		f.mu.Lock()
		last := f.lastN
		f.mu.Unlock()
		if !isM110 && n != last+1 {
			f.lineError("Line Number is not Last Line Number+1")
			return
		}
		if star < 0 {
			f.lineError("No Checksum with line number")
			return
		}
		cs, err := strconv.Atoi(s[star+1:])
		if err != nil || byte(cs) != gcode.Checksum(s[:star]) || cs > 255 {
			f.lineError("checksum mismatch")
			return
		}
		s = strings.TrimSpace(s[j:star])
		if isM110 {
			if i := strings.Index(s, "N"); i >= 0 {
				if v, err := strconv.ParseInt(strings.Fields(s[i+1:])[0], 10, 64); err == nil {
					n = v
				}
			}
		}
		f.mu.Lock()
		f.lastN = n
		f.mu.Unlock()
	}
	f.mu.Lock()
	f.executed = append(f.executed, s)
	f.mu.Unlock()
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	ok := "ok"
	if f.advanced {
		b := 3 - len(f.rx)
		if b < 0 {
			b = 0
		}
		if numbered {
			ok = fmt.Sprintf("ok N%d P15 B%d", n, b)
		} else {
			ok = fmt.Sprintf("ok P15 B%d", b)
		}
	}
	f.mu.Lock()
	onCommand := f.onCommand
	f.mu.Unlock()
	if onCommand != nil {
		if reply, handled := onCommand(f, s); handled {
			f.write(reply...)
			return
		}
	}
	word, _, _ := strings.Cut(s, " ")
	switch word {
	case "M105":
		f.mu.Lock()
		t := f.temps
		f.mu.Unlock()
		f.write("ok " + t)
	case "M115":
		f.write("FIRMWARE_NAME:Marlin 2.1.3-fake (Nov 27 2026) SOURCE_CODE_URL:github.com/MarlinFirmware/Marlin PROTOCOL_VERSION:1.0 MACHINE_TYPE:3D Printer KINEMATICS:Cartesian EXTRUDER_COUNT:1 UUID:cede2a2f-41a2-4748-9b12-c55c62f367ff",
			"Cap:SERIAL_XON_XOFF:0", "Cap:EEPROM:1", fmt.Sprintf("Cap:AUTOREPORT_TEMP:%d", b2i(f.autoTemp)), "Cap:EMERGENCY_PARSER:0", ok)
	default:
		f.write(ok)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (f *fakeMarlin) kill() {
	f.mu.Lock()
	f.killed = true
	f.mu.Unlock()
	f.write("echo:M112 Shutdown", "Error:Printer halted. kill() called!")
}

func (f *fakeMarlin) setTemps(s string) {
	f.mu.Lock()
	f.temps = s
	f.mu.Unlock()
}

func (f *fakeMarlin) snapshot() (received, executed []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.received...), append([]string(nil), f.executed...)
}

// rig is a controller wired to fakes: each Open makes a new pipe and a new fake.
type rig struct {
	t     *testing.T
	c     *Controller
	mu    sync.Mutex
	fakes []*fakeMarlin
	setup func(f *fakeMarlin)
	stop  func()
}

func newRig(t *testing.T, cfg Config, setup func(f *fakeMarlin)) *rig {
	t.Helper()
	r := &rig{t: t, setup: setup}
	cfg.Open = func(ctx context.Context) (io.ReadWriteCloser, error) {
		a, b := net.Pipe()
		r.mu.Lock()
		f := newFake(t, b, int64(len(r.fakes))+1)
		r.fakes = append(r.fakes, f)
		r.mu.Unlock()
		if r.setup != nil {
			r.setup(f)
		}
		f.start()
		return a, nil
	}
	if cfg.Name == "" {
		cfg.Name = "test"
	}
	if cfg.BootWait == 0 {
		cfg.BootWait = 200 * time.Millisecond
	}
	if cfg.ReconnectMin == 0 {
		cfg.ReconnectMin = 50 * time.Millisecond
	}
	cfg.Logf = t.Logf
	r.c = New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.c.Run(ctx) }()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Errorf("Run did not return")
			}
			r.mu.Lock()
			for _, f := range r.fakes {
				f.conn.Close()
				<-f.done
			}
			r.mu.Unlock()
		})
	}
	t.Cleanup(r.stop)
	return r
}

func (r *rig) fake(i int) *fakeMarlin {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i < 0 {
		i += len(r.fakes)
	}
	if i < 0 || i >= len(r.fakes) {
		return nil
	}
	return r.fakes[i]
}

func (r *rig) nfakes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.fakes)
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (r *rig) waitState(s State) {
	r.t.Helper()
	waitFor(r.t, "state "+string(s), func() bool { return r.c.Status().State == s })
}

// genJob makes a job of n short G1 lines with comments and blank lines mixed in, and returns
// the commands the firmware must execute.
func genJob(n int) (string, []string) {
	var b strings.Builder
	var cmds []string
	b.WriteString("; generated\n;TIME:120\nG28 ; home\n\n")
	cmds = append(cmds, "G28")
	for i := 1; i < n; i++ {
		cmd := fmt.Sprintf("G1 X%d.%d Y%d.%d E%d.%03d", i%200, i%10, (i*7)%200, i%9, i/100, i%1000)
		if i%50 == 0 {
			b.WriteString("; layer\n")
		}
		b.WriteString(cmd + "\n")
		cmds = append(cmds, cmd)
	}
	return b.String(), cmds
}

// jobCommands filters the executed record down to the job's commands (drops the connect
// sequence, polls and other housekeeping).
func jobCommands(executed []string) []string {
	var out []string
	for _, e := range executed {
		if strings.HasPrefix(e, "G1 ") || e == "G28" {
			out = append(out, e)
		}
	}
	return out
}
