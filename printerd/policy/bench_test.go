package policy

import (
	"context"
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
