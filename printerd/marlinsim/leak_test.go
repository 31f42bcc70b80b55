package marlinsim

import (
	"context"
	"net"
	"runtime"
	"testing"
	"time"
)

// TestNoLeakedGoroutines: Serve and a PTY stop every goroutine they started.
func TestNoLeakedGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()

	s := New(Config{Baud: 250000, OKLatency: time.Millisecond, TimeScale: 0.01})
	a, b := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, b) }()
	go func() { // a host that reads a little, then stops reading
		buf := make([]byte, 64)
		a.Read(buf)
	}()
	a.Write([]byte("M109 S200\nM115\n"))
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("Serve = %v, want context.Canceled", err)
	}
	a.Close()

	p, err := OpenPTY(context.Background(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}

	waitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}
