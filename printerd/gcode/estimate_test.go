package gcode

import (
	"testing"
	"time"
)

func TestParseEstimate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"; estimated printing time (normal mode) = 1h 2m 3s", time.Hour + 2*time.Minute + 3*time.Second, true},
		{"; estimated printing time (normal mode) = 1d 0h 0m 5s\r", 24*time.Hour + 5*time.Second, true},
		{"; estimated printing time (silent mode) = 1h", 0, false},
		{"; total estimated time: 1h 5m 3s", time.Hour + 5*time.Minute + 3*time.Second, true},
		{"; total estimated time: 5m; model printing time: 4m", 5 * time.Minute, true},
		{";TIME:3723", 3723 * time.Second, true},
		{";TIME:12.5", 12500 * time.Millisecond, true},
		{";TIME:abc", 0, false},
		{";TIME:-5", 0, false},
		{"G1 X1", 0, false},
		{"; estimated printing time (normal mode) = 5x", 0, false},
		{"; estimated printing time (normal mode) =", 0, false},
	} {
		got, ok := ParseEstimate(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseEstimate(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func FuzzParseEstimate(f *testing.F) {
	for _, s := range []string{";TIME:1", "; estimated printing time (normal mode) = 1d 2h", "; total estimated time: 3m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d, ok := ParseEstimate(s); ok && d < 0 {
			t.Fatalf("ParseEstimate(%q) = %v, a negative duration", s, d)
		}
	})
}
