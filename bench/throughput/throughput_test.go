// Package throughput is the tunnel benchmark of issue 2: a Debian wireguard-go client in a
// network namespace uploads 200 MB with curl through WireGuard to (a) the stock wireguard-go
// tun/netstack HTTP example and (b) printgate's tunnel+netstack (./sink), alternately, and
// compares throughput, peak and idle RSS, and start-to-ready time.
//
// Run (root; needs ip, wireguard-go, wg, curl):
//
//	PRINTGATE_BENCH=1 go test -v -count=1 -timeout 30m ./bench/throughput/
//
// PRINTGATE_BENCH_RUNS (default 3) and PRINTGATE_BENCH_MB (default 200) change the size.
// PRINTGATE_BENCH_ENV passes extra environment to printgate's server only (e.g. "GOGC=50"),
// PRINTGATE_BENCH_ARGS extra flags (e.g. "-rcvbuf 2097152 -cpuprofile /tmp/sink.prof").
package throughput

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

const (
	serverPort = 51820
	tunGateway = "10.250.200.1"
	tunClient  = "10.250.200.2"
)

type result struct {
	name      string
	mbps      float64       // MB/s, 1 MB = 10^6 bytes
	peakRSS   int64         // KiB, VmHWM
	idleRSS   int64         // KiB, VmRSS after start and one request through the tunnel
	ready     time.Duration // exec to UDP port bound
	firstResp time.Duration // UDP port bound to the first HTTP response through the tunnel
	cpu       time.Duration // server CPU time (user+system) spent on the upload
}

func TestThroughput(t *testing.T) {
	if os.Getenv("PRINTGATE_BENCH") != "1" {
		t.Skip("benchmark: set PRINTGATE_BENCH=1 (root, network namespaces, Debian wireguard-go, wg, curl)")
	}
	if os.Geteuid() != 0 {
		t.Skip("benchmark needs root for network namespaces")
	}
	for _, tool := range []string{"ip", "wireguard-go", "wg", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("benchmark needs %s (apt-get install iproute2 wireguard-go wireguard-tools curl)", tool)
		}
	}
	runs := envInt(t, "PRINTGATE_BENCH_RUNS", 3)
	mb := envInt(t, "PRINTGATE_BENCH_MB", 200)

	dir := t.TempDir()
	baselineBin := buildBaseline(t, dir)
	oursBin := filepath.Join(dir, "sink")
	goBuild(t, oursBin, "./sink")

	payload := filepath.Join(dir, "payload")
	if err := os.WriteFile(payload, bytes.Repeat([]byte{0x5a}, mb*1_000_000), 0o600); err != nil {
		t.Fatal(err)
	}

	n := newNet(t)
	serverKey, _ := wgtypes.GeneratePrivateKey()
	clientKey, _ := wgtypes.GeneratePrivateKey()
	n.startClient(t, clientKey)

	servers := map[string][]string{
		"baseline": {baselineBin},
		"printgate": {oursBin, "-private-key", serverKey.String(), "-peer", clientKey.PublicKey().String(),
			"-addr", tunGateway, "-peer-ip", tunClient, "-port", strconv.Itoa(serverPort)},
	}
	var results []result
	for i := range runs {
		for _, name := range []string{"baseline", "printgate"} {
			var env []string
			argv := servers[name]
			if name == "printgate" {
				env = strings.Fields(os.Getenv("PRINTGATE_BENCH_ENV"))
				argv = append(slices.Clone(argv), strings.Fields(os.Getenv("PRINTGATE_BENCH_ARGS"))...)
			}
			r := n.run(t, name, argv, env, serverKey, clientKey, payload, mb)
			t.Logf("run %d %-9s %6.1f MB/s  cpu %5.2fs  peak RSS %5.1f MiB  idle RSS %5.1f MiB  ready %v  first response %v",
				i+1, name, r.mbps, r.cpu.Seconds(), mib(r.peakRSS), mib(r.idleRSS), r.ready.Round(time.Millisecond), r.firstResp.Round(time.Millisecond))
			results = append(results, r)
		}
	}
	report(t, results, mb)
}

func mib(kib int64) float64 { return float64(kib) / 1024 }

func report(t *testing.T, results []result, mb int) {
	med := func(name string, f func(r result) float64) float64 {
		var v []float64
		for _, r := range results {
			if r.name == name {
				v = append(v, f(r))
			}
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nmedians over %d alternating runs, %d MB upload:\n", len(results)/2, mb)
	fmt.Fprintf(&b, "%-10s %8s %8s %14s %14s %10s %16s\n", "server", "MB/s", "cpu s", "peak RSS MiB", "idle RSS MiB", "ready ms", "1st response ms")
	for _, name := range []string{"baseline", "printgate"} {
		fmt.Fprintf(&b, "%-10s %8.1f %8.2f %14.1f %14.1f %10.1f %16.1f\n", name,
			med(name, func(r result) float64 { return r.mbps }),
			med(name, func(r result) float64 { return r.cpu.Seconds() }),
			med(name, func(r result) float64 { return mib(r.peakRSS) }),
			med(name, func(r result) float64 { return mib(r.idleRSS) }),
			med(name, func(r result) float64 { return float64(r.ready.Microseconds()) / 1000 }),
			med(name, func(r result) float64 { return float64(r.firstResp.Microseconds()) / 1000 }))
	}
	ratio := func(f func(r result) float64) float64 { return med("printgate", f) / med("baseline", f) }
	fmt.Fprintf(&b, "ratio printgate/baseline: throughput %.2f×, cpu %.2f×, peak RSS %.2f×, idle RSS %.2f×\n",
		ratio(func(r result) float64 { return r.mbps }),
		ratio(func(r result) float64 { return r.cpu.Seconds() }),
		ratio(func(r result) float64 { return float64(r.peakRSS) }),
		ratio(func(r result) float64 { return float64(r.idleRSS) }))
	t.Log(b.String())
}

func envInt(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return v
}

func goBuild(t *testing.T, out string, args ...string) {
	t.Helper()
	cmd := exec.Command("go", append([]string{"build", "-o", out}, args...)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %v: %v\n%s", args, err, b)
	}
}

// buildBaseline builds wireguard-go's tun/netstack/examples/http_server.go from the module
// cache with default settings. The copy (in a temp dir, never committed) changes only the
// keys and addresses, and makes the handler read the request body: the stock handler ignores
// it, and net/http then closes an upload connection after 256 KiB.
func buildBaseline(t *testing.T, dir string) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "golang.zx2c4.com/wireguard").Output()
	if err != nil {
		t.Fatalf("go list -m golang.zx2c4.com/wireguard: %v", err)
	}
	src := filepath.Join(strings.TrimSpace(string(out)), "tun", "netstack", "examples", "http_server.go")
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	replace := func(old, new string) {
		t.Helper()
		if !strings.Contains(s, old) {
			t.Fatalf("baseline %s: %q not found; the example changed, update the harness", src, old)
		}
		s = strings.Replace(s, old, new, 1)
	}
	replace("//go:build ignore\n", "")
	replace(`netip.MustParseAddr("192.168.4.29")`, `netip.MustParseAddr("`+tunGateway+`")`)
	replace("private_key=003ed5d73b55806c30de3f8a7bdab38af13539220533055e635690b8b87ad641", "private_key=\"+os.Getenv(\"BASELINE_PRIVATE_KEY\")+\"")
	replace("listen_port=58120", "listen_port="+strconv.Itoa(serverPort))
	replace("public_key=f928d4f6c1b86c12f2562c10b07c555c5c57fd00f59e90c8d8d88767271cbf7c", "public_key=\"+os.Getenv(\"BASELINE_PEER_KEY\")+\"")
	replace("allowed_ip=192.168.4.28/32", "allowed_ip="+tunClient+"/32")
	replace("dev.IpcSet(`", "dev.IpcSet(\"\"+`")
	replace(`io.WriteString(writer, "Hello from userspace TCP!")`, `io.Copy(io.Discard, request.Body)
		io.WriteString(writer, "Hello from userspace TCP!")`)
	// GET /download serves BASELINE_FILE with net/http's own file server (TestRealPath).
	replace(`http.HandleFunc("/", `, `http.HandleFunc("/download", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, os.Getenv("BASELINE_FILE"))
	})
	http.HandleFunc("/", `)
	replace(`"net/netip"`, "\"net/netip\"\n\t\"os\"")
	// The IpcSet text is a raw string; the two env lookups above sit inside it as
	// "…`+os.Getenv(…)+`…" once the quotes are turned into backquote joins.
	s = strings.ReplaceAll(s, "\"+os.Getenv(\"BASELINE_PRIVATE_KEY\")+\"", "`+os.Getenv(\"BASELINE_PRIVATE_KEY\")+`")
	s = strings.ReplaceAll(s, "\"+os.Getenv(\"BASELINE_PEER_KEY\")+\"", "`+os.Getenv(\"BASELINE_PEER_KEY\")+`")
	main := filepath.Join(dir, "baseline", "main.go")
	os.MkdirAll(filepath.Dir(main), 0o700)
	if err := os.WriteFile(main, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "baseline-server")
	goBuild(t, bin, main)
	return bin
}

// benchNet is a server namespace and a client namespace joined by a veth pair, addresses in
// 10.250.0.0/16 only; the client runs Debian's wireguard-go configured with wg(8).
type benchNet struct {
	srvNS, cliNS string
	srvAddr      string // veth address in the server namespace
	wgIface      string
	client       *exec.Cmd
}

func randDigits(t *testing.T, n int64) int64 {
	v, err := rand.Int(rand.Reader, big.NewInt(n))
	if err != nil {
		t.Fatal(err)
	}
	return v.Int64()
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newNet(t *testing.T) *benchNet {
	t.Helper()
	id := randDigits(t, 1_000_000)
	sub := 1 + randDigits(t, 199) // 10.250.<sub>.0/24 for the veth link
	n := &benchNet{
		srvNS:   fmt.Sprintf("pgbs%d", id),
		cliNS:   fmt.Sprintf("pgbc%d", id),
		srvAddr: fmt.Sprintf("10.250.%d.1", sub),
		wgIface: fmt.Sprintf("pgbw%d", id),
	}
	vs, vc := fmt.Sprintf("pgbv%da", id), fmt.Sprintf("pgbv%db", id)
	run(t, "ip", "netns", "add", n.srvNS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.srvNS).Run() })
	run(t, "ip", "netns", "add", n.cliNS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.cliNS).Run() })
	run(t, "ip", "link", "add", vs, "netns", n.srvNS, "type", "veth", "peer", "name", vc, "netns", n.cliNS)
	for _, c := range [][]string{
		{n.srvNS, "ip", "link", "set", "lo", "up"},
		{n.cliNS, "ip", "link", "set", "lo", "up"},
		{n.srvNS, "ip", "addr", "add", n.srvAddr + "/24", "dev", vs},
		{n.cliNS, "ip", "addr", "add", fmt.Sprintf("10.250.%d.2/24", sub), "dev", vc},
		{n.srvNS, "ip", "link", "set", vs, "up"},
		{n.cliNS, "ip", "link", "set", vc, "up"},
	} {
		run(t, "ip", append([]string{"netns", "exec"}, c...)...)
	}
	return n
}

func (n *benchNet) inClient(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"netns", "exec", n.cliNS}, args...)...)
}

// startClient runs Debian's wireguard-go in the client namespace with the tunnel address.
func (n *benchNet) startClient(t *testing.T, key wgtypes.Key) {
	t.Helper()
	n.client = exec.Command("ip", "netns", "exec", n.cliNS, "wireguard-go", "-f", n.wgIface)
	n.client.Env = append(os.Environ(), "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1", "LOG_LEVEL=error")
	var out bytes.Buffer
	n.client.Stdout, n.client.Stderr = &out, &out
	if err := n.client.Start(); err != nil {
		t.Fatalf("wireguard-go: %v", err)
	}
	t.Cleanup(func() {
		n.client.Process.Kill()
		n.client.Wait()
		os.Remove(filepath.Join("/var/run/wireguard", n.wgIface+".sock"))
	})
	deadline := time.Now().Add(10 * time.Second)
	for exec.Command("ip", "netns", "exec", n.cliNS, "wg", "show", n.wgIface).Run() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("wireguard-go client did not come up:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	keyFile := filepath.Join(t.TempDir(), "client.key")
	os.WriteFile(keyFile, []byte(key.String()+"\n"), 0o600)
	n.inClient(t, "wg", "set", n.wgIface, "private-key", keyFile)
	n.inClient(t, "ip", "addr", "add", tunClient+"/32", "dev", n.wgIface)
	n.inClient(t, "ip", "link", "set", n.wgIface, "up")
	n.inClient(t, "ip", "route", "add", tunGateway+"/32", "dev", n.wgIface)
}

// resetPeer (re)adds the server as the client's peer, so every run starts with a fresh
// handshake rather than a session the restarted server does not know.
func (n *benchNet) resetPeer(t *testing.T, server wgtypes.Key) {
	t.Helper()
	pub := server.PublicKey().String()
	n.inClient(t, "wg", "set", n.wgIface, "peer", pub, "remove")
	n.inClient(t, "wg", "set", n.wgIface, "peer", pub, "endpoint", fmt.Sprintf("%s:%d", n.srvAddr, serverPort), "allowed-ips", tunGateway+"/32")
}

func statusKiB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read status of %d: %v", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s: %q: %v", field, v, err)
			}
			return kb
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// cpuTime returns the user+system CPU time of pid so far (/proc/PID/stat, clock ticks of
// 1/100 s, the Linux USER_HZ).
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("read stat of %d: %v", pid, err)
	}
	// Fields after the parenthesised command name; utime and stime are fields 14 and 15.
	rest := string(b[bytes.LastIndexByte(b, ')')+2:])
	f := strings.Fields(rest)
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// udpBound reports whether pid's network namespace has a UDP socket on port.
func udpBound(pid, port int) bool {
	for _, f := range []string{"udp", "udp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			return false
		}
		if bytes.Contains(b, []byte(fmt.Sprintf(":%04X ", port))) {
			return true
		}
	}
	return false
}

func (n *benchNet) curl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.cliNS, "curl", "-sS", "--fail"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (n *benchNet) run(t *testing.T, name string, argv, env []string, serverKey, clientKey wgtypes.Key, payload string, mb int) result {
	t.Helper()
	n.resetPeer(t, serverKey)
	r := result{name: name}
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.srvNS}, argv...)...)
	clientPub := clientKey.PublicKey()
	cmd.Env = append(os.Environ(),
		"BASELINE_PRIVATE_KEY="+fmt.Sprintf("%x", serverKey[:]),
		"BASELINE_PEER_KEY="+fmt.Sprintf("%x", clientPub[:]))
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	pid := cmd.Process.Pid // ip netns exec execs the server in place: same pid
	done := false
	defer func() {
		if !done {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	deadline := start.Add(10 * time.Second)
	for !udpBound(pid, serverPort) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: UDP port %d not bound after 10 s:\n%s", name, serverPort, out.String())
		}
		time.Sleep(time.Millisecond)
	}
	r.ready = time.Since(start)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bound := time.Now()
	if o, err := n.curl(ctx, "-o", "/dev/null", "--max-time", "20", "http://"+tunGateway+"/"); err != nil {
		t.Fatalf("%s: first request through the tunnel: %v\n%s\nserver:\n%s", name, err, o, out.String())
	}
	r.firstResp = time.Since(bound)
	time.Sleep(500 * time.Millisecond) // let the first request's garbage settle before sampling
	r.idleRSS = statusKiB(t, pid, "VmRSS")

	cpu0 := cpuTime(t, pid)
	o, err := n.curl(ctx, "-o", "/dev/null", "-H", "Expect:", "-w", "%{time_total} %{size_upload}",
		"-T", payload, "http://"+tunGateway+"/upload")
	if err != nil {
		t.Fatalf("%s: upload: %v\n%s\nserver:\n%s", name, err, o, out.String())
	}
	var secs, size float64
	if _, err := fmt.Sscanf(o, "%g %g", &secs, &size); err != nil || int(size) != mb*1_000_000 {
		t.Fatalf("%s: upload: curl reported %q, want %d bytes", name, o, mb*1_000_000)
	}
	r.mbps = size / secs / 1e6
	r.cpu = cpuTime(t, pid) - cpu0
	r.peakRSS = statusKiB(t, pid, "VmHWM")

	cmd.Process.Signal(os.Interrupt)
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case <-waitErr:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-waitErr
	}
	done = true
	return r
}
