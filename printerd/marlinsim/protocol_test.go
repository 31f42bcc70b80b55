package marlinsim

import (
	"context"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/printgate/printgate/printerd/gcode"
)

func TestBootBanner(t *testing.T) {
	s := New(Config{})
	h := serve(t, s)
	got := h.boot()
	if got[0] != "start" {
		t.Fatalf("first line = %q, want %q", got[0], "start")
	}
	if !slices.Contains(got, "Marlin "+version) {
		t.Errorf("banner %q lacks the version line", got)
	}
}

// step is one line the host sends and the exact replies it then reads.
type step struct {
	send string
	want []string
}

// TestLineProtocol runs exchanges against a fresh simulator: what the host sends, what
// Marlin answers, and what it executed.
func TestLineProtocol(t *testing.T) {
	long := "M117 " + strings.Repeat("x", 150)
	ok := []string{"ok"}
	tests := []struct {
		name     string
		cfg      Config
		steps    []step
		executed []string // the whole record afterwards; nil: not checked
	}{
		{
			name: "checksum vectors",
			steps: []step{{"N-1 M110*15", ok}, {"N0 M110 N0*125", ok}, {"M110 N358", ok},
				{"N359 M205 X8 Y8*42", ok}, {"M110 N1644", ok},
				{"N1645 G1 X108.5 Y127.3 E480.88219*89", ok}, {"M110 N360", ok},
				{"N361 G1 X116.214 Y69.382 E210.35842*90", ok}},
			executed: []string{"M110", "M110 N0", "M110 N358", "M205 X8 Y8", "M110 N1644",
				"G1 X108.5 Y127.3 E480.88219", "M110 N360", "G1 X116.214 Y69.382 E210.35842"},
		},
		{
			name: "wrong line number",
			steps: []step{{"M110 N10", ok}, {gcode.Number(12, "G1 X1"), []string{
				"Error:Line Number is not Last Line Number+1, Last Line: 10", "Resend: 11", "ok"}}},
			executed: []string{"M110 N10"},
		},
		{
			name: "wrong line number, 2.0.x resend without ok",
			cfg:  Config{ResendWithoutOK: true},
			steps: []step{{"M110 N10", ok}, {gcode.Number(12, "G1 X1"), []string{
				"Error:Line Number is not Last Line Number+1, Last Line: 10", "Resend: 11"}},
				{"M110", ok}},
			executed: []string{"M110 N10", "M110"},
		},
		{
			name: "checksum mismatch",
			steps: []step{{"M110 N10", ok}, {"N11 G1 X1*1", []string{
				"Error:checksum mismatch, Last Line: 10", "Resend: 11", "ok"}}},
			executed: []string{"M110 N10"},
		},
		{
			name: "no checksum",
			steps: []step{{"M110 N10", ok}, {"N11 G1 X1", []string{
				"Error:No Checksum with line number, Last Line: 10", "Resend: 11", "ok"}}},
			executed: []string{"M110 N10"},
		},
		{
			name: "sequence checked before checksum",
			steps: []step{{"N5 G1 X1*0", []string{
				"Error:Line Number is not Last Line Number+1, Last Line: 0", "Resend: 1", "ok"}}},
			executed: []string{},
		},
		{
			name: "M110 forms",
			steps: []step{{gcode.Number(100, "M110"), ok}, {gcode.Number(101, "G1 X1"), ok},
				{"M110 N200", ok}, {gcode.Number(201, "G1 X2"), ok},
				{gcode.Number(301, "M110 N300"), ok}, {gcode.Number(301, "G1 X3"), ok}},
			executed: []string{"M110", "G1 X1", "M110 N200", "G1 X2", "M110 N300", "G1 X3"},
		},
		{
			name:     "unnumbered lines are not checked",
			steps:    []step{{"M110 N10", ok}, {"G1 X1*99", ok}, {"  G1 X2", ok}},
			executed: []string{"M110 N10", "G1 X1", "G1 X2"},
		},
		{
			name: "comments and empty lines get no ok",
			steps: []step{{"; only a comment", nil}, {"", nil}, {"G1 X1 ; move", ok},
				{gcode.Number(1, "G1 X2") + " ; c", ok}},
			executed: []string{"G1 X1", "G1 X2"},
		},
		{
			name: "MAX_CMD_SIZE cuts a numbered line's checksum off",
			steps: []step{{"N1 M117 " + strings.Repeat("y", 90) + "*12", []string{
				"Error:No Checksum with line number, Last Line: 0", "Resend: 1", "ok"}}},
			executed: []string{},
		},
		{
			name:     "MAX_CMD_SIZE cuts an unnumbered line to 95 bytes",
			steps:    []step{{long, ok}},
			executed: []string{long[:95]},
		},
		{
			name: "unknown command",
			steps: []step{{"G999 X1", []string{`echo:Unknown command: "G999 X1"`, "ok"}},
				{gcode.Number(1, "G998"), []string{`echo:Unknown command: "G998"`, "ok"}}},
			executed: []string{"G999 X1", "G998"},
		},
		{
			name: "advanced ok when idle",
			cfg:  Config{AdvancedOK: true},
			steps: []step{{"N0 M110 N0*125", []string{"ok N0 P15 B3"}},
				{gcode.Number(1, "G1 X10 F3000"), []string{"ok N1 P15 B3"}},
				{"G90", []string{"ok P15 B3"}}, {" N2 G90*18", []string{"ok P15 B3"}}},
		},
		{
			name:     "escape and backspace",
			steps:    []step{{"G1 X1\b2", ok}, {`M117 a\;b`, ok}},
			executed: []string{"G1 X2", "M117 a;b"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(tt.cfg)
			h := serve(t, s)
			h.boot()
			for _, st := range tt.steps {
				h.send(st.send)
				for _, w := range st.want {
					if got := h.next(); got != w {
						t.Fatalf("after %q the simulator said %q, want %q", st.send, got, w)
					}
				}
			}
			if tt.executed != nil {
				// A last exchange makes sure everything before it was handled.
				h.send("M105")
				h.until(func(l string) bool { return strings.HasPrefix(l, "ok T:") })
				got := s.Executed()
				got = got[:len(got)-1]
				if !slices.Equal(got, tt.executed) {
					t.Errorf("Executed() = %q, want %q", got, tt.executed)
				}
			}
		})
	}
}

var tempRE = regexp.MustCompile(`^ok T:\d+\.\d\d /\d+\.\d\d B:\d+\.\d\d /\d+\.\d\d @:\d+ B@:\d+$`)

func TestM105AndM115(t *testing.T) {
	for _, ep := range []bool{false, true} {
		s := New(Config{EmergencyParser: ep, AdvancedOK: true})
		h := serve(t, s)
		h.boot()
		h.send("M105")
		if got := h.next(); !tempRE.MatchString(got) {
			t.Errorf("M105 answer %q does not match %v", got, tempRE)
		}
		h.send("M115")
		got := h.until(func(l string) bool { return strings.HasPrefix(l, "ok") })
		if !strings.HasPrefix(got[0], "FIRMWARE_NAME:Marlin "+version+" (") {
			t.Errorf("M115 first line %q", got[0])
		}
		wantEP := "Cap:EMERGENCY_PARSER:0"
		if ep {
			wantEP = "Cap:EMERGENCY_PARSER:1"
		}
		for _, w := range []string{"Cap:AUTOREPORT_TEMP:1", wantEP, "Cap:THERMAL_PROTECTION:1"} {
			if !slices.Contains(got, w) {
				t.Errorf("M115 reply lacks %q: %q", w, got)
			}
		}
		if last := got[len(got)-1]; last != "ok P15 B3" {
			t.Errorf("M115 ended with %q, want %q", last, "ok P15 B3")
		}
	}
}

func TestPingPongExactlyOnce(t *testing.T) {
	for _, resendOK := range []bool{true, false} {
		s := New(Config{ResendWithoutOK: !resendOK, Noise: 0.05, Seed: 7})
		h := serve(t, s)
		h.boot()
		var cmds []string
		for i := range 2000 {
			cmds = append(cmds, "G1 X"+itoa(i%200)+" Y"+itoa(i%150)+" E0.5")
		}
		resends := h.pingPong(cmds, resendOK)
		if err := s.WaitExecuted(context.Background(), len(cmds)+1); err != nil {
			t.Fatal(err)
		}
		got := s.Executed()[1:]
		if !slices.Equal(got, cmds) {
			t.Fatalf("resendOK=%v: executed %d lines, want the %d sent, in order", resendOK, len(got), len(cmds))
		}
		st := s.Stats()
		if st.NoisyLines == 0 || int64(resends) < st.NoisyLines {
			t.Errorf("resendOK=%v: %d noisy lines, %d resends; want noise, each one resent", resendOK, st.NoisyLines, resends)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestNoiseDeterministic: the same seed and the same host bytes corrupt the same lines.
func TestNoiseDeterministic(t *testing.T) {
	run := func(seed uint64) []string {
		s := New(Config{Noise: 0.1, Seed: seed})
		h := serve(t, s)
		h.boot()
		var cmds []string
		for i := range 300 {
			cmds = append(cmds, "G1 X"+itoa(i)+" Y1")
		}
		h.send("M110 N0")
		h.expect("ok")
		// Ping-pong without resends: every line sent once, whatever the answer.
		var errs []string
		for i, c := range cmds {
			h.send(gcode.Number(int64(i+1), c))
			for _, l := range h.until(func(l string) bool { return l == "ok" }) {
				if strings.HasPrefix(l, "Error:") {
					errs = append(errs, itoa(i)+" "+l)
				}
			}
		}
		return errs
	}
	a, b, c := run(42), run(42), run(43)
	if len(a) == 0 || !slices.Equal(a, b) {
		t.Errorf("seed 42 twice: %q and %q, want the same errors", a, b)
	}
	if slices.Equal(a, c) {
		t.Errorf("seeds 42 and 43 gave the same errors %q", a)
	}
}
