package marlinsim

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.bug.st/serial"

	"github.com/printgate/printgate/printerd/gcode"
)

// serialHost is a host on the pty through go.bug.st/serial, as printerd opens a printer.
type serialHost struct {
	t     *testing.T
	port  serial.Port
	lines chan string
	ended chan struct{}
}

func openSerial(t *testing.T, path string) *serialHost {
	t.Helper()
	port, err := serial.Open(path, &serial.Mode{BaudRate: 250000})
	if err != nil {
		t.Fatalf("serial.Open(%s): %v", path, err)
	}
	h := &serialHost{t: t, port: port, lines: make(chan string, 1024), ended: make(chan struct{})}
	go func() {
		defer close(h.ended)
		defer close(h.lines)
		sc := bufio.NewScanner(port)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
	}()
	t.Cleanup(h.close)
	return h
}

func (h *serialHost) close() {
	h.port.Close()
	<-h.ended
}

func (h *serialHost) send(l string) {
	h.t.Helper()
	if _, err := h.port.Write([]byte(l + "\n")); err != nil {
		h.t.Fatalf("write %q: %v", l, err)
	}
}

func (h *serialHost) until(pred func(string) bool) []string {
	h.t.Helper()
	var got []string
	timeout := time.After(deadline)
	for {
		select {
		case l, ok := <-h.lines:
			if !ok {
				h.t.Fatalf("port closed after %q", got)
			}
			got = append(got, l)
			if pred(l) {
				return got
			}
		case <-timeout:
			h.t.Fatalf("timed out; got %q", got)
		}
	}
}

func openPTY(t *testing.T, cfg Config) *PTY {
	t.Helper()
	p, err := OpenPTY(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestPTYThroughSerial(t *testing.T) {
	p := openPTY(t, Config{Baud: 250000, AdvancedOK: true, Logf: t.Logf})
	for i := range 2 {
		h := openSerial(t, p.Path())
		got := h.until(func(l string) bool { return l == "start" })
		if len(got) != 1 {
			t.Errorf("open %d: before start came %q", i, got[:len(got)-1])
		}
		h.until(func(l string) bool { return l == "echo:Hardcoded Default Settings Loaded" })
		h.send("N0 M110 N0*125")
		h.until(func(l string) bool { return l == "ok N0 P15 B3" })
		h.send("M105")
		if l := h.until(func(string) bool { return true })[0]; !tempRE.MatchString(l) {
			t.Errorf("M105 over the pty: %q", l)
		}
		h.close()
	}
	// Other processes on the machine may probe the port too (serial port listings do), so
	// these are lower bounds.
	if n := p.Opens(); n < 2 {
		t.Errorf("Opens() = %d, want at least 2", n)
	}
	if st := p.Sim.Stats(); st.Boots < 2 {
		t.Errorf("Boots = %d, want a reset per open", st.Boots)
	}
}

func TestPTYDisconnectAndReplug(t *testing.T) {
	link := filepath.Join(t.TempDir(), "printer")
	p := openPTY(t, Config{Link: link, Faults: []Trigger{{Fault: FaultDisconnect, AtLine: 2}}})
	h := openSerial(t, link)
	h.until(func(l string) bool { return l == "echo:Hardcoded Default Settings Loaded" })
	h.send("M104 S200")
	h.send("G1 X1")
	h.send("G1 X2")
	select {
	case <-h.ended:
	case <-time.After(deadline):
		t.Fatal("the host's reads did not fail after the disconnect")
	}
	h.close()
	waitFor(t, "the port to come back", func() bool {
		_, err := os.Stat(link)
		return err == nil && p.Plugs() == 2
	})
	h2 := openSerial(t, link)
	h2.until(func(l string) bool { return l == "start" })
	h2.send("M105")
	h2.until(func(l string) bool { return strings.HasPrefix(l, "ok T:") })
	if got := p.Sim.Executed(); len(got) != 3 || got[2] != "M105" {
		t.Errorf("Executed() = %q, want the two lines before the drop, then M105", got)
	}
	tg := p.Sim.Targets()
	if last := tg[len(tg)-1]; last.Cause != "reset" || last.Target != 0 {
		t.Errorf("last target change %+v, want heaters off by the reset", last)
	}
}

func TestPTYCloseTwice(t *testing.T) {
	p, err := OpenPTY(context.Background(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := p.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
}

// TestPTYQuickReopen closes and reopens the port at once, again and again: every open must
// reset the firmware.
func TestPTYQuickReopen(t *testing.T) {
	p := openPTY(t, Config{})
	for i := range 10 {
		h := openSerial(t, p.Path())
		h.until(func(l string) bool { return l == "start" })
		h.close()
		_ = i
	}
	waitFor(t, "ten sessions", func() bool { return p.Sim.Stats().Boots >= 10 })
}

// TestPTYNoReset: a board that does not reset on open boots once; a second host, opening the
// port the moment the first has closed it, finds it as the first left it (heater target, line
// counter) and no "start", and its first line is answered. (The simulator once counted opens
// and closes a moment late, in a goroutine forwarding inotify events: an answer could be
// dropped as if no host held the port, or Opens lag behind.)
func TestPTYNoReset(t *testing.T) {
	p := openPTY(t, Config{NoReset: true, TimeScale: 0.01, Logf: t.Logf})
	h := openSerial(t, p.Path())
	h.until(func(l string) bool { return l == "echo:Hardcoded Default Settings Loaded" })
	h.send("N0 M110 N0*125")
	h.until(func(l string) bool { return l == "ok" })
	h.send("M104 S200")
	h.until(func(l string) bool { return l == "ok" })
	h.close()
	// Reopened at once: the first line the new host writes must be answered.
	h2 := openSerial(t, p.Path())
	h2.send(gcode.Number(1, "M105")) // the line counter survived: N1 follows N0
	got := h2.until(func(l string) bool { return strings.HasPrefix(l, "ok T:") })
	for _, l := range got {
		if l == "start" || strings.HasPrefix(l, "Error:") {
			t.Errorf("second open: got %q, want no reset and no line error", got)
		}
	}
	if _, target, _, _ := p.Sim.Temps(); target != 200 {
		t.Errorf("hotend target %v after the reopen, want 200 (no reset)", target)
	}
	if st := p.Sim.Stats(); st.Boots != 1 {
		t.Errorf("Boots = %d, want 1", st.Boots)
	}
	if n := p.Opens(); n < 2 {
		t.Errorf("Opens() = %d, want at least 2", n)
	}
}
