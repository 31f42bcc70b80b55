package printerd

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/printgate/printgate/printerd/gcode"
	"github.com/printgate/printgate/printerd/marlin"
)

type bridgeClient struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialBridge(t *testing.T, addr string) *bridgeClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &bridgeClient{t, c, bufio.NewReader(c)}
}

func (b *bridgeClient) send(line string) {
	b.t.Helper()
	if _, err := fmt.Fprintf(b.c, "%s\n", line); err != nil {
		b.t.Fatal(err)
	}
}

// numbered frames a line as printcore does.
func numbered(n int, cmd string) string {
	l := fmt.Sprintf("N%d %s", n, cmd)
	return fmt.Sprintf("%s*%d", l, gcode.Checksum(l))
}

func (b *bridgeClient) line() string {
	b.t.Helper()
	b.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	s, err := b.r.ReadString('\n')
	if err != nil {
		b.t.Fatalf("read: %v (got %q)", err, s)
	}
	return strings.TrimRight(s, "\r\n")
}

// until reads lines up to and including one equal to want, returning them.
func (b *bridgeClient) until(want string) []string {
	b.t.Helper()
	var got []string
	for {
		l := b.line()
		got = append(got, l)
		if l == want {
			return got
		}
	}
}

func TestBridge(t *testing.T) {
	h := newHarness(t)
	addr := h.serveAs(adminAddr, printerAddr, func(l net.Listener) error { return h.s.ServeBridge("mk3", l) })
	b := dialBridge(t, addr)

	b.send("M105")
	if got := b.line(); got != "ok" {
		t.Fatalf("M105 reply %q, want ok", got)
	}
	b.send(numbered(0, "M110 N0"))
	b.send(numbered(1, "G28"))
	b.send(numbered(2, "G1 X10 Y10 F3000 ; a comment"))
	for range 3 {
		if got := b.line(); got != "ok" {
			t.Fatalf("numbered line reply %q, want ok", got)
		}
	}
	// A line with a bad checksum is not sent; the host is asked to resend it.
	b.send("N3 G1 X20*1")
	got := b.until("ok")
	if !strings.HasPrefix(got[0], "Error:checksum mismatch") || got[1] != "Resend: 3" {
		t.Errorf("bad checksum replies %q", got)
	}
	// Refused lines never reach the printer, through any framing.
	for _, bad := range []string{"M104 S400", numbered(3, "M997"), "M500", "M42 P13 S255", "M211 S0", "M302 P1", "M28 x.gco", "M575 B9600", "M303 S400"} {
		b.send(bad)
		got := b.until("ok")
		if len(got) != 2 || !strings.HasPrefix(got[0], "echo:printgate refused") {
			t.Errorf("%q: replies %q, want a refusal and ok", bad, got)
		}
	}
	// The firmware's replies come back; the bridge acknowledges lines itself, so bare oks from
	// the controller's own traffic are dropped and "ok T:" keeps its report.
	waitFor(t, "relay subscription", func() bool { return h.pr.subscribers() == 1 })
	h.pr.recv("ok")
	h.pr.recv("ok N5026 P15 B3") // ADVANCED_OK's tail is no line of its own
	h.pr.recv("ok T:200.0 /210.0 B:60.0 /60.0")
	h.pr.recv("echo:busy: processing")
	if got := b.line(); got != "T:200.0 /210.0 B:60.0 /60.0" {
		t.Errorf("relayed %q, want the temperature report", got)
	}
	if got := b.line(); got != "echo:busy: processing" {
		t.Errorf("relayed %q", got)
	}
	if got, want := strings.Join(h.pr.lines(), "|"), "M105|G28|G1 X10 Y10 F3000"; got != want {
		t.Errorf("printer got %q, want %q", got, want)
	}

	// One client at a time.
	b2 := dialBridge(t, addr)
	if got := b2.line(); !strings.Contains(got, "busy") {
		t.Errorf("second client got %q, want a busy message", got)
	}
	b2.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := b2.r.ReadString('\n'); err == nil {
		t.Errorf("second client not closed")
	}

	// M112 goes out as an emergency stop.
	b.send("M112")
	if got := b.line(); got != "ok" {
		t.Errorf("M112 reply %q", got)
	}
	if h.pr.Status().State != marlin.Halted {
		t.Errorf("state after M112 = %s, want halted", h.pr.Status().State)
	}
	// After the first client leaves, another may connect.
	b.c.Close()
	waitFor(t, "bridge free", func() bool {
		p := h.s.printers["mk3"]
		p.bridge.Lock()
		defer p.bridge.Unlock()
		return !p.bridge.busy
	})
	h.pr.Connect()
	b3 := dialBridge(t, addr)
	b3.send("M105")
	if got := b3.line(); got != "ok" {
		t.Errorf("third client M105 reply %q", got)
	}
	acts := strings.Join(h.audit.actions(), ",")
	if !strings.Contains(acts, "bridge.open") || !strings.Contains(acts, "refusal") || !strings.Contains(acts, "emergency") {
		t.Errorf("audit = %s, want bridge.open, refusals and the emergency", acts)
	}
}

func TestBridgeAdminOnly(t *testing.T) {
	for _, from := range []struct {
		name string
		addr netip.Addr
	}{{"operator", operatorAddr}, {"viewer", viewerAddr}, {"stranger", strangerAddr}} {
		t.Run(from.name, func(t *testing.T) {
			h := newHarness(t)
			addr := h.serveAs(from.addr, printerAddr, func(l net.Listener) error { return h.s.ServeBridge("mk3", l) })
			b := dialBridge(t, addr)
			b.send("G28")
			if got := b.line(); !strings.Contains(got, "admin") {
				t.Errorf("%s got %q, want the admin-only message", from.name, got)
			}
			b.c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := b.r.ReadString('\n'); err == nil {
				t.Errorf("connection not closed")
			}
			if len(h.pr.lines()) != 0 {
				t.Errorf("sent %q", h.pr.lines())
			}
		})
	}
}

func TestUnframe(t *testing.T) {
	tests := []struct {
		in, cmd string
		n       int64
		ok      bool
	}{
		{"G28", "G28", -1, true},
		{numbered(5, "G1 X1"), "G1 X1", 5, true},
		{"N5 G1 X1*0", "", 5, false},
		{"N7 M105", "M105", 7, true},
		{"M105*12", "M105*12", -1, true}, // no N: left for the policy to judge
		{"  G28  ", "G28", -1, true},
		{"M117 a*b ; x", "M117 a*b ; x", -1, true},
	}
	for _, tt := range tests {
		cmd, n, ok := unframe(tt.in)
		if cmd != tt.cmd || n != tt.n || ok != tt.ok {
			t.Errorf("unframe(%q) = %q, %d, %v, want %q, %d, %v", tt.in, cmd, n, ok, tt.cmd, tt.n, tt.ok)
		}
	}
}
