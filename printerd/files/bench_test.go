package files

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/printgate/printgate/printerd/policy"
)

// BenchmarkPut measures a policy-checked 4 MiB upload: copy, hash, check, fsync, rename.
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
	for b.Loop() {
		if _, err := s.Put(context.Background(), "", "bench.gcode", bytes.NewReader(body)); err != nil {
			b.Fatal(err)
		}
	}
}
