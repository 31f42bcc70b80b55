package throughput

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// TestRealPath is issue 14's benchmark: what a user does, not a sink. The same client as
// TestThroughput uploads a G-code file of PRINTGATE_BENCH_MB (default 200) MB as a slicer
// does (multipart/form-data, curl -F) to
//
//   - the baseline (the stock tun/netstack example, draining the body), and
//   - printgate's real path: POST /api/files/local of printerd's OctoPrint face, into the
//     policy-checked, hashed, estimated, fsynced, listed file store (sink -store),
//
// alternately, then downloads the same bytes from each (baseline: net/http's file server on
// /download; printgate: GET /downloads/files/local/NAME). Then PRINTGATE_BENCH_DEVICES
// (default 8) devices, each its own WireGuard client in its own namespace, upload
// MB/devices MB each at once to one printgate. It reports medians, ratios, gateway CPU
// seconds (user+sys) per 100 MB and peak RSS. With PRINTGATE_BENCH_PROFILE=DIR each single
// printgate upload is CPU-profiled on its own into DIR/upload-N.prof (merge them with
// go tool pprof -top DIR/*.prof). With PRINTGATE_BENCH_BEFORE=DIR (another checkout of this
// module, e.g. from git archive) each run also uploads to DIR's sink, right after printgate's,
// and the report adds "before" and the per-run ratios of printgate to it: an A/B of two trees
// in one session on a machine whose load drifts.
//
//	PRINTGATE_BENCH=1 go test -v -count=1 -run RealPath -timeout 40m ./bench/throughput/
func TestRealPath(t *testing.T) {
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
	devices := 8 // PRINTGATE_BENCH_DEVICES=0 skips the many-devices part
	if v := os.Getenv("PRINTGATE_BENCH_DEVICES"); v != "" {
		d, err := strconv.Atoi(v)
		if err != nil || d < 0 || d > 50 {
			t.Fatalf("PRINTGATE_BENCH_DEVICES=%q: want 0..50", v)
		}
		devices = d
	}

	dir := t.TempDir()
	baselineBin := buildBaseline(t, dir)
	oursBin := filepath.Join(dir, "sink")
	goBuild(t, oursBin, "./sink")
	names := []string{"baseline", "printgate"}
	beforeBin := filepath.Join(dir, "sink-before")
	if tree := os.Getenv("PRINTGATE_BENCH_BEFORE"); tree != "" {
		cmd := exec.Command("go", "build", "-o", beforeBin, "./bench/throughput/sink")
		cmd.Dir = tree
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build the sink of %s: %v\n%s", tree, err, b)
		}
		names = append(names, "before")
	}
	payload := filepath.Join(dir, "bench.gcode")
	writeGcode(t, payload, mb*1_000_000)
	small := filepath.Join(dir, "small.gcode")
	writeGcode(t, small, mb*1_000_000/max(devices, 1))

	n := newNet(t)
	serverKey, _ := wgtypes.GeneratePrivateKey()
	clientKey, _ := wgtypes.GeneratePrivateKey()
	n.startClient(t, clientKey)
	devs := n.addDevices(t, devices)

	ours := func(store string, peers string) []string {
		argv := []string{oursBin, "-private-key", serverKey.String(), "-peer", clientKey.PublicKey().String(),
			"-addr", tunGateway, "-peer-ip", tunClient, "-port", strconv.Itoa(serverPort), "-store", store}
		if peers != "" {
			argv = append(argv, "-peers", peers)
		}
		return append(argv, strings.Fields(os.Getenv("PRINTGATE_BENCH_ARGS"))...)
	}
	env := strings.Fields(os.Getenv("PRINTGATE_BENCH_ENV"))
	up := map[string]string{"baseline": "/upload", "printgate": "/api/files/local", "before": "/api/files/local"}
	down := map[string]string{"baseline": "/download", "printgate": "/downloads/files/local/bench.gcode",
		"before": "/downloads/files/local/bench.gcode"}

	var peers []string
	for _, d := range devs {
		peers = append(peers, d.key.PublicKey().String()+"@"+d.ip)
	}
	// Each run: baseline, printgate, then (with devices) printgate with every device at once,
	// back to back, so that each run's ratios compare like with like on a machine whose load
	// drifts.
	var results, multi []realResult
	for i := range runs {
		order := names
		if len(names) == 3 && i%2 == 1 {
			order = []string{"baseline", "before", "printgate"} // neither tree always goes first
		}
		for _, name := range order {
			store := filepath.Join(dir, fmt.Sprintf("store-%d", i))
			argv, senv := []string{baselineBin}, []string{"BASELINE_FILE=" + payload}
			profiling := false
			switch name {
			case "before":
				argv, senv = ours(store, ""), env
				argv[0] = beforeBin
			case "printgate":
				argv, senv = ours(store, ""), env
				if dir := os.Getenv("PRINTGATE_BENCH_PROFILE"); dir != "" {
					argv = append(argv, "-cpuprofile", filepath.Join(dir, fmt.Sprintf("upload-%d.prof", i+1)))
					profiling = true
				}
			}
			srv := n.startServer(t, name, argv, senv, serverKey, clientKey)
			r := realResult{name: name}
			cpu0 := cpuTime(t, srv.pid)
			r.upMBps = n.upload(t, n.cliNS, up[name], payload, "bench.gcode", srv)
			r.cpu = cpuTime(t, srv.pid) - cpu0
			if profiling {
				syscall.Kill(srv.pid, syscall.SIGUSR1) // the profile ends with the upload
			}
			r.peakRSS = statusKiB(t, srv.pid, "VmHWM")
			r.downMBps = n.download(t, down[name], fileSize(t, payload), srv)
			srv.stop()
			os.RemoveAll(store)
			t.Logf("run %d %-9s upload %6.1f MB/s  cpu %5.2f s/100MB  peak RSS %5.1f MiB  download %6.1f MB/s",
				i+1, name, r.upMBps, r.cpu.Seconds()*100/float64(mb), mib(r.peakRSS), r.downMBps)
			results = append(results, r)
		}
		if devices == 0 {
			continue
		}
		store := filepath.Join(dir, fmt.Sprintf("store-multi-%d", i))
		srv := n.startServer(t, "printgate", ours(store, strings.Join(peers, ",")), env, serverKey, clientKey)
		for _, d := range devs {
			n.resetDevicePeer(t, d, serverKey)
			if o, err := n.curlIn(context.Background(), d.ns, "-o", "/dev/null", "--max-time", "20", "http://"+tunGateway+"/api/version"); err != nil {
				t.Fatalf("device %s: first request: %v\n%s", d.ns, err, o)
			}
		}
		cpu0 := cpuTime(t, srv.pid)
		start := time.Now()
		var wg sync.WaitGroup
		for k, d := range devs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n.upload(t, d.ns, up["printgate"], small, fmt.Sprintf("d%d.gcode", k), srv)
			}()
		}
		wg.Wait()
		wall := time.Since(start)
		r := realResult{name: "eight", cpu: cpuTime(t, srv.pid) - cpu0, peakRSS: statusKiB(t, srv.pid, "VmHWM")}
		r.upMBps = float64(devices*fileSize(t, small)) / wall.Seconds() / 1e6
		srv.stop()
		os.RemoveAll(store)
		t.Logf("run %d %d devices at once: aggregate %6.1f MB/s  cpu %5.2f s/100MB  peak RSS %5.1f MiB",
			i+1, devices, r.upMBps, r.cpu.Seconds()*100/(float64(devices*fileSize(t, small))/1e6), mib(r.peakRSS))
		multi = append(multi, r)
	}
	reportReal(t, results, multi, mb, devices, fileSize(t, small))
}

type realResult struct {
	name     string
	upMBps   float64
	downMBps float64
	cpu      time.Duration // server CPU (user+sys) during the upload(s)
	peakRSS  int64         // KiB
}

func median(v []float64) float64 {
	slices.Sort(v)
	return v[len(v)/2]
}

func reportReal(t *testing.T, results, multi []realResult, mb, devices, smallBytes int) {
	med := func(rs []realResult, name string, f func(r realResult) float64) float64 {
		var v []float64
		for _, r := range rs {
			if r.name == name {
				v = append(v, f(r))
			}
		}
		return median(v)
	}
	up := func(r realResult) float64 { return r.upMBps }
	down := func(r realResult) float64 { return r.downMBps }
	rss := func(r realResult) float64 { return mib(r.peakRSS) }
	cpu := func(r realResult) float64 { return r.cpu.Seconds() * 100 / float64(mb) }
	var b strings.Builder
	runs := 0
	for _, r := range results {
		if r.name == "baseline" {
			runs++
		}
	}
	fmt.Fprintf(&b, "\nreal path, medians over %d alternating runs, %d MB G-code file (multipart upload, then download):\n", runs, mb)
	fmt.Fprintf(&b, "%-10s %10s %12s %14s %12s\n", "server", "upload", "download", "cpu s/100MB", "peak RSS")
	for _, name := range []string{"baseline", "printgate", "before"} {
		if name == "before" && len(results) == 2*runs {
			continue
		}
		fmt.Fprintf(&b, "%-10s %7.1f MB/s %7.1f MB/s %14.2f %8.1f MiB\n", name,
			med(results, name, up), med(results, name, down), med(results, name, cpu), med(results, name, rss))
	}
	one := med(results, "printgate", up)
	// perRun is the median over runs of one run's ratio: robust to load that drifts between runs.
	perRun := func(num, den []realResult, f func(r realResult) float64) float64 {
		var v []float64
		for i := range min(len(num), len(den)) {
			v = append(v, f(num[i])/f(den[i]))
		}
		return median(v)
	}
	var base, ours, before []realResult
	for _, r := range results {
		switch r.name {
		case "baseline":
			base = append(base, r)
		case "printgate":
			ours = append(ours, r)
		case "before":
			before = append(before, r)
		}
	}
	fmt.Fprintf(&b, "real-path upload   printgate/baseline %.2f× of medians, %.2f× median of per-run ratios  (goal ≥ 1.0×, stretch 1.3×)\n",
		one/med(results, "baseline", up), perRun(ours, base, up))
	fmt.Fprintf(&b, "download           printgate/baseline %.2f× of medians, %.2f× median of per-run ratios  (goal ≥ 1.0×)\n",
		med(results, "printgate", down)/med(results, "baseline", down), perRun(ours, base, down))
	fmt.Fprintf(&b, "gateway CPU        %.2f s per 100 MB uploaded (goal ≤ 1 s)\n", med(results, "printgate", cpu))
	if len(before) > 0 {
		fmt.Fprintf(&b, "before/baseline    upload %.2f× of medians, %.2f× per run\n",
			med(results, "before", up)/med(results, "baseline", up), perRun(before, base, up))
		fmt.Fprintf(&b, "printgate/before   upload %.2f× per run, CPU per 100 MB %.2f× per run, download %.2f× per run\n",
			perRun(ours, before, up), perRun(ours, before, cpu), perRun(ours, before, down))
	}
	fmt.Fprintf(&b, "gateway peak RSS   %.1f MiB (goal ≤ 48 MiB)\n", med(results, "printgate", rss))
	if len(multi) == 0 {
		t.Log(b.String())
		return
	}
	agg := med(multi, "eight", up)
	cpu8 := med(multi, "eight", func(r realResult) float64 {
		return r.cpu.Seconds() * 100 / (float64(devices*smallBytes) / 1e6)
	})
	fmt.Fprintf(&b, "%d devices at once aggregate %.1f MB/s = %.2f× of one (median of per-run ratios %.2f×; goal ≥ 1.0×), cpu %.2f s/100MB, peak RSS %.1f MiB (goal ≤ 64 MiB)\n",
		devices, agg, agg/one, perRun(multi, ours, up), cpu8, med(multi, "eight", rss))
	t.Log(b.String())
}

func fileSize(t *testing.T, p string) int {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return int(fi.Size())
}

// writeGcode writes about size bytes of slicer-like G-code (moves with varying coordinates,
// type comments, fan and temperature lines) ending with PrusaSlicer's time estimate.
func writeGcode(t *testing.T, path string, size int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	fmt.Fprint(w, "; generated by PrusaSlicer 2.7.1\nM140 S60\nM104 S215\nG28\nG90\nM83\nM190 S60\nM109 S215\n")
	written, x, y, e := 100, 100.0, 100.0, 0.0
	var line []byte
	for i := 0; written < size-200; i++ {
		line = line[:0]
		switch {
		case i%500 == 0:
			line = fmt.Appendf(line, ";LAYER_CHANGE\n;Z:%.2f\nG1 Z%.3f F720\n;TYPE:Perimeter\nM106 S%d\n", float64(i/500)*0.2, float64(i/500)*0.2+0.2, i%256)
		case i%7 == 0:
			line = fmt.Appendf(line, "G1 F1800 X%.3f Y%.3f\n", x, y)
		default:
			line = fmt.Appendf(line, "G1 X%.3f Y%.3f E%.5f\n", x, y, e)
		}
		x = 20 + float64((i*37)%16000)/100
		y = 20 + float64((i*53)%16000)/100
		e = float64(i%997) / 1000
		w.Write(line)
		written += len(line)
	}
	fmt.Fprint(w, "M104 S0\nM140 S0\nM84 X Y E\n; estimated printing time (normal mode) = 3h 2m 1s\n")
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// device is one more WireGuard client in a namespace of its own, joined to the server
// namespace by its own veth pair (10.251.<i>.0/24).
type device struct {
	ns, iface, ip, srvAddr string
	key                    wgtypes.Key
}

func (n *benchNet) addDevices(t *testing.T, count int) []device {
	t.Helper()
	id := randDigits(t, 1_000_000)
	var devs []device
	for i := range count {
		d := device{
			ns:      fmt.Sprintf("pgbd%dx%d", id, i),
			iface:   fmt.Sprintf("pgbw%dd%d", id%100000, i),
			ip:      fmt.Sprintf("10.250.200.%d", 10+i),
			srvAddr: fmt.Sprintf("10.251.%d.1", i),
		}
		d.key, _ = wgtypes.GeneratePrivateKey()
		vs, vd := fmt.Sprintf("pgbe%d%da", id, i), fmt.Sprintf("pgbe%d%db", id, i)
		run(t, "ip", "netns", "add", d.ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", d.ns).Run() })
		run(t, "ip", "link", "add", vs, "netns", n.srvNS, "type", "veth", "peer", "name", vd, "netns", d.ns)
		for _, c := range [][]string{
			{d.ns, "ip", "link", "set", "lo", "up"},
			{n.srvNS, "ip", "addr", "add", d.srvAddr + "/24", "dev", vs},
			{d.ns, "ip", "addr", "add", fmt.Sprintf("10.251.%d.2/24", i), "dev", vd},
			{n.srvNS, "ip", "link", "set", vs, "up"},
			{d.ns, "ip", "link", "set", vd, "up"},
		} {
			run(t, "ip", append([]string{"netns", "exec"}, c...)...)
		}
		cmd := exec.Command("ip", "netns", "exec", d.ns, "wireguard-go", "-f", d.iface)
		cmd.Env = append(os.Environ(), "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1", "LOG_LEVEL=error")
		if err := cmd.Start(); err != nil {
			t.Fatalf("wireguard-go: %v", err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			os.Remove(filepath.Join("/var/run/wireguard", d.iface+".sock"))
		})
		deadline := time.Now().Add(60 * time.Second) // generous: the machine may be loaded
		for exec.Command("ip", "netns", "exec", d.ns, "wg", "show", d.iface).Run() != nil {
			if time.Now().After(deadline) {
				t.Fatalf("wireguard-go %s did not come up", d.iface)
			}
			time.Sleep(20 * time.Millisecond)
		}
		keyFile := filepath.Join(t.TempDir(), "device.key")
		os.WriteFile(keyFile, []byte(d.key.String()+"\n"), 0o600)
		in := func(args ...string) { run(t, "ip", append([]string{"netns", "exec", d.ns}, args...)...) }
		in("wg", "set", d.iface, "private-key", keyFile)
		in("ip", "addr", "add", d.ip+"/32", "dev", d.iface)
		in("ip", "link", "set", d.iface, "up")
		in("ip", "route", "add", tunGateway+"/32", "dev", d.iface)
		devs = append(devs, d)
	}
	return devs
}

func (n *benchNet) resetDevicePeer(t *testing.T, d device, server wgtypes.Key) {
	t.Helper()
	pub := server.PublicKey().String()
	run(t, "ip", "netns", "exec", d.ns, "wg", "set", d.iface, "peer", pub, "remove")
	run(t, "ip", "netns", "exec", d.ns, "wg", "set", d.iface, "peer", pub, "endpoint",
		fmt.Sprintf("%s:%d", d.srvAddr, serverPort), "allowed-ips", tunGateway+"/32")
}

// server is a started benchmark server.
type server struct {
	name string
	pid  int
	out  *bytes.Buffer
	stop func()
}

// startServer starts a server in the server namespace, waits for its UDP port and one
// request through the tunnel from the main client.
func (n *benchNet) startServer(t *testing.T, name string, argv, env []string, serverKey, clientKey wgtypes.Key) *server {
	t.Helper()
	n.resetPeer(t, serverKey)
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.srvNS}, argv...)...)
	clientPub := clientKey.PublicKey()
	cmd.Env = append(os.Environ(),
		"BASELINE_PRIVATE_KEY="+fmt.Sprintf("%x", serverKey[:]),
		"BASELINE_PEER_KEY="+fmt.Sprintf("%x", clientPub[:]))
	cmd.Env = append(cmd.Env, env...)
	s := &server{name: name, out: &bytes.Buffer{}}
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	s.pid = cmd.Process.Pid
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			cmd.Process.Signal(os.Interrupt)
			waitErr := make(chan error, 1)
			go func() { waitErr <- cmd.Wait() }()
			select {
			case <-waitErr:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-waitErr
			}
		})
	}
	t.Cleanup(s.stop)
	deadline := time.Now().Add(10 * time.Second)
	for !udpBound(s.pid, serverPort) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: UDP port %d not bound after 10 s:\n%s", name, serverPort, s.out.String())
		}
		time.Sleep(time.Millisecond)
	}
	target := "http://" + tunGateway + "/"
	if name != "baseline" {
		target += "api/version"
	}
	if o, err := n.curl(context.Background(), "-o", "/dev/null", "--max-time", "20", target); err != nil {
		t.Fatalf("%s: first request through the tunnel: %v\n%s\nserver:\n%s", name, err, o, s.out.String())
	}
	time.Sleep(300 * time.Millisecond)
	return s
}

func (n *benchNet) curlIn(ctx context.Context, ns string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, "curl", "-sS", "--fail"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// upload posts file as a slicer does and returns MB/s of the request body.
func (n *benchNet) upload(t *testing.T, ns, path, file, name string, srv *server) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if ns == n.cliNS { // the devices of the many-at-once part have interfaces of their own
		rx0 := n.rxPackets(ns)
		defer func() { t.Logf("%s: %d packets from the gateway during the upload", srv.name, n.rxPackets(ns)-rx0) }()
	}
	o, err := n.curlIn(ctx, ns, "-o", "/dev/null", "-H", "Expect:", "-H", "X-Printgate: 1",
		"-F", "file=@"+file+";filename="+name, "-w", "%{time_total} %{size_upload}", "http://"+tunGateway+path)
	if err != nil {
		t.Errorf("%s: upload from %s: %v\n%s\nserver:\n%s", srv.name, ns, err, o, srv.out.String())
		return 0
	}
	var secs, size float64
	if _, err := fmt.Sscanf(o, "%g %g", &secs, &size); err != nil || int(size) < fileSize(t, file) {
		t.Errorf("%s: upload: curl reported %q for a %d-byte file", srv.name, o, fileSize(t, file))
		return 0
	}
	return size / secs / 1e6
}

// download fetches path and returns MB/s.
func (n *benchNet) download(t *testing.T, path string, size int, srv *server) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	o, err := n.curl(ctx, "-o", "/dev/null", "-w", "%{time_total} %{size_download}", "http://"+tunGateway+path)
	if err != nil {
		t.Fatalf("%s: download: %v\n%s\nserver:\n%s", srv.name, err, o, srv.out.String())
	}
	var secs, got float64
	if _, err := fmt.Sscanf(o, "%g %g", &secs, &got); err != nil || int(got) < size {
		t.Fatalf("%s: download: curl reported %q, want at least %d bytes", srv.name, o, size)
	}
	return got / secs / 1e6
}

func (n *benchNet) rxPackets(ns string) int {
	out, _ := exec.Command("ip", "netns", "exec", ns, "cat", "/sys/class/net/"+n.wgIface+"/statistics/rx_packets").Output()
	v, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return v
}
