package marlinsim

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/printgate/printgate/printerd/gcode"
)

// feed runs the firmware synchronously on bytes that all arrive at once, until it has
// nothing left to do. It needs TimeScale 0 (nothing waits) and no emergency parser.
func feed(t testing.TB, c *conn, data []byte) {
	t.Helper()
	c.receive(data, 0)
	for steps := 0; !c.halted; steps++ {
		if steps > 1<<16 {
			t.Fatalf("firmware does not settle on %q", data)
		}
		c.getCommands()
		if len(c.queue) == 0 {
			return
		}
		if err := c.advance(context.Background()); err != nil {
			t.Fatalf("advance: %v", err)
		}
	}
}

// FuzzSimLine feeds arbitrary bytes to the firmware's line intake: it must never panic, and
// never execute a numbered line whose checksum failed.
func FuzzSimLine(f *testing.F) {
	for _, s := range []string{
		"N-1 M110*15\n", "N0 M110 N0*125\nN1 G1 X1*40\n", "N359 M205 X8 Y8*42\n",
		"G1 X1\bY2\\;3 ; c\n", "N1 M117 " + strings.Repeat("y", 100) + "*1\n", "M110 N5\rN6 G28*19\n",
		"\x00N1 G1*1\n", "  N2 M105*37\n", "N2147483647 M110*0\nN-2147483648 G1*1\n", "M109 R0\nM112\n",
		gcode.Number(1, "M104 S200") + "\n" + gcode.Number(2, "M109 S200") + "\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := New(Config{AdvancedOK: true})
		c := newConn(s, nil)
		feed(t, c, data)
		for _, e := range s.Record() {
			cmd := strings.TrimLeft(e.Raw, " ")
			numbered := cmd != "" && cmd[0] == 'N'
			if numbered != e.Numbered {
				t.Fatalf("line %q recorded as Numbered=%v", e.Raw, e.Numbered)
			}
			if !numbered {
				continue
			}
			i := strings.LastIndexByte(cmd, '*')
			if i < 0 {
				t.Fatalf("executed numbered line %q without a checksum", e.Raw)
			}
			if got := strtol(cmd[i+1:]); got != int64(gcode.Checksum(cmd[:i])) {
				t.Fatalf("executed numbered line %q whose checksum says %d, computed %d", e.Raw, got, gcode.Checksum(cmd[:i]))
			}
		}
	})
}

// TestFeedSettles checks the synchronous driver itself on a checksum-failing line.
func TestFeedSettles(t *testing.T) {
	s := New(Config{})
	c := newConn(s, nil)
	feed(t, c, []byte("N1 G1 X1*0\n")) // the error drain would eat what came with it
	feed(t, c, []byte(gcode.Number(1, "G1 X2")+"\n"))
	if got := s.Executed(); len(got) != 1 || got[0] != "G1 X2" {
		t.Errorf("Executed() = %q, want only the line with a good checksum", got)
	}
}

// TestDrainCutsALine drives the firmware by hand with known arrival times: while the queue
// is full a bad line and the head of the next one wait in the ring; the error drain takes
// them, and the tail of the next line, arriving afterwards, runs as an unnumbered command,
// as on real Marlin (see the package doc).
func TestDrainCutsALine(t *testing.T) {
	s := New(Config{Baud: 9600})
	c := newConn(s, nil)
	good := gcode.Number(1, "G1 X6") + "\n"
	head := "N1 "
	stream := "G1 X1\nG1 X2\nG1 X3\nG1 X4\nN1 G1 X5*0\n" + good
	c.receive([]byte(stream), 0)
	at := func(n int) int64 { return int64(n) * c.byteNS } // arrival of the n-th byte
	cut := len(stream) - len(good) + len(head)

	c.now = at(cut) // everything up to the head of the good line has arrived
	c.getCommands() // the queue takes 4 lines and is full; the rest waits in the ring
	if len(c.queue) != 4 || len(c.rx)-c.rxHead != cut-24 {
		t.Fatalf("queue %d, ring %d bytes; want 4 and %d", len(c.queue), len(c.rx)-c.rxHead, cut-24)
	}
	ctx := context.Background()
	for len(c.queue) > 0 { // G1 X1 runs; the bad line is read, fails, and the ring is drained
		if err := c.advance(ctx); err != nil {
			t.Fatal(err)
		}
		c.getCommands()
	}
	c.now = at(len(stream)) // the tail of the good line arrives
	c.getCommands()
	for len(c.queue) > 0 {
		if err := c.advance(ctx); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"G1 X1", "G1 X2", "G1 X3", "G1 X4", "G1 X6"}
	rec := s.Record()
	var got []string
	for _, e := range rec {
		got = append(got, e.Line)
	}
	if !slices.Equal(got, want) || rec[4].Numbered {
		t.Errorf("executed %q (last numbered=%v), want %q with the tail unnumbered", got, rec[len(rec)-1].Numbered, want)
	}
	if st := s.Stats(); st.LineErrors != 1 || st.Drained != int64(len(head)) {
		t.Errorf("stats %+v, want one error and the good line's head drained", st)
	}
}
