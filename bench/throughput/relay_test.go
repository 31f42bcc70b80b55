package throughput

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/printgate/printgate/netstack"
	"github.com/printgate/printgate/tunnel/tunneltest"
)

// TestRelayThroughput is issue 12's relay benchmark, in one process (no root): the same 200 MB
// TCP upload to a listener on gateway B's printer address, two ways, alternately:
//
//	direct  from a device homed at B (one WireGuard hop: device → B)
//	relay   from a device homed at A, through A's relay (device → A → B: A decrypts, hairpins
//	        in front of its netstack, encrypts again for B)
//
// Every node (three WireGuard devices and their netstacks per path) runs in this process on
// loopback UDP, so the relay path does twice the WireGuard crypto of the direct one on the same
// cores; on separate machines A's work runs beside B's. Goal: relay ≥ 0.7× direct.
// PRINTGATE_BENCH_RUNS (default 3) and PRINTGATE_BENCH_MB (default 200) change the size;
// PRINTGATE_BENCH_CPUPROFILE=FILE writes a CPU profile of the first relay upload.
func TestRelayThroughput(t *testing.T) {
	if os.Getenv("PRINTGATE_BENCH") != "1" {
		t.Skip("benchmark: set PRINTGATE_BENCH=1")
	}
	runs := envInt(t, "PRINTGATE_BENCH_RUNS", 3)
	mb := envInt(t, "PRINTGATE_BENCH_MB", 200)
	total := int64(mb) * 1_000_000

	m := tunneltest.NewMesh(t, nil)
	m.RelayAtA()
	sink := netip.AddrPortFrom(m.Printer4, 9)
	ln, err := m.B.Stack.ListenTCP(sink)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	received := make(chan int64, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n, _ := io.Copy(io.Discard, c)
			c.Write([]byte{1}) // the upload is complete only when the sink has read it all
			c.Close()
			received <- n
		}
	}()

	var profile *os.File
	if path := os.Getenv("PRINTGATE_BENCH_CPUPROFILE"); path != "" {
		if profile, err = os.Create(path); err != nil {
			t.Fatal(err)
		}
		defer profile.Close()
	}

	upload := func(name string, from *netstack.Stack) (mbps, cpuPer100MB float64) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		c, err := from.DialTCP(ctx, sink)
		if err != nil {
			t.Fatalf("%s: dial %v: %v", name, sink, err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Minute))
		if name == "relay" && profile != nil {
			pprof.StartCPUProfile(profile)
			defer pprof.StopCPUProfile()
			profile = nil // the first relay upload only
		}
		cpu0, start := selfCPU(t), time.Now()
		if _, err := io.CopyN(c, zeros{}, total); err != nil {
			t.Fatalf("%s: upload: %v", name, err)
		}
		c.(interface{ CloseWrite() error }).CloseWrite()
		var ack [1]byte
		if _, err := io.ReadFull(c, ack[:]); err != nil {
			t.Fatalf("%s: waiting for the sink: %v", name, err)
		}
		secs, cpu := time.Since(start).Seconds(), (selfCPU(t) - cpu0).Seconds()
		if n := <-received; n != total {
			t.Fatalf("%s: the sink read %d bytes, want %d", name, n, total)
		}
		return float64(total) / secs / 1e6, cpu / float64(total) * 1e8
	}

	// One small upload each first: handshakes done, buffers grown.
	for _, s := range []*netstack.Stack{m.Direct.Stack, m.Device.Stack} {
		c, err := s.DialTCP(context.Background(), sink)
		if err != nil {
			t.Fatal(err)
		}
		io.CopyN(c, zeros{}, 1<<20)
		c.(interface{ CloseWrite() error }).CloseWrite()
		io.Copy(io.Discard, c)
		c.Close()
		<-received
	}

	var direct, relay, ratios, directCPU, relayCPU []float64
	for i := range runs {
		order := []string{"direct", "relay"}
		if i%2 == 1 {
			order = []string{"relay", "direct"}
		}
		var d, r float64
		for _, name := range order {
			from := m.Direct.Stack
			if name == "relay" {
				from = m.Device.Stack
			}
			mbps, cpu := upload(name, from)
			t.Logf("run %d %-6s %6.1f MB/s  cpu %5.2f s per 100 MB (whole process)", i+1, name, mbps, cpu)
			if name == "relay" {
				r = mbps
				relay, relayCPU = append(relay, mbps), append(relayCPU, cpu)
			} else {
				d = mbps
				direct, directCPU = append(direct, mbps), append(directCPU, cpu)
			}
		}
		ratios = append(ratios, r/d)
	}
	st := m.A.Stack.RelayStats()
	med := func(v []float64) float64 { v = slices.Clone(v); slices.Sort(v); return v[len(v)/2] }
	var b strings.Builder
	fmt.Fprintf(&b, "\nmedians over %d alternating runs, %d MB TCP upload to a printer on gateway B, in one process:\n", runs, mb)
	fmt.Fprintf(&b, "direct (device homed at B)        %6.1f MB/s  cpu %5.2f s per 100 MB\n", med(direct), med(directCPU))
	fmt.Fprintf(&b, "relay  (device homed at A, via A) %6.1f MB/s  cpu %5.2f s per 100 MB\n", med(relay), med(relayCPU))
	fmt.Fprintf(&b, "ratio relay/direct: %.2f× of medians, %.2f× median of per-run ratios (goal ≥ 0.7×)\n", med(relay)/med(direct), med(ratios))
	fmt.Fprintf(&b, "A's relay: %d packets relayed, %d dropped (queue full), %d expired, %d oversize", st.Relayed, st.QueueFull, st.Expired, st.Oversize)
	t.Log(b.String())
}

// selfCPU is this process's user+system CPU time so far.
func selfCPU(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }
