package printerd

import (
	"context"
	"net"
	"testing"
	"time"
)

// ackingPrinter is the fake printer with the controller's SendAcked: each line waits for the
// test to hand it the firmware's ok.
type ackingPrinter struct {
	*fakePrinter
	oks chan string
}

func (a *ackingPrinter) SendAcked(ctx context.Context, line string) (string, error) {
	if err := a.Send(ctx, line); err != nil {
		return "", err
	}
	select {
	case ok := <-a.oks:
		return ok, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// TestBridgePaced: the host gets "ok" only when the firmware acknowledged its line, after the
// firmware lines that came before that ok; an "ok T:" answer reaches the host whole, and an
// ADVANCED_OK ok reaches it as a plain "ok".
func TestBridgePaced(t *testing.T) {
	var ap *ackingPrinter
	h := newHarness(t, func(c *Config) {
		pc := c.Printers["mk3"]
		ap = &ackingPrinter{fakePrinter: pc.Printer.(*fakePrinter), oks: make(chan string)}
		pc.Printer = ap
		c.Printers["mk3"] = pc
	})
	addr := h.serveAs(adminAddr, printerAddr, func(l net.Listener) error { return h.s.ServeBridge("mk3", l) })
	b := dialBridge(t, addr)
	waitFor(t, "relay subscription", func() bool { return h.pr.subscribers() == 1 })

	b.send(numbered(1, "M109 S200"))
	waitFor(t, "M109 sent", func() bool { return len(h.pr.lines()) == 1 })
	b.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if l, err := b.r.ReadString('\n'); err == nil {
		t.Fatalf("the host got %q while the firmware was still heating, want nothing", l)
	}
	h.pr.recv(" T:150.00 /200.00 B:60.00 /60.00 @:127 B@:0 W:?")
	h.pr.recv("ok N7 P15 B3")
	ap.oks <- "ok N7 P15 B3"
	if got := b.line(); got != " T:150.00 /200.00 B:60.00 /60.00 @:127 B@:0 W:?" {
		t.Errorf("first line after the wait %q, want the W: report", got)
	}
	if got := b.line(); got != "ok" {
		t.Errorf("ack %q, want ok (no ADVANCED_OK fields)", got)
	}

	b.send("M105")
	waitFor(t, "M105 sent", func() bool { return len(h.pr.lines()) == 2 })
	ap.oks <- "ok T:200.00 /200.00 B:60.00 /60.00 @:80 B@:20"
	if got := b.line(); got != "ok T:200.00 /200.00 B:60.00 /60.00 @:80 B@:20" {
		t.Errorf("M105 answer %q, want the ok with its temperatures", got)
	}
}
