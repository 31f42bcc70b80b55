// Package gcode is the shared vocabulary for G-code lines: parsing a line into its command
// word and parameters, stripping comments, and Marlin's line numbering and XOR checksum.
//
// Everything that touches G-code (the host protocol, the safety policy, the simulator, the file
// store) parses lines here, so that every path agrees on what a line means.
package gcode

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MaxLineBytes is the longest line, line number and checksum included, that Marlin accepts
// whole: MAX_CMD_SIZE 96 leaves 95 bytes before the rest of the line is silently dropped.
const MaxLineBytes = 95

// Line is one parsed G-code command.
type Line struct {
	// Raw is the command text with comments and surrounding space removed, and without any
	// line number or checksum. Empty for a blank or comment-only line.
	Raw string
	// Number is the line number given with N, and HasNumber says whether there was one.
	Number    int64
	HasNumber bool
	// Checksum is the value after '*', and HasChecksum says whether there was one.
	Checksum    int
	HasChecksum bool
	// Word is the command word in upper case: "G1", "M104", "T0". Empty for a blank line.
	Word string
	// Params are the parameters after the word, in order. A parameter's letter is upper case;
	// Value is the text after the letter (possibly empty, as in "G28 X").
	Params []Param
	// Text is the free text argument of commands that take one (M117, M118, M23, M28, M30,
	// M32, M928): everything after the word, as written.
	Text string
}

// Param is one letter-value parameter of a command.
type Param struct {
	Letter byte
	Value  string
}

// Empty reports whether the line holds no command.
func (l Line) Empty() bool { return l.Word == "" }

// Has reports whether the line has a parameter with the given letter.
func (l Line) Has(letter byte) bool {
	_, ok := l.Param(letter)
	return ok
}

// Param returns the value text of the first parameter with the given letter.
func (l Line) Param(letter byte) (string, bool) {
	for _, p := range l.Params {
		if p.Letter == letter {
			return p.Value, true
		}
	}
	return "", false
}

// Float returns the numeric value of the parameter with the given letter. ok is false when the
// parameter is absent; err is set when it is present but not a finite number.
func (l Line) Float(letter byte) (v float64, ok bool, err error) {
	s, ok := l.Param(letter)
	if !ok {
		return 0, false, nil
	}
	v, err = strconv.ParseFloat(s, 64)
	if err != nil || v != v || v > 1e300 || v < -1e300 {
		return 0, true, fmt.Errorf("parameter %c: %q is not a number", letter, s)
	}
	return v, true, nil
}

// textCommands take a free-text argument rather than letter parameters.
var textCommands = map[string]bool{
	"M23": true, "M28": true, "M30": true, "M32": true, "M117": true, "M118": true, "M928": true,
	"M33": true, "M34": true, "M919": true,
}

// TakesText reports whether word (upper case, as Line.Word) takes a free-text argument, so
// that Parse leaves its Params empty and sets Text.
func TakesText(word string) bool { return textCommands[word] }

// StripComment removes a ';' comment and any parenthesised comments, and trims space.
func StripComment(s string) string {
	if i := strings.IndexByte(s, ';'); i >= 0 {
		s = s[:i]
	}
	if strings.IndexByte(s, '(') >= 0 {
		var b strings.Builder
		depth := 0
		for i := 0; i < len(s); i++ {
			switch c := s[i]; {
			case c == '(':
				depth++
			case c == ')' && depth > 0:
				depth--
			case depth == 0:
				b.WriteByte(c)
			}
		}
		s = b.String()
	}
	return strings.TrimSpace(s)
}

// Errors returned by Parse. They are wrapped with detail; test with errors.Is.
var (
	ErrBadChar   = errors.New("line holds a control or non-ASCII character")
	ErrBadNumber = errors.New("malformed line number")
	ErrBadSum    = errors.New("malformed checksum")
	ErrSumWrong  = errors.New("checksum mismatch")
	ErrBadWord   = errors.New("malformed command word")
)

// Parse parses one line as a host or a file would send it. Comments are removed first. A line
// number and checksum, when present, are checked and reported; the checksum must match.
// A blank or comment-only line parses to an empty Line and no error.
func Parse(s string) (Line, error) {
	s = strings.TrimRight(s, "\r\n")
	// Control characters are refused anywhere in the line: an embedded CR or LF would make the
	// firmware see two lines where the policy checked one. Non-ASCII is refused only in the
	// command part; comments may hold any text (slicers write UTF-8 object names there).
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return Line{}, fmt.Errorf("%w at byte %d", ErrBadChar, i)
		}
	}
	s = StripComment(s)
	for i := 0; i < len(s); i++ {
		if s[i] > 0x7e {
			return Line{}, fmt.Errorf("%w in the command part at byte %d", ErrBadChar, i)
		}
	}
	var l Line
	if s == "" {
		return l, nil
	}
	// Checksum: everything after the last '*'.
	if i := strings.LastIndexByte(s, '*'); i >= 0 {
		cs, err := strconv.Atoi(strings.TrimSpace(s[i+1:]))
		if err != nil || cs < 0 || cs > 255 {
			return Line{}, fmt.Errorf("%w: %q", ErrBadSum, s[i+1:])
		}
		body := strings.TrimSpace(s[:i])
		if got := Checksum(body); got != byte(cs) {
			return Line{}, fmt.Errorf("%w: line says %d, computed %d", ErrSumWrong, cs, got)
		}
		l.Checksum, l.HasChecksum = cs, true
		s = body
	}
	// Line number: N at the very start.
	if s != "" && (s[0] == 'N' || s[0] == 'n') {
		j := 1
		if j < len(s) && s[j] == '-' {
			j++
		}
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		n, err := strconv.ParseInt(s[1:j], 10, 64)
		if err != nil {
			return Line{}, fmt.Errorf("%w: %q", ErrBadNumber, s[:j])
		}
		l.Number, l.HasNumber = n, true
		s = strings.TrimSpace(s[j:])
	}
	if s == "" {
		if l.HasNumber || l.HasChecksum {
			return Line{}, fmt.Errorf("%w: number or checksum without a command", ErrBadWord)
		}
		return l, nil
	}
	l.Raw = s
	word, rest := splitWord(s)
	if word == "" {
		return Line{}, fmt.Errorf("%w: %q", ErrBadWord, s)
	}
	l.Word = word
	if textCommands[word] {
		l.Text = strings.TrimSpace(rest)
		return l, nil
	}
	l.Params = parseParams(rest)
	return l, nil
}

// splitWord splits "G1X10 Y2" into "G1" and "X10 Y2". The word is G, M or T followed by a
// number (with an optional .subcode, as in G29.1); letters are upper-cased.
func splitWord(s string) (word, rest string) {
	c := upper(s[0])
	if c != 'G' && c != 'M' && c != 'T' {
		return "", s
	}
	j := 1
	for j < len(s) && (s[j] >= '0' && s[j] <= '9') {
		j++
	}
	if j < len(s) && s[j] == '.' && j > 1 {
		k := j + 1
		for k < len(s) && s[k] >= '0' && s[k] <= '9' {
			k++
		}
		if k > j+1 {
			j = k
		}
	}
	if j == 1 {
		// A bare letter is not a command word.
		return "", s
	}
	w := string(c) + s[1:j]
	// Normalise leading zeros: "G01" is G1, "M0104" is M104.
	if n, err := strconv.Atoi(w[1:]); err == nil {
		w = string(c) + strconv.Itoa(n)
	}
	return w, s[j:]
}

func parseParams(s string) []Param {
	var ps []Param
	i := 0
	for i < len(s) {
		c := s[i]
		if c == ' ' || c == '\t' {
			i++
			continue
		}
		letter := upper(c)
		j := i + 1
		for j < len(s) && s[j] != ' ' && s[j] != '\t' && !isLetter(s[j]) {
			j++
		}
		ps = append(ps, Param{Letter: letter, Value: s[i+1 : j]})
		i = j
	}
	return ps
}

func isLetter(c byte) bool { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') }

func upper(c byte) byte {
	if c >= 'a' && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}

// Checksum is Marlin's line checksum: the XOR of every byte of s.
func Checksum(s string) byte {
	var cs byte
	for i := 0; i < len(s); i++ {
		cs ^= s[i]
	}
	return cs
}

// Number frames a command as the host sends it in a numbered stream: "N<n> <cmd>*<cs>".
// cmd must already be comment-free (Parse's Raw).
func Number(n int64, cmd string) string {
	body := "N" + strconv.FormatInt(n, 10) + " " + cmd
	return body + "*" + strconv.Itoa(int(Checksum(body)))
}
