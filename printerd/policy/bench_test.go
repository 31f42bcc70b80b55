package policy

import (
	"context"
	"strings"
	"testing"

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
	for b.Loop() {
		if err := p.CheckFile(context.Background(), strings.NewReader(body)); err != nil {
			b.Fatal(err)
		}
	}
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
