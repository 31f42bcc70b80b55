package throughput

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// TestConnectThroughput is issue 13's benchmark: the same 200 MB upload (curl -T) to ./sink
// (printgate's tunnel + netstack, in the server namespace) from the client namespace, two ways,
// alternately:
//
//	wireguard-go  Debian's wireguard-go with the kernel's TCP (what wg-quick sets up), curl to
//	              the tunnel address
//	connect       `printgate connect --conf … --forward PORT=ADDR` (userspace WireGuard and TCP,
//	              no interface), curl to its loopback HTTP forward
//
// Both use the same key, one at a time (two clients with one key steal each other's sessions).
// Goal: connect ≥ 0.8× the wireguard-go client's throughput.
func TestConnectThroughput(t *testing.T) {
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
	sinkBin, pgBin := filepath.Join(dir, "sink"), filepath.Join(dir, "printgate")
	goBuild(t, sinkBin, "./sink")
	goBuild(t, pgBin, "../../cmd/printgate")
	payload := filepath.Join(dir, "payload")
	if err := os.WriteFile(payload, bytes.Repeat([]byte{0x5a}, mb*1_000_000), 0o600); err != nil {
		t.Fatal(err)
	}

	n := newNet(t)
	serverKey, _ := wgtypes.GeneratePrivateKey()
	clientKey, _ := wgtypes.GeneratePrivateKey()
	n.startClient(t, clientKey)
	sink := exec.Command("ip", "netns", "exec", n.srvNS, sinkBin, "-private-key", serverKey.String(),
		"-peer", clientKey.PublicKey().String(), "-addr", tunGateway, "-peer-ip", tunClient, "-port", strconv.Itoa(serverPort))
	var sinkOut bytes.Buffer
	sink.Stdout, sink.Stderr = &sinkOut, &sinkOut
	if err := sink.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Process.Signal(os.Interrupt); sink.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for !udpBound(sink.Process.Pid, serverPort) {
		if time.Now().After(deadline) {
			t.Fatalf("sink not ready:\n%s", sinkOut.String())
		}
		time.Sleep(5 * time.Millisecond)
	}

	conf := filepath.Join(dir, "laptop.conf")
	text := fmt.Sprintf("[Interface]\nPrivateKey = %s\nAddress = %s/32\n\n[Peer]\nPublicKey = %s\nAllowedIPs = %s/24\nEndpoint = %s:%d\n",
		clientKey, tunClient, serverKey.PublicKey(), tunGateway, n.srvAddr, serverPort)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	upload := func(name, url string) float64 {
		t.Helper()
		if o, err := n.curl(ctx, "-o", "/dev/null", "--max-time", "20", url); err != nil {
			t.Fatalf("%s: first request: %v\n%s\nsink:\n%s", name, err, o, sinkOut.String())
		}
		o, err := n.curl(ctx, "-o", "/dev/null", "-H", "Expect:", "-w", "%{time_total} %{size_upload}", "-T", payload, url+"upload")
		if err != nil {
			t.Fatalf("%s: upload: %v\n%s", name, err, o)
		}
		var secs, size float64
		if _, err := fmt.Sscanf(o, "%g %g", &secs, &size); err != nil || int(size) != mb*1_000_000 {
			t.Fatalf("%s: upload: curl reported %q, want %d bytes", name, o, mb*1_000_000)
		}
		return size / secs / 1e6
	}
	var wg, con []float64
	for i := range runs {
		n.resetPeer(t, serverKey)
		wg = append(wg, upload("wireguard-go", "http://"+tunGateway+"/"))
		t.Logf("run %d wireguard-go %6.1f MB/s", i+1, wg[len(wg)-1])

		c := exec.Command("ip", "netns", "exec", n.cliNS, pgBin, "connect", "--conf", conf,
			"--forward", "18080="+tunGateway, "--status-interval", "0")
		c.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+dir)
		logPath := filepath.Join(dir, fmt.Sprintf("connect-%d.log", i))
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		c.Stdout, c.Stderr = logf, logf
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		logf.Close()
		ready := time.Now().Add(30 * time.Second)
		for {
			b, _ := os.ReadFile(logPath)
			if bytes.Contains(b, []byte("ready (Ctrl-C ends)")) {
				break
			}
			if time.Now().After(ready) {
				c.Process.Kill()
				c.Wait()
				t.Fatalf("connect not ready after 30 s:\n%s", b)
			}
			time.Sleep(10 * time.Millisecond)
		}
		con = append(con, upload("connect", "http://127.0.0.1:18080/"))
		t.Logf("run %d connect      %6.1f MB/s", i+1, con[len(con)-1])
		c.Process.Signal(os.Interrupt)
		if err := c.Wait(); err != nil {
			b, _ := os.ReadFile(logPath)
			t.Errorf("connect after SIGINT: %v\n%s", err, b)
		}
	}
	slices.Sort(wg)
	slices.Sort(con)
	w, k := wg[len(wg)/2], con[len(con)/2]
	t.Logf("\nmedians over %d alternating runs, %d MB upload to printgate's tunnel+netstack:\n"+
		"wireguard-go client (kernel TCP)  %6.1f MB/s\nprintgate connect forward        %6.1f MB/s\n"+
		"ratio connect/wireguard-go: %.2f× (goal ≥ 0.8×)", len(wg), mb, w, k, k/w)
}
