package marlin

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/printgate/printgate/printerd/gcode"
)

// wire is the firmware end of a controller's link, driven line by line by a test.
type wire struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

// newWire starts a controller whose link the test plays by hand, and completes the connect
// sequence (hello, heaters off, M115 without AUTOREPORT_TEMP, the first M105); the next line
// number is 5.
func newWire(t *testing.T, cfg Config) (*Controller, *wire) {
	t.Helper()
	conns := make(chan net.Conn, 4)
	cfg.Open = func(ctx context.Context) (io.ReadWriteCloser, error) {
		a, b := socketPair(t)
		conns <- b
		return a, nil
	}
	cfg.Name = "wire"
	cfg.BootWait = 50 * time.Millisecond
	if cfg.PollInterval == 0 {
		cfg.PollInterval = time.Hour
	}
	cfg.ReconnectMin = time.Hour
	cfg.Logf = t.Logf
	c := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); c.Run(ctx) }()
	w := &wire{t: t, conn: <-conns}
	w.br = bufio.NewReader(w.conn)
	t.Cleanup(func() {
		cancel()
		go io.Copy(io.Discard, w.conn) // take the heaters-off lines
		wg.Wait()
		w.conn.Close()
	})
	w.expectFirstBytes()
	w.send("start")
	w.expect("N0 M110 N0*125")
	w.send("ok")
	w.expectCmd(1, "M104 T0 S0")
	w.send("ok")
	w.expectCmd(2, "M140 S0")
	w.send("ok")
	w.expectCmd(3, "M115")
	w.send("FIRMWARE_NAME:Marlin 2.1.3 EXTRUDER_COUNT:1", "Cap:AUTOREPORT_TEMP:0", "ok")
	w.expectCmd(4, "M105") // the first poll comes at once
	w.send("ok T:20.0 /0.0 B:20.0 /0.0 @:0 B@:0")
	waitFor(t, "operational", func() bool { return c.Status().State == Operational })
	return c, w
}

// socketPair is a connected pair with kernel buffers, like a serial port's (net.Pipe has
// none: a write waits for the reader).
func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatalf("socketpair: %v", err)
		}
		return c
	}
	return conn(fds[0]), conn(fds[1])
}

func (w *wire) send(lines ...string) {
	w.t.Helper()
	for _, l := range lines {
		if _, err := io.WriteString(w.conn, l+"\n"); err != nil {
			w.t.Fatalf("firmware write: %v", err)
		}
	}
}

// next reads the next line the controller wrote, or "" after d of silence.
func (w *wire) next(d time.Duration) string {
	w.t.Helper()
	w.conn.SetReadDeadline(time.Now().Add(d))
	defer w.conn.SetReadDeadline(time.Time{})
	l, err := w.br.ReadString('\n')
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() && l == "" {
			return ""
		}
		w.t.Fatalf("firmware read: %v", err)
	}
	return strings.TrimRight(l, "\n")
}

func (w *wire) expect(want string) {
	w.t.Helper()
	if got := w.next(5 * time.Second); got != want {
		w.t.Fatalf("controller wrote %q, want %q", got, want)
	}
}

// firstBytes are the lines the controller writes on every open, before anything else.
var firstBytes = []string{"", "M104 T0 S0", "M140 S0", "M108"}

// expectFirstBytes reads the unnumbered heaters-off lines every open begins with.
func (w *wire) expectFirstBytes() {
	w.t.Helper()
	for _, l := range firstBytes {
		w.expect(l)
	}
}

func (w *wire) expectCmd(n int64, cmd string) { w.t.Helper(); w.expect(gcode.Number(n, cmd)) }

func (w *wire) expectSilence(d time.Duration) {
	w.t.Helper()
	if got := w.next(d); got != "" {
		w.t.Fatalf("controller wrote %q, want nothing", got)
	}
}

func TestResendDuplicateIgnored(t *testing.T) {
	c, w := newWire(t, Config{})
	ctx := context.Background()
	c.Send(ctx, "G1 X1")
	c.Send(ctx, "G1 X2")
	w.expectCmd(5, "G1 X1")
	// The line arrived damaged; the firmware asks twice before the host could answer.
	w.send("Error:checksum mismatch, Last Line: 4", "Resend: 5", "ok", "Error:Line Number is not Last Line Number+1, Last Line: 4", "Resend: 5", "ok")
	w.expectCmd(5, "G1 X1")
	w.send("ok")
	w.expectCmd(6, "G1 X2") // not a third copy of line 4
	w.send("ok")
	w.expectSilence(100 * time.Millisecond)
}

func TestResendNotYetSentIgnored(t *testing.T) {
	c, w := newWire(t, Config{})
	ctx := context.Background()
	c.Send(ctx, "G1 X1")
	w.expectCmd(5, "G1 X1")
	w.send("ok", "Error:Line Number is not Last Line Number+1, Last Line: 5", "Resend: 6", "ok")
	w.expectSilence(100 * time.Millisecond)
	c.Send(ctx, "G1 X2")
	w.expectCmd(6, "G1 X2")
	w.send("ok")
	w.expectSilence(100 * time.Millisecond)
}

func TestResendWithoutOK(t *testing.T) {
	c, w := newWire(t, Config{})
	ctx := context.Background()
	c.Send(ctx, "G1 X1")
	c.Send(ctx, "G1 X2")
	c.Send(ctx, "G1 X3")
	w.expectCmd(5, "G1 X1")
	w.send("Error:checksum mismatch, Last Line: 4", "Resend: 5") // 2.0.x: no ok
	// OctoPrint's detection: after 0.5 s without an ok, go on as if one came.
	w.expectSilence(300 * time.Millisecond)
	w.expectCmd(5, "G1 X1")
	w.send("ok")
	w.expectCmd(6, "G1 X2")
	// Learned: the next resend goes out at once.
	w.send("Error:checksum mismatch, Last Line: 5", "Resend: 6")
	if got := w.next(250 * time.Millisecond); got != gcode.Number(6, "G1 X2") {
		t.Fatalf("after a learned resend without ok, controller wrote %q, want line 5 at once", got)
	}
	w.send("ok")
	w.expectCmd(7, "G1 X3")
	w.send("ok")
}

func TestResendsStuckIsFatal(t *testing.T) {
	c, w := newWire(t, Config{})
	c.Send(context.Background(), "G1 X1")
	w.expectCmd(5, "G1 X1")
	for i := 0; i < maxResends; i++ {
		w.send("Error:checksum mismatch, Last Line: 4", "Resend: 5", "ok")
		w.expectCmd(5, "G1 X1")
	}
	// The controller gives up and closes the link while these go out.
	io.WriteString(w.conn, "Error:checksum mismatch, Last Line: 4\nResend: 5\nok\n")
	waitFor(t, "error state", func() bool { return c.Status().State == Error })
	if st := c.Status(); !strings.Contains(st.Error, "communication stuck") {
		t.Errorf("error %q, want communication stuck", st.Error)
	}
}

func TestNoResendAfterKill(t *testing.T) {
	c, w := newWire(t, Config{})
	c.Send(context.Background(), "G1 X1")
	w.expectCmd(5, "G1 X1")
	w.send("echo:M112 Shutdown", "Error:Printer halted. kill() called!", "Resend: 5", "ok")
	waitFor(t, "halted", func() bool { return c.Status().State == Halted })
	w.expectSilence(700 * time.Millisecond)
	if err := c.Send(context.Background(), "G1 X2"); err == nil {
		t.Errorf("Send while halted = nil, want an error")
	}
	w.expectSilence(100 * time.Millisecond)
}

func TestStoppedNeedsM999(t *testing.T) {
	c, w := newWire(t, Config{})
	w.send("Error:Printer stopped due to errors. Fix the error and use M999 to restart. (Temperature is reset. Set it after restarting)")
	waitFor(t, "error state", func() bool { return c.Status().State == Error })
	if err := c.Send(context.Background(), "M999"); err != nil {
		t.Fatal(err)
	}
	w.expectCmd(5, "M999")
	w.send("Resend: 6", "ok", "ok")
	waitFor(t, "operational", func() bool { return c.Status().State == Operational })
}

func TestBusyKeepsLinkAlive(t *testing.T) {
	c, w := newWire(t, Config{Timeout: 300 * time.Millisecond, BusyTimeout: 300 * time.Millisecond})
	c.Send(context.Background(), "G28")
	w.expectCmd(5, "G28")
	// A long homing: keepalives every 100 ms for 1 s, well past the timeouts. Nothing may be
	// written meanwhile (no M105 poke), and the link must stay up.
	for i := 0; i < 10; i++ {
		w.send("echo:busy: processing")
		w.expectSilence(100 * time.Millisecond)
	}
	w.send("ok")
	w.expectCmd(6, "M113 S2") // ask for 2 s keepalives once they are seen
	w.send("ok")
	if st := c.Status(); st.State != Operational {
		t.Errorf("state %s (%s), want operational", st.State, st.Error)
	}
	// Silence past the timeout with a line in flight: the controller pokes with M105.
	c.Send(context.Background(), "G4 S1")
	w.expectCmd(7, "G4 S1")
	if got := w.next(2 * time.Second); got != gcode.Number(8, "M105") {
		t.Errorf("after a timeout the controller wrote %q, want an M105 poke", got)
	}
}

func TestLateBootRestartsHello(t *testing.T) {
	conns := make(chan net.Conn, 1)
	c := New(Config{Name: "late", BootWait: 50 * time.Millisecond, PollInterval: time.Hour, Logf: t.Logf,
		Open: func(ctx context.Context) (io.ReadWriteCloser, error) {
			a, b := socketPair(t)
			conns <- b
			return a, nil
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	w := &wire{t: t, conn: <-conns}
	w.br = bufio.NewReader(w.conn)
	t.Cleanup(func() { cancel(); go io.Copy(io.Discard, w.conn); <-done; w.conn.Close() })
	// Silence: the controller gives up waiting and says hello to a board still in its
	// bootloader, which loses it (as it lost the first bytes).
	w.expectFirstBytes()
	w.expect("N0 M110 N0*125")
	w.send("start", "echo: External Reset")
	w.expect("N0 M110 N0*125")
	w.send("ok")
	w.expectCmd(1, "M104 T0 S0")
	w.send("ok")
	w.expectCmd(2, "M140 S0")
}

// TestOperationalAfterFirstReading: the printer is Operational only with a temperature
// reading in hand (issue 16): after M115 an M105 goes out, and its answer, not the M115 ok,
// makes the printer Operational, also when the firmware auto-reports.
func TestOperationalAfterFirstReading(t *testing.T) {
	conns := make(chan net.Conn, 1)
	c := New(Config{Name: "first", BootWait: 50 * time.Millisecond, PollInterval: 2 * time.Second, Logf: t.Logf,
		ReconnectMin: time.Hour,
		Open: func(ctx context.Context) (io.ReadWriteCloser, error) {
			a, b := socketPair(t)
			conns <- b
			return a, nil
		}})
	events, unsub := c.Subscribe()
	defer unsub()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	w := &wire{t: t, conn: <-conns}
	w.br = bufio.NewReader(w.conn)
	t.Cleanup(func() { cancel(); go io.Copy(io.Discard, w.conn); <-done; w.conn.Close() })
	w.expectFirstBytes()
	w.send("start")
	w.expect("N0 M110 N0*125")
	w.send("ok")
	w.expectCmd(1, "M104 T0 S0")
	w.send("ok")
	w.expectCmd(2, "M140 S0")
	w.send("ok")
	w.expectCmd(3, "M115")
	w.send("FIRMWARE_NAME:Marlin 2.1.3 EXTRUDER_COUNT:1", "Cap:AUTOREPORT_TEMP:1", "ok")
	w.expectCmd(4, "M105")
	if st := c.Status(); st.State == Operational {
		t.Fatalf("state %s before the first reading, want connecting", st.State)
	}
	w.send("ok T:21.5 /0.0 B:20.5 /0.0 @:0 B@:0")
	w.expectCmd(5, "M155 S2")
	waitFor(t, "operational", func() bool { return c.Status().State == Operational })
	for {
		select {
		case ev := <-events:
			if ev.Kind != "state" || ev.Status.State != Operational {
				continue
			}
			if tp := ev.Status.Temps; len(tp.Tools) == 0 || tp.Bed == nil || tp.Tools[0].Actual != 21.5 {
				t.Fatalf("Operational with temps %+v, want the first reading (tool 21.5, bed 20.5)", tp)
			}
			return
		case <-time.After(5 * time.Second):
			t.Fatal("no Operational state event")
		}
	}
}

// TestSendAcked: SendAcked returns only when the firmware acknowledges the line, with the ok
// that did, and fails when the line can no longer be acknowledged.
func TestSendAcked(t *testing.T) {
	c, w := newWire(t, Config{})
	type result struct {
		reply string
		err   error
	}
	send := func(line string) chan result {
		ch := make(chan result, 1)
		go func() {
			r, err := c.SendAcked(context.Background(), line)
			ch <- result{r, err}
		}()
		return ch
	}
	got := send("M109 S200")
	w.expectCmd(5, "M109 S200")
	w.send(" T:150.00 /200.00 B:20.00 /0.00 @:127 B@:0 W:?", "echo:busy: processing")
	select {
	case r := <-got:
		t.Fatalf("SendAcked returned %+v before the firmware's ok", r)
	case <-time.After(100 * time.Millisecond):
	}
	w.send("ok")
	if r := <-got; r.err != nil || r.reply != "ok" {
		t.Errorf("SendAcked(M109) = %q, %v, want ok", r.reply, r.err)
	}
	w.expectCmd(6, "M113 S2") // the busy line asked for keepalives
	w.send("ok")
	got = send("M105")
	w.expectCmd(7, "M105")
	w.send("ok T:200.00 /200.00 B:20.00 /0.00 @:80 B@:0")
	if r := <-got; r.err != nil || r.reply != "ok T:200.00 /200.00 B:20.00 /0.00 @:80 B@:0" {
		t.Errorf("SendAcked(M105) = %q, %v, want the ok with the temperatures", r.reply, r.err)
	}
	got = send("G28")
	w.expectCmd(8, "G28")
	w.send("echo:M112 Shutdown", "Error:Printer halted. kill() called!")
	if r := <-got; r.err == nil {
		t.Errorf("SendAcked(G28) on a halted printer = %q, want an error", r.reply)
	}
}
