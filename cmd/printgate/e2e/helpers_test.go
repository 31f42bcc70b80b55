// Package e2e holds printgate's end-to-end tests: the built binary, network namespaces the
// tests create, and Debian's WireGuard tools as the real client.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/control"
)

// binPath is the printgate binary built once for the package by TestMain.
var binPath string

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "pge-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		binPath = filepath.Join(dir, "printgate")
		cmd := exec.Command("go", "build", "-o", binPath, "github.com/printgate/printgate/cmd/printgate")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build printgate: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// requireRoot skips unless the test runs as root with the named tools on PATH.
func requireRoot(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: it creates network namespaces, veth pairs and WireGuard interfaces (CI runs as root)")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s on PATH (Debian: apt-get install wireguard-tools wireguard-go zbar-tools curl iproute2): %v", tool, err)
		}
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil && contains(tools, "wireguard-go") {
		t.Skipf("needs /dev/net/tun for wireguard-go: %v", err)
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// sh runs a command and fails the test with its output on error.
func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// pg runs the printgate binary and returns stdout, stderr and the exit code.
func pg(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(binPath, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("printgate %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return out.String(), errb.String(), code
}

// pgOK runs printgate and fails the test unless it exits 0.
func pgOK(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := pg(t, args...)
	if code != 0 {
		t.Fatalf("printgate %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, out, errOut)
	}
	return out
}

// netns is a network namespace made by the test.
type netns struct{ name string }

// lab is two namespaces joined by a veth pair: the gateway's and the client's.
type lab struct {
	gw, cl       netns
	gwIP, clIP   string // on the veth, 10.251.x.y
	prefix       string // "pge" + random: names of everything this lab makes
	veth0, veth1 string
}

func newLab(t *testing.T) *lab {
	t.Helper()
	id := randHex(3)
	x := 1 + int(id[0])%250
	l := &lab{
		prefix: "pge" + id,
		gw:     netns{"pge" + id + "g"},
		cl:     netns{"pge" + id + "c"},
		gwIP:   fmt.Sprintf("10.251.%d.1", x),
		clIP:   fmt.Sprintf("10.251.%d.2", x),
		veth0:  "pge" + id + "a",
		veth1:  "pge" + id + "b",
	}
	sh(t, "ip", "netns", "add", l.gw.name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.gw.name).Run() })
	sh(t, "ip", "netns", "add", l.cl.name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.cl.name).Run() })
	sh(t, "ip", "link", "add", l.veth0, "netns", l.gw.name, "type", "veth", "peer", "name", l.veth1, "netns", l.cl.name)
	for _, s := range []struct {
		ns       netns
		dev, adr string
	}{{l.gw, l.veth0, l.gwIP}, {l.cl, l.veth1, l.clIP}} {
		sh(t, "ip", "-n", s.ns.name, "link", "set", "lo", "up")
		sh(t, "ip", "-n", s.ns.name, "addr", "add", s.adr+"/24", "dev", s.dev)
		sh(t, "ip", "-n", s.ns.name, "link", "set", s.dev, "up")
	}
	return l
}

// exec runs a command inside the namespace.
func (n netns) cmd(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.name, name}, args...)...)
}

func (n netns) sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := n.cmd(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("[%s] %s %s: %v\n%s", n.name, name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// do runs f on an OS thread that has joined the namespace; sockets f creates live there.
func (n netns) do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is never unlocked: it dies with the goroutine instead of returning to the
		// scheduler in a foreign namespace.
		fd, err := unix.Open("/var/run/netns/"+n.name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", n.name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// daemon is a running `printgate run` inside the gateway namespace.
type daemon struct {
	cmd    *exec.Cmd
	state  string
	iface  string
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startDaemon runs printgate in ns and waits until its control socket answers.
func startDaemon(t *testing.T, ns netns, state, iface string, extra ...string) *daemon {
	t.Helper()
	args := append([]string{"run", "--state", state, "--interface", iface, "--stats-interval", "200ms"}, extra...)
	d := &daemon{state: state, iface: iface, stderr: &syncBuffer{}, done: make(chan struct{})}
	d.cmd = ns.cmd(binPath, args...)
	d.cmd.Stderr = d.stderr
	d.cmd.Stdout = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	keepLog(t, "daemon.log", d.stderr)
	t.Cleanup(func() { d.stop(t) })
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := control.Unix(state).Call(ctx, control.Request{Op: control.OpStatus})
		cancel()
		if err == nil && resp.Status.Running {
			return d
		}
		select {
		case <-d.done:
			t.Fatalf("printgate run exited: %v (its log follows the failure)", d.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("printgate run not ready after 20 s: %v (its log follows the failure)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits; it returns the exit error (nil on a clean exit).
func (d *daemon) stop(t *testing.T) error {
	t.Helper()
	select {
	case <-d.done:
		return d.err
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
		t.Errorf("printgate run ignored SIGTERM for 30 s\n%s", d.stderr)
	}
	return d.err
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

// rssKiB reads VmRSS of pid.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	t.Fatalf("no VmRSS for pid %d", pid)
	return 0
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func peersJSON(t *testing.T, state string) []enroll.PeerView {
	t.Helper()
	var peers []enroll.PeerView
	out := pgOK(t, "peers", "--state", state, "--json")
	if err := json.Unmarshal([]byte(out), &peers); err != nil {
		t.Fatalf("peers --json: %v\n%s", err, out)
	}
	return peers
}

func peerByName(peers []enroll.PeerView, name string) (enroll.PeerView, bool) {
	for _, p := range peers {
		if p.Name == name {
			return p, true
		}
	}
	return enroll.PeerView{}, false
}

// loopbackPort returns a UDP port on 127.0.0.1 that was free a moment ago.
func loopbackPort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return strconv.Itoa(c.LocalAddr().(*net.UDPAddr).Port)
}

// initLoopback runs `printgate init` for a gateway on a free loopback UDP port, with its state
// in dir/state, and returns the state directory.
func initLoopback(t *testing.T, dir string) string {
	t.Helper()
	port := loopbackPort(t)
	state := filepath.Join(dir, "state")
	pgOK(t, "init", "--state", state, "--endpoint", "127.0.0.1:"+port, "--listen-port", port)
	return state
}
