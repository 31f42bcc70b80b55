package files

import (
	"bytes"
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/printgate/printgate/printerd/policy"
)

// BenchmarkPut measures a policy-checked 4 MiB upload: copy, hash, check, fsync, rename.
// cpu-s/100MB is the process's CPU time (all stages) per 100 MB stored.
func BenchmarkPut(b *testing.B) {
	p, _ := policy.New(policy.Limits{})
	s, err := New(Config{Dir: b.TempDir(), Check: p.CheckFile})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var sb strings.Builder
	for sb.Len() < 4<<20 {
		sb.WriteString("G1 X119.573 Y84.602 E1.30012 ; perimeter\nG1 F1200 X80.427 Y84.602 E.8\n")
	}
	body := []byte(sb.String())
	b.SetBytes(int64(len(body)))
	cpu0 := cpuTime()
	for b.Loop() {
		if _, err := s.Put(context.Background(), "", "bench.gcode", bytes.NewReader(body)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric((cpuTime()-cpu0).Seconds()*100e6/float64(len(body)*b.N), "cpu-s/100MB")
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
