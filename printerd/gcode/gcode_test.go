package gcode

import (
	"errors"
	"testing"
)

func TestNumberVectors(t *testing.T) {
	// Vectors from the Marlin reference, matched against real firmware logs.
	for _, want := range []string{
		"N-1 M110*15", "N0 M110 N0*125", "N359 M205 X8 Y8*42",
		"N1645 G1 X108.5 Y127.3 E480.88219*89", "N361 G1 X116.214 Y69.382 E210.35842*90",
	} {
		l, err := Parse(want)
		if err != nil {
			t.Fatalf("Parse(%q) error %v", want, err)
		}
		if got := Number(l.Number, l.Raw); got != want {
			t.Errorf("Number(%d, %q) = %q, want %q", l.Number, l.Raw, got, want)
		}
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		word    string
		raw     string
		params  int
		text    string
		wantErr error
	}{
		{in: "G1 X10 Y20 ; move", word: "G1", raw: "G1 X10 Y20", params: 2},
		{in: "g01x1.5y-2", word: "G1", raw: "g01x1.5y-2", params: 2},
		{in: "M104 S200 (hot) T0", word: "M104", raw: "M104 S200  T0", params: 2},
		{in: "   ; only a comment", word: ""},
		{in: "", word: ""},
		{in: "M117 Hello; world", word: "M117", raw: "M117 Hello", text: "Hello"},
		{in: "G29.1 X", word: "G29.1", raw: "G29.1 X", params: 1},
		{in: "N5 G1 X1*99", wantErr: ErrSumWrong},
		{in: "G1 X1\x00", wantErr: ErrBadChar},
		{in: "G1 X1\nM104 S300", wantErr: ErrBadChar},
		{in: "Ñ", wantErr: ErrBadChar},
		{in: "G1 X1 ; Größe Ñ", word: "G1", raw: "G1 X1", params: 1},
		{in: "G1 X1 (Größe)", word: "G1", raw: "G1 X1", params: 1},
		{in: "G1 X1\r\n", word: "G1", raw: "G1 X1", params: 1},
		{in: "G1 ;x\nM104 S300", wantErr: ErrBadChar},
		{in: "G1 X1 (a\x7f)", wantErr: ErrBadChar},
		{in: "X10", wantErr: ErrBadWord},
		{in: "N5*1", wantErr: ErrSumWrong},
		{in: "G1*abc", wantErr: ErrBadSum},
	}
	for _, tt := range tests {
		l, err := Parse(tt.in)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Parse(%q) error = %v, want %v", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q) error = %v", tt.in, err)
			continue
		}
		if l.Word != tt.word || l.Raw != tt.raw || len(l.Params) != tt.params || l.Text != tt.text {
			t.Errorf("Parse(%q) = word %q raw %q params %v text %q, want %q %q %d %q",
				tt.in, l.Word, l.Raw, l.Params, l.Text, tt.word, tt.raw, tt.params, tt.text)
		}
	}
}

func TestFloat(t *testing.T) {
	l, _ := Parse("M104 S215.5 T")
	if v, ok, err := l.Float('S'); !ok || err != nil || v != 215.5 {
		t.Errorf("Float(S) = %v %v %v", v, ok, err)
	}
	if _, ok, err := l.Float('T'); !ok || err == nil {
		t.Errorf("Float(T) with empty value = ok %v err %v, want an error", ok, err)
	}
	for _, bad := range []string{"M104 SNaN", "M104 SInf", "M104 S-Inf"} {
		l, _ := Parse(bad)
		if _, _, err := l.Float('S'); err == nil {
			t.Errorf("Parse(%q).Float('S') accepted a non-finite value", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"G1 X1", "N1 M110 N0*125", "M117 hi;x", "(a)G0", "T1", "N-5 G1*3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := Parse(s)
		if err != nil {
			return
		}
		if l.Empty() != (l.Raw == "") {
			t.Fatalf("Parse(%q): Empty()=%v but Raw=%q", s, l.Empty(), l.Raw)
		}
		if l.Raw == "" {
			return
		}
		// A parsed command framed with a number must parse back to the same command.
		framed := Number(7, l.Raw)
		l2, err := Parse(framed)
		if err != nil || l2.Raw != l.Raw || l2.Number != 7 || l2.Word != l.Word {
			t.Fatalf("round trip of %q via %q = %+v, %v", s, framed, l2, err)
		}
	})
}
