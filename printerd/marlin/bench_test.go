package marlin

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/printgate/printgate/printerd/marlinsim"
)

// The streaming benchmark of issue 4. It prints a table from one run and takes a few minutes,
// so it runs as a test gated by PRINTGATE_BENCH=1, or as BenchmarkStreaming under -bench:
//
//	PRINTGATE_BENCH=1 go test -run '^TestBench' -v -timeout 30m ./printerd/marlin/
//	go test -run '^$' -bench Streaming -v ./printerd/marlin/
//
// Every contender streams the same file of short G1 segments to the same simulator settings
// (marlinsim on a pty: BUFSIZE 4, 128-byte RX ring, instant moves so the firmware is never the
// bottleneck, paced wire, a per-ok latency). Lines/s and wire use are taken from the
// simulator's own record, first job line executed to last, so connect and boot times do not
// count: wire use = job bytes (numbered lines as executed, with "\n") / (elapsed × baud/10).

// benchLine is a ~40-byte numbered segment: "N1234 G1 X123.45 Y67.89 E1.2345*99".
func benchFile(n int) (string, int) {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "G1 X%d.%02d Y%d.%02d E%d.%04d\n", 100+i%100, i%100, 50+(i*7)%100, (i*3)%100, i/1000, i%10000)
	}
	return b.String(), n
}

type benchResult struct {
	lines     int
	elapsed   time.Duration
	wireBytes int64
}

func (r benchResult) rate() float64 { return float64(r.lines) / r.elapsed.Seconds() }

func (r benchResult) util(baud int) float64 {
	return float64(r.wireBytes) / (r.elapsed.Seconds() * float64(baud) / 10)
}

// measure reads the job's span from the simulator's record: executions since mark whose line
// starts with "G1 X".
func measure(sim *marlinsim.Sim, mark int) benchResult {
	rec := sim.Record()[mark:]
	var first, last time.Time
	var r benchResult
	for _, e := range rec {
		if !strings.HasPrefix(e.Line, "G1 X") {
			continue
		}
		if first.IsZero() {
			first = e.Time
		}
		last = e.Time
		r.lines++
		r.wireBytes += int64(len(e.Raw) + 1)
	}
	// n lines span n-1 intervals.
	if r.lines > 1 {
		r.elapsed = last.Sub(first) * time.Duration(r.lines) / time.Duration(r.lines-1)
	}
	return r
}

func benchPrintgate(t testing.TB, baud int, lat time.Duration, advanced bool, n int) benchResult {
	t.Helper()
	sp := startSimPort(t, marlinsim.Config{Baud: baud, OKLatency: lat, AdvancedOK: advanced})
	c := simController(t, sp, Config{Baud: baud, Logf: func(string, ...any) {}})
	waitStateTB(t, c, Operational)
	time.Sleep(100 * time.Millisecond)
	mark := len(sp.Sim.Record())
	text, _ := benchFile(n)
	startJob(t, c, text)
	if j := waitJobEnd(t, c, 10*time.Minute); !j.Done {
		t.Fatalf("job %+v", j)
	}
	return measure(sp.Sim, mark)
}

func benchPrintcore(t testing.TB, baud int, lat time.Duration, n int) (benchResult, bool) {
	t.Helper()
	const bin = "/usr/bin/printcore"
	if _, err := os.Stat(bin); err != nil {
		return benchResult{}, false
	}
	sp := startSimPort(t, marlinsim.Config{Baud: baud, OKLatency: lat})
	text, _ := benchFile(n)
	file := filepath.Join(t.TempDir(), "bench.gcode")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-b", fmt.Sprint(baud), sp.Path, file)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("printcore: %v", err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	// printcore exits when the print is done; wait for every line to be executed.
	for {
		r := measure(sp.Sim, 0)
		if r.lines >= n {
			break
		}
		select {
		case err := <-waitErr:
			t.Fatalf("printcore exited (%v) after %d of %d lines: %s", err, r.lines, n, out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	cancel()
	<-waitErr
	return measure(sp.Sim, 0), true
}

func TestBenchStreaming(t *testing.T) {
	if os.Getenv("PRINTGATE_BENCH") == "" {
		t.Skip("set PRINTGATE_BENCH=1 to run the streaming benchmark (minutes)")
	}
	table, _ := streamingBench(t)
	t.Logf("streaming, one run:\n%s", table)
}

// BenchmarkStreaming runs the same comparison once for `go test -bench` (make bench) and
// reports the headline figures as metrics; the table goes to the log (-v).
func BenchmarkStreaming(b *testing.B) {
	var table string
	var m map[string]float64
	for range b.N {
		table, m = streamingBench(b)
	}
	for k, v := range m {
		b.ReportMetric(v, k)
	}
	b.Logf("streaming, one run:\n%s", table)
}

// streamingBench measures every row and returns the table and the headline metrics.
func streamingBench(t testing.TB) (string, map[string]float64) {
	type row struct {
		baud        int
		lat         time.Duration
		adv, pp, pc benchResult
		havePC      bool
		ceiling     float64
		lineBytes   float64
	}
	var rows []row
	metrics := map[string]float64{}
	for _, baud := range []int{115200, 250000} {
		for _, lat := range []time.Duration{2 * time.Millisecond, 16 * time.Millisecond} {
			fast, slow := 3000, 1500
			if lat > 5*time.Millisecond {
				slow = 400
			}
			r := row{baud: baud, lat: lat}
			r.adv = benchPrintgate(t, baud, lat, true, fast)
			r.pp = benchPrintgate(t, baud, lat, false, slow)
			r.pc, r.havePC = benchPrintcore(t, baud, lat, slow)
			r.lineBytes = float64(r.adv.wireBytes) / float64(r.adv.lines)
			r.ceiling = float64(baud) / 10 / r.lineBytes
			rows = append(rows, r)
			key := fmt.Sprintf("%d_%dms", baud, lat.Milliseconds())
			metrics["adv_wire_pct_"+key] = 100 * r.adv.util(baud)
			if r.havePC {
				metrics["adv_per_printcore_"+key] = r.adv.rate() / r.pc.rate()
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| baud | ok latency | wire ceiling (lines/s, %.1f B/line) | printgate ADVANCED_OK | printgate ping-pong | printcore | ADVANCED_OK ÷ ceiling | ADVANCED_OK ÷ printcore | ping-pong ÷ printcore |\n", rows[0].lineBytes)
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		pc, advPC, ppPC := "skipped (no /usr/bin/printcore)", "-", "-"
		if r.havePC {
			pc = fmt.Sprintf("%.0f lines/s (%.0f%% wire)", r.pc.rate(), 100*r.pc.util(r.baud))
			advPC = fmt.Sprintf("%.2f×", r.adv.rate()/r.pc.rate())
			ppPC = fmt.Sprintf("%.2f×", r.pp.rate()/r.pc.rate())
		}
		fmt.Fprintf(&b, "| %d | %v | %.0f | %.0f lines/s (%.0f%% wire) | %.0f lines/s (%.0f%% wire) | %s | %.0f%% | %s | %s |\n",
			r.baud, r.lat, r.ceiling, r.adv.rate(), 100*r.adv.util(r.baud), r.pp.rate(), 100*r.pp.util(r.baud), pc,
			100*r.adv.rate()/r.ceiling, advPC, ppPC)
	}
	return b.String(), metrics
}

// TestBenchEightPrinters streams to 8 simulated printers at once and reports the gateway's
// CPU time per 1,000 lines. The simulators run in a child process (this test binary again),
// so getrusage(RUSAGE_SELF) counts only the controllers.
func TestBenchEightPrinters(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		runSimHelper(t)
		return
	}
	if os.Getenv("PRINTGATE_BENCH") == "" {
		t.Skip("set PRINTGATE_BENCH=1 to run the 8-printer benchmark")
	}
	msg, _ := eightPrinters(t)
	t.Log(msg)
}

// BenchmarkEightPrinters is TestBenchEightPrinters for `go test -bench`.
func BenchmarkEightPrinters(b *testing.B) {
	var msg string
	var perK float64
	for range b.N {
		msg, perK = eightPrinters(b)
	}
	b.ReportMetric(perK, "cpu-ms/1000lines")
	b.Log(msg)
}

func eightPrinters(t testing.TB) (string, float64) {
	const printers, lines, baud = 8, 3000, 250000
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchEightPrinters$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", helperEnv, printers))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	var paths []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "PATHS "); ok {
			if err := json.Unmarshal([]byte(p), &paths); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	go io.Copy(io.Discard, stdout)
	if len(paths) != printers {
		t.Fatalf("helper gave %d ports, want %d", len(paths), printers)
	}
	ctrls := make([]*Controller, printers)
	for i, p := range paths {
		ctrls[i] = simController(t, &simPort{Path: p}, Config{Name: fmt.Sprintf("p%d", i), Baud: baud, Logf: func(string, ...any) {}})
	}
	for _, c := range ctrls {
		waitStateTB(t, c, Operational)
	}
	text, _ := benchFile(lines)
	before := cpuTime(t)
	start := time.Now()
	var wg sync.WaitGroup
	for _, c := range ctrls {
		startJob(t, c, text)
	}
	for _, c := range ctrls {
		wg.Add(1)
		go func() { defer wg.Done(); waitJobEnd(t, c, 10*time.Minute) }()
	}
	wg.Wait()
	wall := time.Since(start)
	cpu := cpuTime(t) - before
	total := printers * lines
	for _, c := range ctrls {
		if j := c.Status().Job; !j.Done {
			t.Fatalf("%s: job %+v", c.Status().Name, j)
		}
	}
	perK := float64(cpu.Microseconds()) / 1000 / float64(total) * 1000
	return fmt.Sprintf("8 printers × %d lines at %d baud, 2 ms ok latency, ADVANCED_OK: wall %v, %.0f lines/s in total; gateway CPU %v = %.1f ms per 1,000 lines",
		lines, baud, wall.Round(time.Millisecond), float64(total)/wall.Seconds(), cpu.Round(time.Millisecond), perK), perK
}

const helperEnv = "PRINTGATE_BENCH_SIM_HELPER"

// runSimHelper is the child of TestBenchEightPrinters: it serves simulators on ptys, prints
// their paths, and runs until its stdin closes.
func runSimHelper(t *testing.T) {
	var n int
	fmt.Sscan(os.Getenv(helperEnv), &n)
	var paths []string
	for i := 0; i < n; i++ {
		sp := startSimPort(t, marlinsim.Config{Baud: 250000, OKLatency: 2 * time.Millisecond, AdvancedOK: true})
		paths = append(paths, sp.Path)
	}
	b, _ := json.Marshal(paths)
	fmt.Printf("PATHS %s\n", b)
	io.Copy(io.Discard, os.Stdin)
}

func cpuTime(t testing.TB) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
