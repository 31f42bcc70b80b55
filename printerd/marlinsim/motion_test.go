package marlinsim

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/printgate/printgate/printerd/gcode"
)

// TestPlannerAdvancedOK fills the planner with long moves: P falls as blocks queue up.
func TestPlannerAdvancedOK(t *testing.T) {
	s := New(Config{AdvancedOK: true, TimeScale: 1, EmergencyParser: true})
	h := serve(t, s)
	h.boot()
	h.send("M110 N0")
	h.expect("ok P15 B3")
	for i := 1; i <= 5; i++ {
		// 100 mm at 1 mm/s: each block takes 100 s.
		h.send(gcode.Number(int64(i), fmt.Sprintf("G1 X%d F60", i*100)))
		h.expect(fmt.Sprintf("ok N%d P%d B3", i, 15-i))
	}
	h.send("M105")
	if l := h.next(); !tempRE.MatchString(l) {
		t.Errorf("M105 while moving: %q", l)
	}
	h.send("M410") // quickstop: the planner is emptied
	h.expect("ok P15 B3")
}

// TestLateOK: G4, G28 and M400 answer only after the machine time passed, with busy lines
// every 2 s (of machine time) meanwhile.
func TestLateOK(t *testing.T) {
	for _, cmd := range []string{"G4 S9", "G28", "M400"} {
		t.Run(cmd, func(t *testing.T) {
			s := New(Config{TimeScale: 0.005})
			h := serve(t, s)
			h.boot()
			if cmd == "M400" {
				// Queue 9 s of moves first; M400 waits for them.
				h.send("G1 X90 F600")
				h.expect("ok")
			}
			if cmd == "G28" {
				h.send("G1 X200 Y200 F60000")
				h.expect("ok")
			}
			h.send(cmd)
			got := h.until(func(l string) bool { return l == "ok" })
			if n := len(got) - 1; n < 2 || slices.ContainsFunc(got[:n], func(l string) bool { return l != strBusy }) {
				t.Errorf("%s: got %q, want busy lines, then ok", cmd, got)
			}
		})
	}
}

// TestQueueFullAndOverrun: while a handler blocks, the 4-slot queue fills, then the 128-byte
// ring, then bytes are dropped; the lines that fitted run in order afterwards.
func TestQueueFullAndOverrun(t *testing.T) {
	s := New(Config{TimeScale: 0.05})
	h := serve(t, s)
	h.boot()
	h.send("G4 S2") // 100 ms of wall time
	var lines []string
	for i := range 40 {
		lines = append(lines, fmt.Sprintf("M117 line %02d", i)) // 14 bytes + newline
	}
	h.send(lines...)
	oks := 0
	h.until(func(l string) bool { // the G4 and the 8 lines the ring surely held
		if l == "ok" {
			oks++
		}
		return oks == 9
	})
	// A line break ends whatever partial line the overrun left, then M105 marks the end.
	h.send("", "M105")
	h.until(func(l string) bool { return strings.HasPrefix(l, "ok T:") })
	st := s.Stats()
	if st.RXDropped == 0 {
		t.Fatalf("no bytes dropped: %+v", st)
	}
	ex := s.Executed()
	ex = ex[1 : len(ex)-1] // G4 ... M105
	// The ring holds 127 bytes: at least 8 whole lines, and the queue took some before that.
	n := 0
	for n < len(ex) && n < len(lines) && ex[n] == lines[n] {
		n++
	}
	if n < 8 || n > 14 || len(ex)-n > 1 {
		t.Errorf("after the overrun executed %q; want the first lines that fitted, in order, and at most one cut line", ex)
	}
}

// bootedPipe serves a simulator at baud on one end of a pipe and returns the host's end, a
// reader on it positioned after the boot banner, and the channel Serve's result arrives on.
func bootedPipe(b *testing.B, baud int) (net.Conn, *bufio.Reader, chan error) {
	s := New(Config{Baud: baud})
	a, c := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- s.Serve(b.Context(), c) }()
	r := bufio.NewReader(a)
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			b.Fatalf("boot banner: %v", err)
		}
		if strings.HasPrefix(l, "echo:Hardcoded") {
			return a, r, done
		}
	}
}

// BenchmarkPacing measures how close the paced wire comes to baud/10 bytes per second, in
// each direction. host→printer: unnumbered 40-byte lines written at once, each acknowledged
// (moves are instant); printer→host: M115 replies (about 1.2 kB each).
func BenchmarkPacing(b *testing.B) {
	for _, baud := range []int{115200, 250000} {
		line := "G1 X100.000 Y100.000 E1.00000 F1800 ;\n" // 39 bytes
		line = strings.Replace(line, ";", "", 1)
		b.Run(fmt.Sprintf("rx/%d", baud), func(b *testing.B) {
			const lines = 250
			var bytes int64
			var elapsed time.Duration
			for range b.N {
				a, r, done := bootedPipe(b, baud)
				go io.WriteString(a, strings.Repeat(line, lines))
				start := time.Now()
				for n := 0; n < lines; {
					l, err := r.ReadString('\n')
					if err != nil {
						b.Fatal(err)
					}
					if l == "ok\n" {
						n++
					}
				}
				elapsed += time.Since(start)
				bytes += int64(lines * len(line))
				a.Close()
				<-done
			}
			rate := float64(bytes) / elapsed.Seconds()
			b.ReportMetric(rate, "B/s")
			b.ReportMetric(rate/(float64(baud)/10), "wire-ratio")
		})
		b.Run(fmt.Sprintf("tx/%d", baud), func(b *testing.B) {
			const reports = 10
			var bytes int64
			var elapsed time.Duration
			for range b.N {
				a, r, done := bootedPipe(b, baud)
				io.WriteString(a, strings.Repeat("M115\n", reports))
				// Time from the first byte of the first reply to the last ok.
				first, err := r.ReadString('\n')
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				n, got := 0, int64(0)
				for n < reports {
					l, err := r.ReadString('\n')
					if err != nil {
						b.Fatal(err)
					}
					got += int64(len(l))
					if l == "ok\n" {
						n++
					}
				}
				elapsed += time.Since(start)
				bytes += got
				_ = first
				a.Close()
				<-done
			}
			rate := float64(bytes) / elapsed.Seconds()
			b.ReportMetric(rate, "B/s")
			b.ReportMetric(rate/(float64(baud)/10), "wire-ratio")
		})
	}
}

// BenchmarkPingPong measures a ping-pong host (one numbered line in flight, as OctoPrint and
// printcore stream) against the paced simulator, and compares lines/s with the ideal
// 1 / (line wire time + ok wire time + OKLatency).
func BenchmarkPingPong(b *testing.B) {
	for _, tc := range []struct {
		baud    int
		latency time.Duration
	}{{115200, 2 * time.Millisecond}, {250000, 2 * time.Millisecond}, {250000, 16 * time.Millisecond}} {
		b.Run(fmt.Sprintf("%d/%v", tc.baud, tc.latency), func(b *testing.B) {
			const lines = 200
			cmd := "G1 X100.000 Y100.000 E1.00000 F1800" // numbered: ~44 bytes with \n
			var elapsed time.Duration
			var wire int
			for range b.N {
				s := New(Config{Baud: tc.baud, OKLatency: tc.latency})
				a, c := net.Pipe()
				done := make(chan error, 1)
				go func() { done <- s.Serve(b.Context(), c) }()
				r := bufio.NewReader(a)
				for {
					l, _ := r.ReadString('\n')
					if strings.HasPrefix(l, "echo:Hardcoded") {
						break
					}
				}
				start := time.Now()
				for i := 1; i <= lines; i++ {
					l := gcode.Number(int64(i), cmd) + "\n"
					wire = len(l)
					if _, err := io.WriteString(a, l); err != nil {
						b.Fatal(err)
					}
					if ok, err := r.ReadString('\n'); err != nil || ok != "ok\n" {
						b.Fatalf("reply %q, %v", ok, err)
					}
				}
				elapsed += time.Since(start)
				a.Close()
				<-done
			}
			rate := float64(lines*b.N) / elapsed.Seconds()
			byteTime := 10 / float64(tc.baud)
			ideal := 1 / (float64(wire+3)*byteTime + tc.latency.Seconds())
			b.ReportMetric(rate, "lines/s")
			b.ReportMetric(rate/ideal, "ideal-ratio")
		})
	}
}

// TestDwell: G4 as Marlin's G4.cpp reads it (P whole milliseconds through strtoul, S seconds,
// S wins over P), and a dwell that M108 does not end even through the emergency parser (it
// only clears wait_for_heatup and wait_for_user; dwell() loops on the clock alone). The busy
// keepalive, set to 1 s of machine time, tells how long each dwell took.
func TestDwell(t *testing.T) {
	for _, tc := range []struct {
		cmd      string
		min, max int // busy lines before the ok
	}{
		{"G4 P4500", 4, 4},
		{"G4 P1e4", 0, 0}, // strtoul stops at 'e': 1 ms, not 10 s
		{"G4 P2500.9", 2, 2},
		{"G4 S2.5", 2, 2},
		{"G4 S0 P5000", 0, 0}, // S wins
		{"G4 P5000 S0.5", 0, 0},
		{"G4 P", 0, 0}, // no value: not seen
		{"G4 S5 M108", 4, 5},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			s := New(Config{EmergencyParser: true, TimeScale: 0.02})
			h := serve(t, s)
			h.boot()
			h.send("M113 S1")
			h.expect("ok")
			cmd, m108 := strings.CutSuffix(tc.cmd, " M108")
			h.send(cmd)
			if m108 {
				h.expect(strBusy)
				h.send("M108") // acted on at once by the emergency parser
			}
			got := h.until(func(l string) bool { return l == "ok" })
			busy := len(got) - 1
			if m108 {
				busy++
			}
			if busy < tc.min || busy > tc.max || slices.ContainsFunc(got[:len(got)-1], func(l string) bool { return l != strBusy }) {
				t.Errorf("%s: got %q, want %d to %d busy lines, then ok", tc.cmd, got, tc.min, tc.max)
			}
			if m108 {
				h.expect("ok") // M108's own, once the dwell is over
			}
		})
	}
}
