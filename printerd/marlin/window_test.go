package marlin

import (
	"bytes"
	"context"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/printgate/printgate/printerd/marlinsim"
)

// inflightLink wraps the host's end of the link and keeps the host's own view of the window:
// numbered lines written minus oks read, and the largest value it reached.
type inflightLink struct {
	io.ReadWriteCloser
	mu       sync.Mutex
	partial  []byte
	inflight int
	max      int
}

func (l *inflightLink) Write(p []byte) (int, error) {
	l.mu.Lock()
	for _, line := range bytes.Split(p, []byte{'\n'}) {
		if bytes.HasPrefix(line, []byte("N")) {
			l.inflight++
			l.max = max(l.max, l.inflight)
		}
	}
	l.mu.Unlock()
	return l.ReadWriteCloser.Write(p)
}

func (l *inflightLink) Read(p []byte) (int, error) {
	n, err := l.ReadWriteCloser.Read(p)
	l.mu.Lock()
	l.partial = append(l.partial, p[:n]...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		if strings.HasPrefix(string(l.partial[:i]), "ok") && l.inflight > 0 {
			l.inflight--
		}
		l.partial = l.partial[i+1:]
	}
	l.mu.Unlock()
	return n, err
}

func (l *inflightLink) maxInFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.max
}

// TestMaxInFlight: with ADVANCED_OK the controller keeps several lines in flight unless
// MaxInFlight caps it; MaxInFlight 1 (the CLI's window=1) is strict ping-pong even though the
// firmware offers more. Either way the job runs exactly once, in order.
func TestMaxInFlight(t *testing.T) {
	text, want := genJob(400)
	for _, tc := range []struct {
		window  int
		wantMax func(int) bool
		what    string
	}{
		{window: 1, wantMax: func(m int) bool { return m == 1 }, what: "exactly 1"},
		{window: 0, wantMax: func(m int) bool { return m > 1 }, what: "more than 1"},
	} {
		t.Run(map[int]string{0: "firmware-decides", 1: "window=1"}[tc.window], func(t *testing.T) {
			sim := marlinsim.New(marlinsim.Config{AdvancedOK: true, OKLatency: time.Millisecond})
			ctx, cancel := context.WithCancel(context.Background())
			var served sync.WaitGroup
			var link *inflightLink
			var linkMu sync.Mutex
			open := func(context.Context) (io.ReadWriteCloser, error) {
				host, fw := net.Pipe()
				served.Add(1)
				go func() { defer served.Done(); sim.Serve(ctx, fw); fw.Close() }()
				linkMu.Lock()
				defer linkMu.Unlock()
				link = &inflightLink{ReadWriteCloser: host}
				return link, nil
			}
			c := New(Config{Name: "w", Open: open, MaxInFlight: tc.window, BootWait: 300 * time.Millisecond, Logf: func(string, ...any) {}})
			done := make(chan struct{})
			go func() { defer close(done); c.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done; served.Wait() })

			waitStateTB(t, c, Operational)
			startJob(t, c, text)
			if j := waitJobEnd(t, c, 2*time.Minute); !j.Done {
				t.Fatalf("job = %+v, want done", j)
			}
			var got []string
			for _, e := range sim.Record() {
				if strings.HasPrefix(e.Line, "G1 ") || e.Line == "G28" {
					got = append(got, e.Line)
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("simulator executed %d job lines, want %d exactly once in order", len(got), len(want))
			}
			linkMu.Lock()
			m := link.maxInFlight()
			linkMu.Unlock()
			if !tc.wantMax(m) {
				t.Errorf("MaxInFlight %d: at most %d lines were in flight, want %s", tc.window, m, tc.what)
			}
		})
	}
}
