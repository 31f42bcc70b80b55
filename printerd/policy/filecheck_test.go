package policy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// fileSeeds are lines near the fast path's edges: each is allowed or refused by FileLine for
// a reason the fast path must not get wrong.
var fileSeeds = []string{
	"G1 X119.573 Y84.602 E1.30012 ; perimeter", "G1 F1200 X80.427 Y84.602 E.8", "g01x1y2",
	"G1 X1e2", "G1 X0x10", "G1X10", "G1 X1 X2", "G1 X+1.5 Y-.5 Z5.", "G1 X.", "G1 X-", "G1 X1.2.3",
	"G1 X1234567890123", "G1 X123456789012", "G1 X000000000001", "G1 Q1", "G1 1", "G1 X1 ; é",
	"G1 Xé", "G1 X1\\", "G1 X1 (c)", "G1 X1*12", "N1 G1 X1*5", "G1.5 X1", "G1. X1", "G0001 X1",
	"G00001 X1", "M104 S260", "M104 S260.0000001", "M104 S261", "M104 T1 S200", "M104 T0 S200",
	"M104 S-1", "M140 S110", "M140 S111", "M106 S255", "M106 S256", "M106 P8", "M106 P7 S0",
	"M107 P1.5", "G4 P60000", "G4 P60001", "G4 S60", "G4 S61", "G4 P-1", "G92 E0", "G92 X0",
	"G92 e0 E1", "M486 S1", "M486 A1", "M486 AM104 S999", "M486 S1 A2", "M117 Layer 5 *x",
	"M117", "M118 hi", "M112 anything", "M1120", "M108", "M410", "!!DEBUG", " !!x", "T0", "T1",
	"M220 S9", "M220 S300", "M221 S301 T0", "M204 S500", "M205 X8 Y8", "M73 P5 R10",
	"M84 X Y E", "M303 E0 S200", "M999", "M17", "G29", "G28 X Y", "G28 W", "M900 K0.05",
	"M201 X1000", "M201 X1000 T0", "G20", "M500", "M997", "M302", "M28 a", "G10", "G11 S1",
	"G2 X1 Y1 I1 J0", "G3 R5", "\tG1\tX1\t", "  ;comment", ";", "\r", "G1 X1\r", "G1 X1\r\r",
	"G1 X1\x00", "G1 X1 ;\x7f", "G1 X1 ;\x01", "m104 s200", "M104 s200 S100", "G1 x1 X2",
	"M104 S1 ; " + strings.Repeat("z", 200), "G1 " + strings.Repeat("X", 90), "G1 X1" + strings.Repeat(" ", 80),
	"M190 R60", "M191 S40", "M141 S51", "M109 B300", "M109 R260", "G21", "G90", "G91", "M82",
}

// FuzzFileCheck is the differential test of the fast file check: for any bytes, cut into
// writes anywhere, FileCheck (and CheckFile) return exactly what the reference checker
// returns (the same refusal, line and wording, or nil), and the fast path allows a line only
// when FileLine allows it.
func FuzzFileCheck(f *testing.F) {
	for i, s := range fileSeeds {
		f.Add([]byte("G28\n"+s+"\nG1 X1\n"), uint8(i))
		f.Add([]byte(s), uint8(i*7))
	}
	f.Add([]byte(prusaFile), uint8(3))
	f.Add([]byte(curaFile), uint8(5))
	p, err := New(Limits{Extruders: 2})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte, cut uint8) {
		ctx := context.Background()
		want := checkFileRef(p, ctx, bytes.NewReader(data))
		got := p.CheckFile(ctx, bytes.NewReader(data))
		sameVerdict(t, "CheckFile", data, got, want)
		got = p.CheckFile(ctx, struct{ io.Reader }{bytes.NewReader(data)}) // Read, not WriteTo
		sameVerdict(t, "CheckFile(Read)", data, got, want)
		got = feed(p, data, int(cut)+1)
		sameVerdict(t, "FileCheck.Write", data, got, want)
		for b := data; ; {
			nl, semi := lineEnd(b)
			wantNL, head := bytes.IndexByte(b, '\n'), b
			if wantNL >= 0 {
				head = b[:wantNL]
			}
			if wantSemi := bytes.IndexByte(head, ';'); nl != wantNL || semi != wantSemi {
				t.Fatalf("lineEnd(%q) = %d, %d; want %d, %d", b, nl, semi, wantNL, wantSemi)
			}
			if nl < 0 {
				break
			}
			b = b[nl+1:]
		}
		fc := p.NewFileCheck(ctx)
		for _, line := range bytes.Split(data, []byte("\n")) {
			if len(line) == 0 || len(line) >= MaxFileLineBytes {
				continue
			}
			ok := fc.fast(line)
			if ok {
				if err := p.FileLine(1, string(line)); err != nil {
					t.Fatalf("fast path allowed %q, FileLine refuses: %v", line, err)
				}
			}
			// The fast path reads numbers eight bytes at a time, past the line's end where the
			// buffer goes on: nothing there (digits, dots, blanks) may change its answer.
			for _, tail := range []string{"0123456789012345", ".5.5.5.5.5.5.5.5", "        ", "X"} {
				padded := append(bytes.Clone(line), tail...)[:len(line)]
				if got := fc.fast(padded); got != ok {
					t.Fatalf("fast(%q) = %v, but %v with %q after it in the buffer", line, ok, got, tail)
				}
			}
		}
	})
}

// fast is fastAt for a line whose ';' is not known yet.
func (fc *FileCheck) fast(b []byte) bool { return fc.fastAt(b, bytes.IndexByte(b, ';')) }

// feed writes data to a FileCheck in pieces of every size from 1 up to step.
func feed(p *Policy, data []byte, step int) error {
	fc := p.NewFileCheck(context.Background())
	for k := 1; len(data) > 0; k = k%step + 1 {
		n := min(k, len(data))
		if _, err := fc.Write(data[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	return fc.Close()
}

func sameVerdict(t *testing.T, what string, data []byte, got, want error) {
	t.Helper()
	var rg, rw *Refusal
	switch {
	case got == nil && want == nil:
	case errors.As(got, &rg) && errors.As(want, &rw):
		if !reflect.DeepEqual(rg, rw) {
			t.Fatalf("%s(%.80q) = %#v, reference %#v", what, data, rg, rw)
		}
	case got != nil && want != nil && got.Error() == want.Error():
	default:
		t.Fatalf("%s(%.80q) = %v, reference %v", what, data, got, want)
	}
}

// The fast check agrees with the reference on read errors, cancellation and the line cap.
func TestFileCheckEdges(t *testing.T) {
	p := newPolicy(t, Limits{})
	ctx := context.Background()
	long := strings.Repeat("y", MaxFileLineBytes)
	bodies := []string{
		"G28\n;" + long + "\nG1\n", "G28\n" + long[:MaxFileLineBytes-1] + "\n", "G28\n" + long + "\n",
		"G28\n" + long, "G28\n" + long + "x", strings.Repeat("G1 X1\n", 5000), strings.Repeat("\n", 4095),
		strings.Repeat("\n", 4096), "",
	}
	errBoom := errors.New("connection reset")
	for _, b := range bodies {
		sameVerdict(t, "CheckFile", []byte(b), p.CheckFile(ctx, strings.NewReader(b)), checkFileRef(p, ctx, strings.NewReader(b)))
		sameVerdict(t, "CheckFile/1", []byte(b), p.CheckFile(ctx, iotest.OneByteReader(strings.NewReader(b))), checkFileRef(p, ctx, strings.NewReader(b)))
		for _, cut := range []int{0, 5, len(b) / 2, len(b)} {
			mk := func() io.Reader { return io.MultiReader(strings.NewReader(b[:min(cut, len(b))]), errReader{errBoom}) }
			sameVerdict(t, "CheckFile(failing)", []byte(b), p.CheckFile(ctx, mk()), checkFileRef(p, ctx, mk()))
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		sameVerdict(t, "CheckFile(cancelled)", []byte(b), p.CheckFile(cctx, strings.NewReader(b)), checkFileRef(p, cctx, strings.NewReader(b)))
	}
}

// In steady state the check allocates nothing per line.
func TestFileCheckNoAllocs(t *testing.T) {
	p := newPolicy(t, Limits{})
	var sb strings.Builder
	sb.WriteString(prusaFile + "\n")
	for sb.Len() < 256<<10 {
		sb.WriteString("G1 X119.573 Y84.602 E1.30012 ; perimeter\nG1 F1200 X80.427 Y84.602 E.8\nM106 S255\nM104 S215\nG92 E0\n;LAYER_CHANGE\n")
	}
	body := []byte(sb.String())
	fc := p.NewFileCheck(context.Background())
	write := func() {
		for b := body; len(b) > 0; b = b[min(len(b), 16<<10):] {
			if _, err := fc.Write(b[:min(len(b), 16<<10)]); err != nil {
				t.Fatal(err)
			}
		}
	}
	write() // the first pass may grow the line buffer
	lines := bytes.Count(body, []byte("\n"))
	// prusaFile's few tool changes and M486/M117 lines take FileLine; the slicer lines do not.
	if a := testing.AllocsPerRun(5, write); a > float64(lines)/100 {
		t.Errorf("FileCheck.Write allocates %v times per %d lines, want (almost) none", a, lines)
	}
}

// clean, eight bytes at a time, agrees with the byte table for every byte value at every
// position, next to every neighbour that could disturb the word arithmetic.
func TestClean(t *testing.T) {
	for _, fill := range []byte{'a', 0x80, 0xff, 0x20, '\t', 0x21, 0x7e} {
		for v := range 256 {
			for pos := range 19 {
				b := bytes.Repeat([]byte{fill}, 19)
				b[pos] = byte(v)
				want := class[v]&cBadAny == 0 && class[fill]&cBadAny == 0
				if got := clean(b); got != want {
					t.Fatalf("clean(%q) = %v, want %v", b, got, want)
				}
			}
		}
	}
}
