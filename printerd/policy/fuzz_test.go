package policy

import (
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/printgate/printgate/printerd/marlin"
)

// dangerous are lines that must be refused however they are dressed up.
var dangerous = []string{"M104 S400", "M109 R400", "M140 S200", "M190 S200", "M141 S120",
	"M303 E0 S400", "M997", "M500", "M502", "M42 P4 S255", "M211 S0", "M302 P1", "M28 x.g",
	"M575 B9600", "M81", "M510", "M120", "M43 T", "M260 A1", "G92 Z5"}

// FuzzCheck feeds arbitrary lines, and dangerous lines dressed with arbitrary case, spacing and
// comments, through Parse and the policy. It checks that nothing panics and that whatever is
// allowed is harmless when read the way Marlin's own parser reads it: the command word Marlin
// sees is the one the policy checked, and no S/R/B value, read with C's strtod (exponents,
// hex, spaces after the letter), exceeds the limit.
func FuzzCheck(f *testing.F) {
	for _, s := range dangerous {
		f.Add(s, uint8(0))
	}
	for _, s := range []string{"m104s400", "M104 S400 ; x", "M104 S 400", "M104 S4e2", "M104 S100 S400",
		"M104 S0x190", "M 104 S400", "M0104 S400", "M104\tS400", "(x)M104 S400", "M104 (c) S400",
		"M104 S200*5", "N1 M104 S400*0", "M104 S+400", "M104 S.4e3", "M104 Sinf", "M104 S400\r",
		"M112", "G1 X10 Y10", "T0", "M486 AM104 S400"} {
		f.Add(s, uint8(1))
	}
	p, err := New(Limits{Extruders: 2})
	if err != nil {
		f.Fatal(err)
	}
	roles := []Role{Viewer, Operator, Admin, Job}
	f.Fuzz(func(t *testing.T, s string, pick uint8) {
		lines := []string{s}
		// Dress a dangerous line with s: as separator, as case pattern, as comment.
		d := dangerous[int(pick)%len(dangerous)]
		lines = append(lines,
			strings.ReplaceAll(d, " ", s),
			d+s,
			s+d,
			d+" ;"+s,
			mixCase(d, s))
		for _, line := range lines {
			for _, r := range roles {
				st := marlin.Status{State: marlin.Operational}
				l, err := p.CheckLine(r, line, st)
				if err == nil {
					allowedIsHarmless(t, p, line, l.Raw, l.Word)
					if err := p.Check(l, st); err != nil && !emergency(l.Word) {
						// The Filter is wider than every role: what a role may send, it passes.
						t.Fatalf("CheckLine(%s, %q) allowed %q but Check refused: %v", r, line, l.Raw, err)
					}
				} else if rule(t, err) == "" {
					t.Fatalf("CheckLine(%s, %q): non-refusal error %v", r, line, err)
				}
			}
		}
	})
}

// mixCase flips the case of d's letters where the matching byte of pattern is odd.
func mixCase(d, pattern string) string {
	b := []byte(d)
	for i := range b {
		if i < len(pattern) && pattern[i]&1 == 1 {
			switch c := b[i]; {
			case c >= 'A' && c <= 'Z':
				b[i] = c + 32
			case c >= 'a' && c <= 'z':
				b[i] = c - 32
			}
		}
	}
	return string(b)
}

func allowedIsHarmless(t *testing.T, p *Policy, line, raw, word string) {
	t.Helper()
	if emergency(word) {
		if raw != word {
			t.Fatalf("CheckLine(%q): emergency sends %q, want %q", line, raw, word)
		}
		return
	}
	if raw == "" {
		return
	}
	if len(raw) > MaxCommandBytes {
		t.Fatalf("CheckLine(%q) allowed %d bytes", line, len(raw))
	}
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c < 0x20 && c != '\t' || c >= 0x7f || c == '\\' || c == ';' {
			t.Fatalf("CheckLine(%q) allowed byte %q in %q", line, c, raw)
		}
	}
	mw, rest := marlinWord(raw)
	if mw != word {
		t.Fatalf("CheckLine(%q) checked %s, but Marlin reads %q as %s", line, word, raw, mw)
	}
	if _, bad := refusals[word]; bad {
		t.Fatalf("CheckLine(%q) allowed %s, which is on the refusal list", line, word)
	}
	if _, ok := allowed[word]; !ok && word[0] != 'T' {
		t.Fatalf("CheckLine(%q) allowed %s, which is not on the allow-list", line, word)
	}
	var max float64
	switch word {
	case "M104", "M109", "M303":
		max = p.lim.MaxHotend
	case "M140", "M190":
		max = p.lim.MaxBed
	case "M141", "M191":
		max = p.lim.MaxChamber
	default:
		return
	}
	if word == "M303" {
		max = math.Max(p.lim.MaxHotend, p.lim.MaxBed)
	}
	for i := 0; i < len(rest); i++ {
		switch rest[i] {
		case 'S', 's', 'R', 'r', 'B', 'b':
			if v, ok := strtod(rest[i+1:]); ok && !(v <= max) {
				t.Fatalf("CheckLine(%q) allowed %q: Marlin could read %c as %v, above %v", line, raw, rest[i], v, max)
			}
		}
	}
}

// marlinWord reads the command word the way Marlin's parser does: a letter, optional spaces,
// digits read as a number (leading zeros vanish), an optional .subcode.
func marlinWord(raw string) (string, string) {
	s := strings.TrimLeft(raw, " ")
	if s == "" {
		return "", ""
	}
	letter := s[0] &^ 0x20
	s = strings.TrimLeft(s[1:], " ")
	j := 0
	for j < len(s) && s[j] >= '0' && s[j] <= '9' {
		j++
	}
	n, err := strconv.Atoi(s[:j])
	if err != nil {
		return "?", s
	}
	w := string(letter) + strconv.Itoa(n)
	if j < len(s) && s[j] == '.' {
		k := j + 1
		for k < len(s) && s[k] >= '0' && s[k] <= '9' {
			k++
		}
		if k > j+1 {
			w += s[j:k] // "M117." has no subcode
		}
		j = k
	}
	return w, s[j:]
}

// strtod reads the longest number C's strtod would at the start of s: spaces, sign, decimal
// with exponent, hex, inf, nan.
func strtod(s string) (float64, bool) {
	s = strings.TrimLeft(s, " \t")
	t := strings.TrimLeft(s, "+-")
	if len(t) > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X') {
		j := 2
		for j < len(t) && strings.IndexByte("0123456789abcdefABCDEF", t[j]) >= 0 {
			j++
		}
		if v, err := strconv.ParseUint(t[2:j], 16, 64); err == nil {
			return float64(v), true
		}
	}
	for j := len(s); j > 0; j-- {
		if v, err := strconv.ParseFloat(s[:j], 64); err == nil {
			return math.Abs(v), true
		}
	}
	return 0, false
}
