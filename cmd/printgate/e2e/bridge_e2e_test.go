package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// uiBridgePort is printerd.BridgePort, the serial bridge on each printer's tunnel address.
const uiBridgePort = "8888"

// uiSocat is socat between a pipe and the bridge, run in p's namespace: what a desktop host
// (Pronterface, Repetier-Host) does with a TCP serial port.
type uiSocat struct {
	in    io.WriteCloser
	lines chan string // lines from the bridge; closed at EOF
}

func uiStartSocat(t *testing.T, p *uiPeer, addr string) *uiSocat {
	t.Helper()
	cmd := p.ns.cmd("socat", "-T", "30", "-", "TCP:"+addr)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &uiSocat{in: in, lines: make(chan string, 1024)}
	done := make(chan struct{}) // closed at cleanup: lines nobody reads are dropped
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(s.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case s.lines <- sc.Text():
			case <-done:
			}
		}
	}()
	t.Cleanup(func() {
		close(done)
		in.Close()
		done := make(chan struct{})
		go func() { wg.Wait(); cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if s := stderr.String(); s != "" {
			t.Logf("socat stderr: %s", s)
		}
	})
	return s
}

func (s *uiSocat) send(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(s.in, line+"\n"); err != nil {
		t.Fatalf("socat write %q: %v", line, err)
	}
}

// until reads lines until one satisfies stop; it returns every line read.
func (s *uiSocat) until(t *testing.T, what string, stop func(string) bool) []string {
	t.Helper()
	var got []string
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				t.Fatalf("bridge closed waiting for %s; got %q", what, got)
			}
			got = append(got, l)
			if stop(l) {
				return got
			}
		case <-timeout:
			t.Fatalf("no %s from the bridge within 20 s; got %q", what, got)
		}
	}
}

// uiTerminal follows the admin's native push (/api/v1/push), whose log messages are every
// line the controller writes to the printer ("Send: …") and reads from it ("Recv: …"): the
// record of what reached the simulator.
type uiTerminal struct {
	mu    sync.Mutex
	lines []string
}

func uiFollowTerminal(t *testing.T, ctx context.Context, u *uiLab) *uiTerminal {
	t.Helper()
	c := uiWS(t, ctx, u.admin, "ws://"+u.gw+"/api/v1/push")
	term := &uiTerminal{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			var m struct{ Type, Printer, Line string }
			if json.Unmarshal(b, &m) == nil && m.Type == "log" && m.Printer == uiPrinter {
				term.mu.Lock()
				term.lines = append(term.lines, m.Line)
				term.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { c.CloseNow(); <-done })
	return term
}

func (tm *uiTerminal) snapshot() []string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return append([]string(nil), tm.lines...)
}

// sent returns the lines sent to the printer whose command contains s.
func (tm *uiTerminal) sent(s string) []string {
	var out []string
	for _, l := range tm.snapshot() {
		if rest, ok := strings.CutPrefix(l, "Send: "); ok && strings.Contains(rest, s) {
			out = append(out, l)
		}
	}
	return out
}

// uiBridgeTest: socat from the admin's namespace through the tunnel to the bridge. A safe
// line reaches the simulator and its answer and ok come back; refused lines get the refusal
// and an ok and are never sent to the printer (the controller's own record of sent lines, as
// the admin's terminal push shows it, and the audit log prove it). A second client while one
// is connected, an operator and a viewer are all turned away.
func uiBridgeTest(t *testing.T, u *uiLab) {
	requireRoot(t, "socat")
	uiWaitIdle(t, u)
	addr := net.JoinHostPort(u.pr, uiBridgePort)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	term := uiFollowTerminal(t, ctx, u)

	t.Run("Admin", func(t *testing.T) {
		s := uiStartSocat(t, u.admin, addr)
		// M115: the simulator answers with its firmware name, relayed through the bridge.
		s.send(t, "M115")
		got := s.until(t, "FIRMWARE_NAME", func(l string) bool { return strings.Contains(l, "FIRMWARE_NAME") })
		// Its Cap: lines, then its ok: the bridge answers ok once the firmware has.
		got = append(got, s.until(t, "ok after M115", func(l string) bool { return strings.HasPrefix(l, "ok") })...)
		s.send(t, "M105")
		got = append(got, s.until(t, "ok", func(l string) bool { return strings.HasPrefix(l, "ok") })...)
		t.Logf("bridge answered M115/M105: %q", got)

		// A numbered, checksummed line as printcore sends it.
		line := "N1 M114"
		s.send(t, fmt.Sprintf("%s*%d", line, uiChecksum(line)))
		s.until(t, "ok for N1 M114", func(l string) bool { return strings.HasPrefix(l, "ok") })

		for _, bad := range []string{"M104 S400", "M997"} {
			s.send(t, bad)
			got := s.until(t, "ok after "+bad, func(l string) bool { return strings.HasPrefix(l, "ok") })
			refused := false
			for _, l := range got {
				refused = refused || strings.Contains(l, "refused")
			}
			if !refused {
				t.Errorf("bridge answer to %q = %q, want a refusal", bad, got)
			}
		}
		// Let the last sent lines reach the terminal push before it is read.
		s.send(t, "M114")
		s.until(t, "ok", func(l string) bool { return strings.HasPrefix(l, "ok") })
		waitFor(t, "M115 and M114 in the sent-lines record", 10*time.Second, func() bool {
			return len(term.sent("M115")) > 0 && len(term.sent("M114")) > 0
		})
		for _, bad := range []string{"M104 S400", "M997"} {
			if s := term.sent(bad); len(s) > 0 {
				t.Errorf("refused %q reached the printer: %q", bad, s)
			}
		}
		// Second client while this one is connected: busy.
		s2 := uiStartSocat(t, u.admin, addr)
		busy := s2.until(t, "busy", func(l string) bool { return strings.Contains(l, "busy") })
		t.Logf("second bridge client: %q", busy)
	})

	t.Run("Printcore", func(t *testing.T) {
		// Debian's printcore (Printrun), the streamer behind Pronterface, prints a file
		// through the bridge with numbered, checksummed lines; two of its lines are refused
		// and answered so that printcore carries on.
		requireRoot(t, "printcore")
		var b strings.Builder
		b.WriteString("G28\nG90\n")
		for i := range 30 {
			fmt.Fprintf(&b, "G1 X%d Y%d F3000\n", 10+i, 10+i)
			switch i {
			case 10:
				b.WriteString("M104 S400\n")
			case 20:
				b.WriteString("M997\n")
			}
		}
		b.WriteString("G1 X77 Y77 F3000\nM400\n")
		f := filepath.Join(t.TempDir(), "printcore.gcode")
		if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		before := len(term.snapshot())
		var out []byte
		waitFor(t, "printcore prints through the bridge (retried while the last client's session ends)", 90*time.Second, func() bool {
			var err error
			cmd := u.admin.ns.cmd("timeout", "60", "printcore", "-v", addr, f)
			out, err = cmd.CombinedOutput()
			if err != nil {
				t.Logf("printcore: %v\n%s", err, uiClip(out))
				return false
			}
			return !strings.Contains(string(out), "bridge busy") // not echo:busy: the firmware at work
		})
		if !strings.Contains(string(out), "refused") {
			t.Errorf("printcore saw no refusal:\n%s", uiClip(out))
		}
		waitFor(t, "the file's last move sent to the printer", 20*time.Second, func() bool {
			for _, l := range term.snapshot()[before:] {
				if strings.HasPrefix(l, "Send: ") && strings.Contains(l, "G1 X77 Y77") {
					return true
				}
			}
			return false
		})
		moves := 0
		for _, l := range term.snapshot()[before:] {
			if strings.HasPrefix(l, "Send: ") && strings.Contains(l, "G1 X") {
				moves++
			}
		}
		if moves < 31 {
			t.Errorf("%d of the file's 31 moves reached the printer", moves)
		}
		for _, bad := range []string{"M104 S400", "M997"} {
			if s := term.sent(bad); len(s) > 0 {
				t.Errorf("refused %q from printcore reached the printer: %q", bad, s)
			}
		}
	})

	t.Run("PrintcoreSliced", func(t *testing.T) {
		// Issue 16: a sliced file's start (heat, wait for bed and hotend), then 3,000
		// extruding moves, streamed by printcore. The bridge answers ok only when the
		// firmware has, so the waits hold printcore back: no move is refused as a cold
		// extrusion, every move reaches the printer, and no fragment of an ok (ADVANCED_OK's
		// "N.. P.. B..") reaches printcore.
		requireRoot(t, "printcore")
		const moves = 3000
		var b strings.Builder
		b.WriteString("; sliced\nM140 S35\nM104 S175\nM190 S35\nM109 S175\nG28\nG90\nM83\n")
		for i := range moves {
			fmt.Fprintf(&b, "G1 X%.1f Y%.1f E0.02 F6000\n", 50+float64(i%100)*0.2, 50+float64(i/100)*0.2)
		}
		b.WriteString("M104 S0\nM140 S0\n")
		f := filepath.Join(t.TempDir(), "sliced.gcode")
		if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		before := len(term.snapshot())
		var out []byte
		start := time.Now()
		waitFor(t, "printcore prints the sliced file through the bridge", 4*time.Minute, func() bool {
			var err error
			start = time.Now()
			cmd := u.admin.ns.cmd("timeout", "200", "printcore", "-v", addr, f)
			out, err = cmd.CombinedOutput()
			if err != nil {
				t.Logf("printcore: %v\n%s", err, uiClip(out))
				return false
			}
			return !strings.Contains(string(out), "bridge busy")
		})
		took := time.Since(start)
		stray := regexp.MustCompile(`RECV: *N-?\d+ P\d+ B\d+`)
		var refused, fragments int
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "refused") || strings.Contains(l, "cold extrusion") {
				refused++
			}
			if stray.MatchString(l) {
				fragments++
			}
		}
		sent := 0
		for _, l := range term.snapshot()[before:] {
			if strings.HasPrefix(l, "Send: ") && strings.Contains(l, " E0.02 ") {
				sent++
			}
		}
		t.Logf("printcore streamed %d moves after heat-up in %v: %d refused, %d ok fragments, %d moves reached the printer",
			moves, took.Round(100*time.Millisecond), refused, fragments, sent)
		if refused != 0 || fragments != 0 {
			t.Errorf("printcore saw %d refusals and %d ok fragments, want none:\n%s", refused, fragments, uiClip(out))
		}
		last := fmt.Sprintf("G1 X%.1f Y%.1f E0.02 F6000", 50+float64((moves-1)%100)*0.2, 50+float64((moves-1)/100)*0.2)
		if len(term.sent(last)) == 0 {
			t.Errorf("printcore finished before its last move %q reached the printer (the push saw %d moves)", last, sent)
		}
	})

	t.Run("SocatPTY", func(t *testing.T) {
		// docs/slicers.md for hosts that need a device file (Repetier-Host): socat makes a
		// pty linked to the bridge, and the host (here printcore) opens it as a serial port.
		requireRoot(t, "printcore")
		dir := t.TempDir()
		link := filepath.Join(dir, "printer")
		f := filepath.Join(dir, "pty.gcode")
		if err := os.WriteFile(f, []byte("G28\nG90\nG1 X55 Y55 F3000\nM104 S400\nG1 X66 Y66 F3000\nM400\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		before := len(term.snapshot())
		var out []byte
		waitFor(t, "printcore prints on the socat pty (retried while the last client's session ends)", 90*time.Second, func() bool {
			sc := u.admin.ns.cmd("socat", "pty,link="+link+",raw,echo=0", "tcp:"+addr)
			if err := sc.Start(); err != nil {
				t.Fatalf("socat: %v", err)
			}
			defer func() {
				sc.Process.Kill()
				sc.Wait()
				os.Remove(link)
			}()
			waitFor(t, "the socat pty link", 10*time.Second, func() bool {
				_, err := os.Stat(link)
				return err == nil
			})
			var err error
			out, err = exec.Command("timeout", "60", "printcore", "-v", link, f).CombinedOutput()
			if err != nil {
				t.Logf("printcore on the pty: %v\n%s", err, uiClip(out))
				return false
			}
			return !strings.Contains(string(out), "bridge busy") // not echo:busy: the firmware at work
		})
		if !strings.Contains(string(out), "refused") {
			t.Errorf("printcore on the pty saw no refusal of M104 S400:\n%s", uiClip(out))
		}
		waitFor(t, "the pty file's last move sent to the printer", 20*time.Second, func() bool {
			for _, l := range term.snapshot()[before:] {
				if strings.HasPrefix(l, "Send: ") && strings.Contains(l, "G1 X66 Y66") {
					return true
				}
			}
			return false
		})
		if s := term.sent("M104 S400"); len(s) > 0 {
			t.Errorf("refused M104 S400 through the pty reached the printer: %q", s)
		}
	})

	t.Run("AuditRecordsRefusals", func(t *testing.T) {
		r := uiMustCurl(t, u.admin.ns, "http://"+u.gw+"/api/v1/audit?n=200")
		var a struct {
			Records []struct {
				Peer, Action, Result string
				Args                 map[string]string
			}
		}
		if err := json.Unmarshal(r.body, &a); err != nil || r.code != 200 {
			t.Fatalf("GET /api/v1/audit = %v (%v), headers %v", r, err, r.h)
		}
		var refusals, opens int
		for _, rec := range a.Records {
			if rec.Peer != u.admin.name {
				continue
			}
			all := rec.Action + " " + rec.Result
			for _, v := range rec.Args {
				all += " " + v
			}
			if strings.Contains(all, "M104 S400") || strings.Contains(all, "M997") {
				refusals++
			}
			if rec.Action == "bridge.open" {
				opens++
			}
		}
		if refusals < 2 || opens < 1 {
			t.Errorf("audit log: %d refusal records of the admin's bridge lines and %d bridge.open, want at least 2 and 1:\n%s", refusals, opens, uiClip(r.body))
		}
	})

	for _, p := range []*uiPeer{u.operator, u.viewer} {
		t.Run("Refused/"+p.role, func(t *testing.T) {
			before := len(term.snapshot())
			s := uiStartSocat(t, p, addr)
			s.send(t, "M115")
			got := s.until(t, "admin-only refusal", func(l string) bool { return strings.Contains(l, "admin") })
			for l := range s.lines { // the bridge then closes the connection
				got = append(got, l)
			}
			for _, l := range got {
				if strings.Contains(l, "FIRMWARE_NAME") || strings.HasPrefix(l, "ok") {
					t.Errorf("%s got %q from the bridge", p.role, l)
				}
			}
			for _, l := range term.snapshot()[before:] {
				if strings.HasPrefix(l, "Send: ") && strings.Contains(l, "M115") {
					t.Errorf("%s's M115 reached the printer: %q", p.role, l)
				}
			}
		})
	}
}

// uiChecksum is Marlin's line checksum: the XOR of the bytes.
func uiChecksum(s string) int {
	c := 0
	for i := 0; i < len(s); i++ {
		c ^= int(s[i])
	}
	return c
}
