package marlinsim

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/printgate/printgate/printerd/gcode"
)

// deadline is the generous limit for any condition a test waits for.
const deadline = 20 * time.Second

// host is the test's end of a link to a Sim.
type host struct {
	t     *testing.T
	conn  net.Conn
	lines chan string
	done  chan error // Serve's result
}

// serve starts s on a net.Pipe and returns the host end; cleanup stops everything.
func serve(t *testing.T, s *Sim) *host {
	t.Helper()
	a, b := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	h := &host{t: t, conn: a, lines: make(chan string, 1<<16), done: make(chan error, 1)}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		h.done <- s.Serve(ctx, b)
	}()
	go func() {
		defer wg.Done()
		defer close(h.lines)
		sc := bufio.NewScanner(a)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		cancel()
		a.Close()
		wg.Wait()
	})
	return h
}

func (h *host) send(lines ...string) {
	h.t.Helper()
	for _, l := range lines {
		if _, err := io.WriteString(h.conn, l+"\n"); err != nil {
			h.t.Fatalf("write %q: %v", l, err)
		}
	}
}

// next returns the next line from the simulator.
func (h *host) next() string {
	h.t.Helper()
	select {
	case l, ok := <-h.lines:
		if !ok {
			h.t.Fatalf("link closed while waiting for a line")
		}
		return l
	case <-time.After(deadline):
		h.t.Fatalf("no line from the simulator within %v", deadline)
	}
	return ""
}

// expect reads the next lines and compares them exactly.
func (h *host) expect(want ...string) {
	h.t.Helper()
	for _, w := range want {
		if got := h.next(); got != w {
			h.t.Fatalf("simulator said %q, want %q", got, w)
		}
	}
}

// until reads lines up to and including the first one that satisfies pred.
func (h *host) until(pred func(string) bool) []string {
	h.t.Helper()
	var got []string
	for {
		l := h.next()
		got = append(got, l)
		if pred(l) {
			return got
		}
	}
}

// boot reads the boot banner.
func (h *host) boot() []string {
	h.t.Helper()
	return h.until(func(l string) bool { return l == "echo:Hardcoded Default Settings Loaded" })
}

// quiet asserts that nothing arrives for a short while (used only after kill and silence).
func (h *host) quiet(d time.Duration) {
	h.t.Helper()
	select {
	case l, ok := <-h.lines:
		if ok {
			h.t.Fatalf("simulator said %q, want silence", l)
		}
	case <-time.After(d):
	}
}

// pingPong streams numbered lines N1.. in ping-pong, handling resends as OctoPrint does,
// and returns the number of resend requests seen.
func (h *host) pingPong(cmds []string, resendOK bool) int {
	h.t.Helper()
	h.send("M110 N0")
	h.until(func(l string) bool { return strings.HasPrefix(l, "ok") })
	next, resends, pending := 1, 0, 0
	sendLine := func(n int) { h.send(gcode.Number(int64(n), cmds[n-1])) }
	sendLine(next)
	for next <= len(cmds) {
		l := h.next()
		switch {
		case strings.HasPrefix(l, "Resend: "):
			n, err := strconv.Atoi(strings.TrimPrefix(l, "Resend: "))
			if err != nil || n < 1 || n > next {
				h.t.Fatalf("bad resend %q at line %d", l, next)
			}
			resends++
			if resendOK {
				pending = n
				continue
			}
			next = n
			sendLine(next)
		case strings.HasPrefix(l, "ok"):
			if pending > 0 {
				next, pending = pending, 0
			} else {
				next++
			}
			if next <= len(cmds) {
				sendLine(next)
			}
		}
	}
	return resends
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// serveErr waits for Serve's result.
func (h *host) serveErr() error {
	h.t.Helper()
	select {
	case err := <-h.done:
		return err
	case <-time.After(deadline):
		h.t.Fatalf("Serve did not return")
	}
	return errors.New("unreachable")
}
