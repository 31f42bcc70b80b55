package policy

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/printgate/printgate/printerd/marlin"
)

// BenchmarkCheckFile measures the upload check over a slicer-like file (bytes/s via SetBytes).
func BenchmarkCheckFile(b *testing.B) {
	p, _ := New(Limits{})
	var sb strings.Builder
	sb.WriteString(prusaFile + "\n")
	for i := 0; sb.Len() < 4<<20; i++ {
		sb.WriteString("G1 X119.573 Y84.602 E1.30012 ; perimeter\nG1 F1200 X80.427 Y84.602 E.8\n")
	}
	body := sb.String()
	b.SetBytes(int64(len(body)))
	cpu0 := cpuTime()
	for b.Loop() {
		if err := p.CheckFile(context.Background(), strings.NewReader(body)); err != nil {
			b.Fatal(err)
		}
	}
	// On a shared machine wall time swings; CPU time says what one core does.
	b.ReportMetric(float64(len(body))*float64(b.N)/1e6/(cpuTime()-cpu0).Seconds(), "MB/cpu-s")
}

// BenchmarkCheckFileSlicer is BenchmarkCheckFile on lines whose numbers vary as a slicer's do
// (bench/throughput's file): value lengths change from line to line, as branch predictors
// see them in a real upload.
func BenchmarkCheckFileSlicer(b *testing.B) {
	p, _ := New(Limits{})
	body := slicerFile(4 << 20)
	b.SetBytes(int64(len(body)))
	cpu0 := cpuTime()
	for b.Loop() {
		if err := p.CheckFile(context.Background(), strings.NewReader(body)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(body))*float64(b.N)/1e6/(cpuTime()-cpu0).Seconds(), "MB/cpu-s")
}

// slicerFile is about size bytes of G-code as bench/throughput writes it: moves with varying
// coordinates, layer changes, fan lines.
func slicerFile(size int) string {
	var sb strings.Builder
	sb.WriteString(prusaFile + "\n")
	x, y, e := 100.0, 100.0, 0.0
	for i := 0; sb.Len() < size; i++ {
		switch {
		case i%500 == 0:
			fmt.Fprintf(&sb, ";LAYER_CHANGE\n;Z:%.2f\nG1 Z%.3f F720\n;TYPE:Perimeter\nM106 S%d\n", float64(i/500)*0.2, float64(i/500)*0.2+0.2, i%256)
		case i%7 == 0:
			fmt.Fprintf(&sb, "G1 F1800 X%.3f Y%.3f\n", x, y)
		default:
			fmt.Fprintf(&sb, "G1 X%.3f Y%.3f E%.5f\n", x, y, e)
		}
		x = 20 + float64((i*37)%16000)/100
		y = 20 + float64((i*53)%16000)/100
		e = float64(i%997) / 1000
	}
	return sb.String()
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCheck measures the controller's per-line filter on a typical move.
func BenchmarkCheck(b *testing.B) {
	p, _ := New(Limits{})
	l, err := Parse("G1 X119.573 Y84.602 E1.30012")
	if err != nil {
		b.Fatal(err)
	}
	s := marlin.Status{State: marlin.Printing}
	for b.Loop() {
		if err := p.Check(l, s); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckFileRef is the reference checker (before the fast path) on the same file.
func BenchmarkCheckFileRef(b *testing.B) {
	p, _ := New(Limits{})
	var sb strings.Builder
	sb.WriteString(prusaFile + "\n")
	for i := 0; sb.Len() < 4<<20; i++ {
		sb.WriteString("G1 X119.573 Y84.602 E1.30012 ; perimeter\nG1 F1200 X80.427 Y84.602 E.8\n")
	}
	body := sb.String()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if err := checkFileRef(p, context.Background(), strings.NewReader(body)); err != nil {
			b.Fatal(err)
		}
	}
}
