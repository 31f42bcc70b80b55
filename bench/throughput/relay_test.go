package throughput

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/netstack"
	"github.com/printgate/printgate/tunnel"
	"github.com/printgate/printgate/tunnel/tunneltest"
)

// TestRelayThroughput is issue 12's relay benchmark (no root needed): the same 200 MB TCP
// upload to a listener on gateway B's printer address, two ways, alternately:
//
//	direct  from a device homed at B (one WireGuard hop: device → B)
//	relay   from a device homed at A, through A's relay (device → A → B: A decrypts, hairpins
//	        in front of its netstack, encrypts again for B)
//
// in two set-ups, each with its own ratio measured in the same run:
//
//	shared     every node in this process, on the machine's shared cores: the relay path does
//	           twice the WireGuard crypto of the direct one on the same CPUs. Each node's CPU
//	           per 100 MB comes from a CPU profile of every upload split by the pprof label
//	           tunneltest gives each node's goroutines (needs `go tool pprof`).
//	own CPU    gateway A in a child process pinned to CPU 1, everything else (device, B) in
//	           this process pinned to CPU 0, as on real hardware where A is another machine;
//	           A's CPU per 100 MB is the child's, exactly. Skipped on one CPU.
//
// Goal: relay ≥ 0.7× direct. PRINTGATE_BENCH_RUNS (default 3) and PRINTGATE_BENCH_MB (default
// 200) change the size; PRINTGATE_BENCH_CPUPROFILE=FILE keeps the profile of the first relay
// upload of the shared set-up.
func TestRelayThroughput(t *testing.T) {
	if os.Getenv("PRINTGATE_BENCH") != "1" {
		t.Skip("benchmark: set PRINTGATE_BENCH=1")
	}
	runs := envInt(t, "PRINTGATE_BENCH_RUNS", 3)
	mb := envInt(t, "PRINTGATE_BENCH_MB", 200)

	t.Run("shared", func(t *testing.T) {
		m := tunneltest.NewMesh(t, nil)
		m.RelayAtA()
		rig := newRelayRig(t, m.B, m.Printer4, m.Direct, m.Device)
		_, err := exec.LookPath("go")
		rig.profile = err == nil
		rig.keep = os.Getenv("PRINTGATE_BENCH_CPUPROFILE")
		rig.relayStats = m.A.Stack.RelayStats
		rig.run(t, runs, mb)
	})
	t.Run("own CPU", func(t *testing.T) {
		var all unix.CPUSet
		if err := unix.SchedGetaffinity(0, &all); err != nil || all.Count() < 2 {
			t.Skipf("needs two CPUs (affinity %v, %v)", all.Count(), err)
		}
		cpus := allowedCPUs(&all)
		restore := pinProcess(t, cpus[0])
		defer restore()
		rig := splitMesh(t, cpus[1])
		rig.run(t, runs, mb)
	})
}

// relayRig is one set-up: a sink on B and the two senders.
type relayRig struct {
	direct, device *tunneltest.Node
	sink           netip.AddrPort
	received       chan int64

	profile    bool                       // per-node CPU from a CPU profile by pprof label
	keep       string                     // where to keep the first relay profile; "" none
	nodeCPU    func() map[string]float64  // per-node CPU seconds so far, measured, or nil
	relayStats func() netstack.RelayStats // A's relay counters
	dir        string
}

type relayResult struct {
	mbps float64
	cpu  float64            // whole process (and A's child, if any), s per 100 MB
	node map[string]float64 // by node, s per 100 MB; nil when unknown
}

func newRelayRig(t *testing.T, b *tunneltest.Node, printer netip.Addr, direct, device *tunneltest.Node) *relayRig {
	r := &relayRig{direct: direct, device: device, sink: netip.AddrPortFrom(printer, 9), received: make(chan int64, 1), dir: t.TempDir()}
	ln, err := b.Stack.ListenTCP(r.sink)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go pprof.Do(context.Background(), pprof.Labels("node", b.Name), func(context.Context) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n, _ := io.Copy(io.Discard, c)
			c.Write([]byte{1}) // the upload is complete only when the sink has read it all
			c.Close()
			r.received <- n
		}
	})
	return r
}

func (r *relayRig) upload(t *testing.T, name string, from *tunneltest.Node, run int, total int64) relayResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := from.Stack.DialTCP(ctx, r.sink)
	if err != nil {
		t.Fatalf("%s: dial %v: %v", name, r.sink, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Minute))
	prof := filepath.Join(r.dir, fmt.Sprintf("%s-%d.prof", name, run))
	if r.profile {
		f, err := os.Create(prof)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
	}
	var node0 map[string]float64
	if r.nodeCPU != nil {
		node0 = r.nodeCPU()
	}
	cpu0, start := selfCPU(t), time.Now()
	pprof.Do(ctx, pprof.Labels("node", from.Name), func(context.Context) {
		_, err = io.CopyN(c, zeros{}, total)
	})
	if err != nil {
		t.Fatalf("%s: upload: %v", name, err)
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
	var ack [1]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		t.Fatalf("%s: waiting for the sink: %v", name, err)
	}
	secs, cpu := time.Since(start).Seconds(), (selfCPU(t) - cpu0).Seconds()
	if r.profile {
		pprof.StopCPUProfile()
	}
	if n := <-r.received; n != total {
		t.Fatalf("%s: the sink read %d bytes, want %d", name, n, total)
	}
	per100MB := func(s float64) float64 { return s / float64(total) * 1e8 }
	res := relayResult{mbps: float64(total) / secs / 1e6}
	if r.nodeCPU != nil {
		res.node = map[string]float64{}
		for k, v := range r.nodeCPU() {
			res.node[k] = per100MB(v - node0[k])
			cpu += v - node0[k]
		}
	}
	res.cpu = per100MB(cpu)
	if r.profile {
		res.node = map[string]float64{}
		for k, d := range profileByNode(t, prof) {
			res.node[k] = per100MB(d.Seconds())
		}
		if name == "relay" && r.keep != "" {
			if b, err := os.ReadFile(prof); err == nil {
				os.WriteFile(r.keep, b, 0o644)
				r.keep = ""
			}
		}
	}
	return res
}

func (r *relayRig) run(t *testing.T, runs, mb int) {
	total := int64(mb) * 1_000_000
	// One small upload each first: handshakes done, buffers grown.
	for _, n := range []*tunneltest.Node{r.direct, r.device} {
		c, err := n.Stack.DialTCP(context.Background(), r.sink)
		if err != nil {
			t.Fatalf("%s: first dial: %v", n.Name, err)
		}
		io.CopyN(c, zeros{}, 1<<20)
		c.(interface{ CloseWrite() error }).CloseWrite()
		io.Copy(io.Discard, c)
		c.Close()
		<-r.received
	}
	results := map[string][]relayResult{}
	var ratios []float64
	for i := range runs {
		order := []string{"direct", "relay"}
		if i%2 == 1 {
			order = []string{"relay", "direct"}
		}
		got := map[string]float64{}
		for _, name := range order {
			from := r.direct
			if name == "relay" {
				from = r.device
			}
			res := r.upload(t, name, from, i, total)
			got[name] = res.mbps
			results[name] = append(results[name], res)
			t.Logf("run %d %-6s %6.1f MB/s  cpu %5.2f s per 100 MB  %s", i+1, name, res.mbps, res.cpu, fmtNodes(res.node))
		}
		ratios = append(ratios, got["relay"]/got["direct"])
	}
	med := func(name string, f func(relayResult) float64) float64 {
		var v []float64
		for _, res := range results[name] {
			v = append(v, f(res))
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	medNodes := func(name string) map[string]float64 {
		out := map[string]float64{}
		for _, node := range []string{"device", "direct", "gatewayA", "gatewayB"} {
			if v := med(name, func(res relayResult) float64 { return res.node[node] }); v > 0 {
				out[node] = v
			}
		}
		return out
	}
	mbps := func(res relayResult) float64 { return res.mbps }
	cpu := func(res relayResult) float64 { return res.cpu }
	slices.Sort(ratios)
	st := r.relayStats()
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s: medians over %d alternating runs, %d MB TCP upload to a printer on gateway B:\n", t.Name(), runs, mb)
	fmt.Fprintf(&b, "direct (device homed at B)        %6.1f MB/s  cpu %5.2f s per 100 MB  %s\n", med("direct", mbps), med("direct", cpu), fmtNodes(medNodes("direct")))
	fmt.Fprintf(&b, "relay  (device homed at A, via A) %6.1f MB/s  cpu %5.2f s per 100 MB  %s\n", med("relay", mbps), med("relay", cpu), fmtNodes(medNodes("relay")))
	fmt.Fprintf(&b, "ratio relay/direct: %.2f× of medians, %.2f× median of per-run ratios (goal ≥ 0.7×)\n", med("relay", mbps)/med("direct", mbps), ratios[len(ratios)/2])
	fmt.Fprintf(&b, "A's relay: %d packets relayed, %d dropped (queue full), %d expired, %d oversize", st.Relayed, st.QueueFull, st.Expired, st.Oversize)
	t.Log(b.String())
}

// splitMesh builds the mesh of tunneltest.NewMesh with gateway A in a child process (this test
// binary again, running TestRelayGatewayChild) pinned to cpu.
func splitMesh(t *testing.T, cpu int) *relayRig {
	a := netip.MustParseAddr
	prefixes := []netip.Prefix{netip.MustParsePrefix("10.98.0.0/16"), netip.MustParsePrefix("fd00:98::/32")}
	printer4, printer6 := a("10.98.1.2"), a("fd00:98:1::2")
	aAddrs := []netip.Addr{a("10.98.0.1"), a("fd00:98::1")}
	b := tunneltest.NewNode(t, "gatewayB", false, nil, a("10.98.1.1"), a("fd00:98:1::1"), printer4, printer6)
	device := tunneltest.NewNode(t, "device", true, nil, a("10.98.0.11"), a("fd00:98::11"))
	direct := tunneltest.NewNode(t, "direct", true, nil, a("10.98.1.11"), a("fd00:98:1::11"))

	child := exec.Command(os.Args[0], "-test.run=^TestRelayGatewayChild$", "-test.v")
	child.Env = append(os.Environ(), "PRINTGATE_RELAY_CHILD="+strconv.Itoa(cpu))
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	expect := func(prefix string) string {
		t.Helper()
		for lines.Scan() {
			if v, ok := strings.CutPrefix(lines.Text(), prefix); ok {
				return v
			}
		}
		t.Fatalf("gateway A's process ended before %q", prefix)
		return ""
	}
	var stats netstack.RelayStats
	var once sync.Once
	finish := func() {
		once.Do(func() {
			stdin.Close()
			json.Unmarshal([]byte(expect("STATS ")), &stats)
			child.Wait()
		})
	}
	t.Cleanup(finish)
	var hello relayChildHello
	if err := json.Unmarshal([]byte(expect("READY ")), &hello); err != nil {
		t.Fatal(err)
	}
	aPeer := tunnel.Peer{PublicKey: hello.PublicKey, Endpoint: netip.AddrPortFrom(a("127.0.0.1"), uint16(hello.Port))}
	for _, x := range aAddrs {
		aPeer.AllowedIPs = append(aPeer.AllowedIPs, tunneltest.Host(x))
	}
	home := aPeer
	home.AllowedIPs = prefixes
	device.Apply(t, home)
	fromA := aPeer
	fromA.AllowedIPs = slices.Clone(aPeer.AllowedIPs)
	for _, x := range device.Addrs {
		fromA.AllowedIPs = append(fromA.AllowedIPs, tunneltest.Host(x))
	}
	b.Apply(t, direct.Peer(), fromA)
	directHome := b.Peer()
	directHome.AllowedIPs = prefixes
	direct.Apply(t, directHome)
	var homedAtB []netip.Prefix
	for _, x := range direct.Addrs {
		homedAtB = append(homedAtB, tunneltest.Host(x))
	}
	cfg := relayChildConfig{
		Peers:  []tunnel.Peer{device.Peer(), b.Peer(homedAtB...)},
		Remote: b.Addrs,
		Homed:  device.Addrs,
	}
	if err := json.NewEncoder(stdin).Encode(cfg); err != nil {
		t.Fatal(err)
	}
	expect("APPLIED")

	rig := newRelayRig(t, b, printer4, direct, device)
	pid := child.Process.Pid
	rig.nodeCPU = func() map[string]float64 { return map[string]float64{"gatewayA": cpuTime(t, pid).Seconds()} }
	rig.relayStats = func() netstack.RelayStats { finish(); return stats } // after the last upload
	return rig
}

type relayChildHello struct {
	Port      int
	PublicKey wgtypes.Key
}

type relayChildConfig struct {
	Peers         []tunnel.Peer
	Remote, Homed []netip.Addr
}

// TestRelayGatewayChild is gateway A of TestRelayThroughput's "own CPU" set-up, in a process
// of its own: it prints READY {port, key}, reads its peers and relay policy as JSON on stdin,
// turns its relay on with the daemon's policy, prints APPLIED, and runs until stdin closes,
// then prints its relay counters.
func TestRelayGatewayChild(t *testing.T) {
	v := os.Getenv("PRINTGATE_RELAY_CHILD")
	if v == "" {
		t.Skip("run by TestRelayThroughput")
	}
	cpu, err := strconv.Atoi(v)
	if err != nil {
		t.Fatal(err)
	}
	pinProcess(t, cpu)
	in := json.NewDecoder(os.Stdin)
	// The node needs its addresses before its peers; they are fixed (tunneltest.NewMesh's A).
	n := tunneltest.NewNode(t, "gatewayA", false, nil, netip.MustParseAddr("10.98.0.1"), netip.MustParseAddr("fd00:98::1"))
	hello, _ := json.Marshal(relayChildHello{Port: int(n.Endpoint.Port()), PublicKey: n.PrivateKey.PublicKey()})
	fmt.Printf("READY %s\n", hello)
	var cfg relayChildConfig
	if err := in.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	n.Apply(t, cfg.Peers...)
	remote, homed := map[netip.Addr]bool{}, map[netip.Addr]bool{}
	for _, x := range cfg.Remote {
		remote[x] = true
	}
	for _, x := range cfg.Homed {
		homed[x] = true
	}
	n.Stack.SetRelay(func(src, dst netip.Addr) bool { return remote[dst] || (remote[src] && homed[dst]) })
	fmt.Println("APPLIED")
	io.Copy(io.Discard, os.Stdin)
	st, _ := json.Marshal(n.Stack.RelayStats())
	fmt.Printf("STATS %s\n", st)
}

// allowedCPUs lists the CPUs in set.
func allowedCPUs(set *unix.CPUSet) []int {
	var cpus []int
	for i := range runtime.NumCPU() * 4 {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	return cpus
}

// pinProcess pins every thread of this process to cpu (threads created later inherit it) and
// returns a function that restores the previous affinity.
func pinProcess(t *testing.T, cpu int) (restore func()) {
	t.Helper()
	var old, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		t.Fatal(err)
	}
	one.Set(cpu)
	setAll := func(set *unix.CPUSet) {
		for range 2 { // twice: a thread started during the first pass
			tasks, err := os.ReadDir("/proc/self/task")
			if err != nil {
				t.Fatal(err)
			}
			for _, task := range tasks {
				if tid, err := strconv.Atoi(task.Name()); err == nil {
					unix.SchedSetaffinity(tid, set) // a thread that just exited is fine
				}
			}
		}
	}
	setAll(&one)
	return func() { setAll(&old) }
}

// profileByNode returns the CPU time of a profile's samples by their "node" label, read with
// `go tool pprof -tags`. Samples without the label (runtime background work, timers) are left
// out.
func profileByNode(t *testing.T, path string) map[string]time.Duration {
	t.Helper()
	out, err := exec.Command("go", "tool", "pprof", "-tags", path).Output()
	if err != nil {
		t.Logf("go tool pprof -tags %s: %v", path, err)
		return nil
	}
	// node: Total 1.50s of 1.71s (87.72%)
	//        540ms (31.58%): gatewayA
	byNode := map[string]time.Duration{}
	inNode := false
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "node:") {
			inNode = true
			continue
		}
		if !inNode {
			continue
		}
		dur, rest, ok := strings.Cut(line, " ")
		_, name, ok2 := strings.Cut(rest, ": ")
		d, err := time.ParseDuration(dur)
		if !ok || !ok2 || err != nil {
			inNode = false
			continue
		}
		byNode[name] = d
	}
	return byNode
}

func fmtNodes(byNode map[string]float64) string {
	if len(byNode) == 0 {
		return ""
	}
	names := make([]string, 0, len(byNode))
	for n := range byNode {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	b.WriteString("by node:")
	for _, n := range names {
		fmt.Fprintf(&b, " %s %.2f", n, byNode[n])
	}
	return b.String()
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
