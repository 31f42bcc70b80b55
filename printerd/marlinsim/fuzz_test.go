package marlinsim

import (
	"context"
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
