package policy

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"unsafe"

	"github.com/printgate/printgate/printerd/gcode"
)

// This file checks uploaded files at the speed of the network. A FileCheck splits the stream
// into lines in place and decides each line in one of two ways:
//
//  1. The fast path reads the lines slicers write (G0/G1 moves, comments, temperatures, fans,
//     every allow-listed G or M command with plain parameters) from the bytes, without
//     copying or allocating, and says "allowed" only when FileLine would allow the line too:
//     it runs the same allow-list entry, letters and check function on the same values.
//  2. Anything else (a refusal, a line number, a checksum, a parenthesised comment, a tool
//     change, an exponent, a subcode, a word the table does not hold) goes to FileLine, which
//     gives the refusal and its wording. So every refusal comes from one place.
//
// FuzzFileCheck holds the two paths, and the line splitting, against the reference checker
// kept in reference_test.go.

// fastCmd is one allow-list entry as the fast path needs it.
type fastCmd struct {
	word    string                            // "G1": Line.Word, for the check function
	check   func(p *Policy, c *call) *Refusal // nil when a file's line skips it: no values needed
	letters uint32                            // bit i: letter 'A'+i is accepted
	text    bool                              // gcode.TakesText: the rest of the line is text, never parameters
}

// fastG and fastM hold the Job role's allow-list by number: fastG[1] is G1.
var fastG, fastM [1000]*fastCmd

func init() {
	for w, cmd := range allowed {
		if cmd.roles&rJob == 0 || emergency(w) {
			continue
		}
		n := 0
		for _, c := range w[1:] {
			if c < '0' || c > '9' {
				n = -1
				break
			}
			n = n*10 + int(c-'0')
		}
		if n < 0 || n >= len(fastG) {
			continue
		}
		fc := &fastCmd{word: w, text: gcode.TakesText(w)}
		if !cmd.people {
			fc.check = cmd.check
		}
		if fc.text != cmd.text {
			continue // the parser and the policy disagree on this word: leave it to FileLine
		}
		for i := 0; i < len(cmd.letters); i++ {
			fc.letters |= 1 << (cmd.letters[i] - 'A')
		}
		switch w[0] {
		case 'G':
			fastG[n] = fc
		case 'M':
			fastM[n] = fc
		}
	}
}

// FileCheck checks the lines of one stored file as its bytes stream past (Write), as
// CheckFile does, and keeps no more than one line of it. Close ends the file. The first
// refusal or error sticks: later calls return it. A FileCheck is not safe for concurrent use.
type FileCheck struct {
	p    *Policy
	ctx  context.Context
	n    int    // lines finished
	part []byte // the start of a line that continues in the next Write
	err  error
	c    call   // reused by the fast path's check functions
	set  uint32 // letters set in c by the last fast line
}

// NewFileCheck starts checking a file. ctx is looked at every 4096 lines.
func (p *Policy) NewFileCheck(ctx context.Context) *FileCheck {
	fc := &FileCheck{p: p, ctx: ctx}
	fc.c.roles, fc.c.s = rJob, jobStatus
	return fc
}

// Write checks every line that ends in b and keeps the start of the next one. It returns the
// first refusal (a *Refusal with its line number) or the context's error.
func (fc *FileCheck) Write(b []byte) (int, error) {
	if fc.err != nil {
		return 0, fc.err
	}
	total := len(b)
	if len(fc.part) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			fc.keep(b)
			return total, fc.err
		}
		fc.keep(b[:i])
		if fc.err != nil {
			return total, fc.err
		}
		if fc.fail(fc.line(fc.part, true)) {
			return total, fc.err
		}
		fc.part = fc.part[:0]
		b = b[i+1:]
	}
	for {
		i, semi := lineEnd(b)
		if i < 0 {
			break
		}
		if fc.fail(fc.lineAt(b[:i], true, semi)) {
			return total, fc.err
		}
		b = b[i+1:]
	}
	fc.keep(b)
	return total, fc.err
}

// WriteString is Write for a string, without copying it (Write neither changes nor keeps b).
func (fc *FileCheck) WriteString(s string) (int, error) {
	if s == "" {
		return 0, fc.err
	}
	return fc.Write(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// keep adds b to the unfinished line, refusing it once it is longer than MaxFileLineBytes.
func (fc *FileCheck) keep(b []byte) {
	if len(b) == 0 {
		return
	}
	if len(fc.part)+len(b) > MaxFileLineBytes {
		fc.fail(fc.tooLong())
		return
	}
	fc.part = append(fc.part, b...)
}

func (fc *FileCheck) fail(err error) bool {
	if err != nil && fc.err == nil {
		fc.err = err
	}
	return err != nil
}

// tooLong refuses the current line for its length (after the context check it is due).
func (fc *FileCheck) tooLong() error {
	fc.n++
	if err := fc.tick(); err != nil {
		return err
	}
	return &Refusal{Rule: RuleMaxFileLine, Line: fc.n, Reason: fmt.Sprintf("line is longer than %d bytes", MaxFileLineBytes)}
}

// tick looks at the context every 4096 lines (small enough to inline: it runs once a line).
func (fc *FileCheck) tick() error {
	if fc.n%4096 != 0 {
		return nil
	}
	return fc.ctxErr()
}

func (fc *FileCheck) ctxErr() error {
	if err := fc.ctx.Err(); err != nil {
		return fmt.Errorf("check file: line %d: %w", fc.n, err)
	}
	return nil
}

// lineEnd returns the index of the first '\n' in b (-1 if none) and of the first ';' before it
// (-1 if none). Slicers' lines are short, so one pass over eight bytes at a time, looking for
// both, costs less than two calls to bytes.IndexByte a line; a comment's rest, which can be
// long, is left to IndexByte.
func lineEnd(b []byte) (nl, semi int) {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		n, s := zeroBytes(x^lo8*'\n'), zeroBytes(x^lo8*';')
		if n|s == 0 {
			continue
		}
		if s != 0 && (n == 0 || s&-s < n&-n) { // the ';' comes first (the lowest bit is the first byte)
			semi = i + bits.TrailingZeros64(s)>>3
			if nl = bytes.IndexByte(b[semi:], '\n'); nl >= 0 {
				nl += semi
			}
			return nl, semi
		}
		return i + bits.TrailingZeros64(n)>>3, -1
	}
	for ; i < len(b); i++ {
		switch b[i] {
		case '\n':
			return i, -1
		case ';':
			if nl = bytes.IndexByte(b[i:], '\n'); nl >= 0 {
				nl += i
			}
			return nl, i
		}
	}
	return -1, -1
}

// zeroBytes has the top bit set in each byte of y that is zero, and no other bit (exact: no
// carry crosses a byte).
func zeroBytes(y uint64) uint64 {
	return ^((y&(lo8*0x7f) + lo8*0x7f) | y) & (lo8 * 0x80)
}

// line checks one line; ended says a '\n' followed it (which counts against the length cap).
func (fc *FileCheck) line(b []byte, ended bool) error {
	return fc.lineAt(b, ended, bytes.IndexByte(b, ';'))
}

// lineAt is line with semi, the index of the first ';' in b or -1, already known.
func (fc *FileCheck) lineAt(b []byte, ended bool, semi int) error {
	fc.n++
	if err := fc.tick(); err != nil {
		return err
	}
	if len(b) > MaxFileLineBytes || ended && len(b) == MaxFileLineBytes {
		return &Refusal{Rule: RuleMaxFileLine, Line: fc.n, Reason: fmt.Sprintf("line is longer than %d bytes", MaxFileLineBytes)}
	}
	if len(b) == 0 || fc.fastAt(b, semi) {
		return nil
	}
	return fc.p.FileLine(fc.n, string(b))
}

// Close checks the last line, which has no '\n', and returns the file's verdict: nil when
// every line is allowed.
func (fc *FileCheck) Close() error {
	if fc.err != nil {
		return fc.err
	}
	if len(fc.part) > 0 {
		fc.fail(fc.line(fc.part, false))
		fc.part = fc.part[:0]
	} else {
		fc.n++ // the empty last "line" at the end of input, whose context check is due
		fc.fail(fc.tick())
	}
	return fc.err
}

// Abort ends the file early because reading it failed with err: the unfinished line is checked
// as the last one (a refusal in it wins), then the error is returned with its line number.
func (fc *FileCheck) Abort(err error) error {
	if fc.err != nil {
		return fc.err
	}
	n := fc.n + 1
	if len(fc.part) > 0 {
		if fc.fail(fc.line(fc.part, false)) {
			return fc.err
		}
	} else {
		fc.n++
		if fc.fail(fc.tick()) {
			return fc.err
		}
	}
	fc.err = fmt.Errorf("check file: line %d: %w", n, err)
	return fc.err
}

// CheckFile reads a whole file and checks every line as a stored file's line (FileLine). It
// returns the first refusal, with its line number, or the read error that ended the file
// early, or nil after reading r to its end with every line allowed. A reader that is an
// io.WriterTo (the store's upload pipeline, bytes and strings readers) hands over its own
// buffers, which are checked in place.
func (p *Policy) CheckFile(ctx context.Context, r io.Reader) error {
	fc := p.NewFileCheck(ctx)
	if wt, ok := r.(io.WriterTo); ok {
		_, err := wt.WriteTo(fc)
		switch {
		case fc.err != nil:
			return fc.err
		case err != nil:
			return fc.Abort(err)
		}
		return fc.Close()
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := fc.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		switch {
		case err == io.EOF:
			return fc.Close()
		case err != nil:
			return fc.Abort(err)
		}
	}
}

// Byte classes for the fast path's scans.
const (
	cBadCmd = 1 << iota // not in a command: control (but tab), 0x7f and above, '\\', '(', '*'
	cBadAny             // not anywhere: control (but tab), 0x7f
	cLetter             // A-Z a-z
	cDigit              // 0-9 and '.'
)

var class [256]uint8

func init() {
	for c := range 256 {
		var k uint8
		if c < 0x20 && c != '\t' || c == 0x7f {
			k |= cBadAny | cBadCmd
		}
		if c >= 0x7f || c == '\\' || c == '(' || c == '*' {
			k |= cBadCmd
		}
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' {
			k |= cLetter
		}
		if c >= '0' && c <= '9' || c == '.' {
			k |= cDigit
		}
		class[c] = k
	}
}

// fastAt reports whether FileLine(n, string(b)) is sure to allow the line b (no '\n'), deciding
// without allocating; semi is the index of the first ';' in b, or -1. false means "ask
// FileLine", not "refused".
func (fc *FileCheck) fastAt(b []byte, semi int) bool {
	if b[len(b)-1] == '\r' {
		b = b[:len(b)-1] // never the ';' at semi, so semi still holds
	}
	// No control characters in the comment. The command part is checked byte by byte below:
	// the word and parameter grammar admits only letters, digits, '.', '+', '-' and blanks,
	// so no control, non-ASCII, escape, '(' or '*' byte gets through it either.
	end := semi
	if end < 0 {
		end = len(b)
	} else if !clean(b[end+1:]) {
		return false
	}
	cmd := trimBlank(b[:end])
	if len(cmd) == 0 {
		return true // blank or comment only
	}
	if len(cmd) > MaxCommandBytes {
		return false
	}
	// The word: G or M and up to three digits (leading zeros allowed), no subcode.
	var table *[1000]*fastCmd
	switch cmd[0] {
	case 'G', 'g':
		table = &fastG
	case 'M', 'm':
		table = &fastM
	default:
		return false // T, N, !! and anything unusual
	}
	j, num := 1, 0
	for j < len(cmd) && cmd[j] >= '0' && cmd[j] <= '9' {
		num = num*10 + int(cmd[j]-'0')
		j++
	}
	if j == 1 || j > 4 || j < len(cmd) && cmd[j] == '.' {
		return false
	}
	f := table[num]
	if f == nil {
		return false
	}
	if f.text {
		for _, ch := range cmd[j:] {
			if class[ch]&cBadCmd != 0 {
				return false
			}
		}
		return true
	}
	// Parameters, split as gcode.Parse splits them, each checked as parseParams checks it.
	c := &fc.c
	for fc.set != 0 {
		i := bits.TrailingZeros32(fc.set)
		c.present[i], c.values[i] = false, 0
		fc.set &^= 1 << i
	}
	g92 := num == 92 && table == &fastG
	for i := j; i < len(cmd); {
		ch := cmd[i]
		if ch == ' ' || ch == '\t' {
			i++
			continue
		}
		if class[ch]&cLetter == 0 {
			return false
		}
		letter := ch &^ 0x20 // upper case
		switch letter {
		case 'E', 'X':
			// ambiguous: a number directly followed by E or X ("S4e2", "S0x190").
			if i > j && class[cmd[i-1]]&cDigit != 0 {
				return false
			}
		case 'A':
			if fc.set == 0 && num == 486 && table == &fastM {
				return false // M486 A<name> (first parameter): FileLine's business
			}
		}
		bit := uint32(1) << (letter - 'A')
		if f.letters&bit == 0 || fc.set&bit != 0 || g92 && letter != 'E' {
			return false
		}
		// The value: empty (0) or [+-]digits[.digits] / [+-].digits, at most 12 digits,
		// up to the next blank or letter. With at most 12 digits the mantissa and the power
		// of ten are exact in a float64, so one division is correctly rounded: the value is
		// strconv.ParseFloat's.
		k := i + 1
		neg := false
		if k < len(cmd) && (cmd[k] == '+' || cmd[k] == '-') {
			neg = cmd[k] == '-'
			k++
		}
		var m uint64
		digits, frac, dot := 0, 0, false
		if k+8 <= cap(cmd) {
			// Eight bytes at once, where the buffer holds them (past the line is fine: those
			// bytes never count): digits, maybe a '.' and digits, all inside the window and
			// the line, or else the loop below decides byte by byte.
			x := binary.LittleEndian.Uint64(cmd[k : k+8])
			a := x ^ (lo8 * '0')                                     // a digit's byte becomes 0..9
			nd := ((a & (lo8 * 0x7f)) + lo8*0x76 | a) & (lo8 * 0x80) // top bit of every non-digit
			n1 := bits.TrailingZeros64(nd) >> 3                      // digits before the first non-digit
			n, n2, y := n1, 0, x
			if n1 < 8 && byte(x>>(8*n1)) == '.' {
				n = 8 // a '.' last in the window: the fraction goes on past it
				if n1 < 7 {
					n2 = min(bits.TrailingZeros64(nd>>(8*(n1+1)))>>3, 7-n1)
					y = x&(1<<(8*n1)-1) | x>>(8*(n1+1))<<(8*n1) // the digits without the '.'
					n = n1 + 1 + n2
				}
			}
			if n < 8 && n <= len(cmd)-k {
				digits, frac, dot = n1+n2, n2, n > n1
				if f.check != nil {
					m = swarDigits(y, digits)
				}
				k += n
				if k < len(cmd) && cmd[k] != ' ' && cmd[k] != '\t' && class[cmd[k]]&cLetter == 0 {
					return false // a second '.', a sign, '*', ...
				}
				goto value
			}
		}
		for ; k < len(cmd); k++ {
			d := cmd[k]
			if d >= '0' && d <= '9' {
				m = m*10 + uint64(d-'0')
				digits++
				if dot {
					frac++
				}
				continue
			}
			if d == '.' && !dot {
				dot = true
				continue
			}
			if d == ' ' || d == '\t' || class[d]&cLetter != 0 {
				break
			}
			return false
		}
	value:
		if digits > 12 || digits == 0 && (dot || neg || k > i+1) {
			return false
		}
		fc.set |= bit
		i = k
		if f.check == nil {
			continue // the grammar is all a file's line of this command needs
		}
		v := float64(m) / pow10[frac]
		if neg {
			v = -v
		}
		c.present[letter-'A'], c.values[letter-'A'] = true, v
	}
	if f.check != nil {
		c.l.Word = f.word
		if f.check(fc.p, c) != nil {
			return false
		}
	}
	return true
}

// lo8 has a one in every byte.
const lo8 = 0x0101010101010101

// swarDigits is the value of the first n (0..7) bytes of x, digits in memory order: the
// digits move to the top bytes (the rest shifts out; no borrow from a lower byte reaches
// them, since the digits lie below), then pairs, fours and eights of digits are joined with
// one multiplication each.
func swarDigits(x uint64, n int) uint64 {
	v := (x - lo8*'0') << (8 * (8 - n))
	v = (v*10 + v>>8) & 0x00ff00ff00ff00ff
	v = (v*100 + v>>16) & 0x0000ffff0000ffff
	return (v*10000 + v>>32) & 0xffffffff
}

// clean reports whether b holds no control character other than tab, and no DEL: eight
// bytes at a time, byte by byte only around a suspect.
func clean(b []byte) bool {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	for len(b) >= 8 {
		x := binary.LittleEndian.Uint64(b)
		y := x ^ (lo * 0x7f) // a zero byte where x has DEL
		if ((x-lo*0x20)&^x|(y-lo)&^y)&hi != 0 {
			for _, c := range b[:8] {
				if class[c]&cBadAny != 0 {
					return false
				}
			}
		}
		b = b[8:]
	}
	for _, c := range b {
		if class[c]&cBadAny != 0 {
			return false
		}
	}
	return true
}

func trimBlank(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// pow10 are the exact powers of ten a float64 holds.
var pow10 = [...]float64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12}
