package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/printgate/printgate/enroll"
)

// signalWriter collects output and closes seen once it contains want.
type signalWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, _ := w.buf.Write(p)
	if w.seen != nil && strings.Contains(w.buf.String(), w.want) {
		close(w.seen)
		w.seen = nil
	}
	return n, nil
}

func (w *signalWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// TestWaitsForStartingDaemon: a command that finds the state directory locked by a daemon
// whose control socket is not up yet waits for the socket and shows the daemon's answer,
// instead of failing with "in use".
func TestWaitsForStartingDaemon(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if _, err := enroll.Init(dir, enroll.InitOptions{Endpoint: "127.0.0.1:51820"}); err != nil {
		t.Fatal(err)
	}
	// The "daemon" holds the lock from here on, as `printgate run` does while it starts.
	reg, err := enroll.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()

	var out bytes.Buffer
	errw := &signalWriter{want: "waiting", seen: make(chan struct{})}
	seen := errw.seen
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: errw, getenv: func(string) string { return "" }}
	code := make(chan int, 1)
	go func() { code <- run(context.Background(), e, []string{"peers", "--state", dir, "--json"}) }()

	select {
	case <-seen:
	case c := <-code:
		t.Fatalf("peers exited %d before the daemon's socket was up: %s", c, errw)
	}
	// Now the socket comes up.
	startFakeDaemon(t, dir, enroll.PeerView{Name: "from-daemon", Role: enroll.Admin, State: enroll.Active, Address: "10.0.0.2"})
	if c := <-code; c != 0 {
		t.Fatalf("peers exited %d: %s", c, errw)
	}
	if !strings.Contains(out.String(), `"from-daemon"`) {
		t.Errorf("peers output = %s, want the daemon's answer", out.String())
	}
}

// TestRunLogsUnopenablePrinter: `run --printer x=/dev/serial/by-id/...` with a port that does
// not exist says so in the default log (no --verbose), with the path and the reason, while
// the gateway keeps running.
func TestRunLogsUnopenablePrinter(t *testing.T) {
	const path = "/dev/serial/by-id/nonexistent-printgate-cli-test"
	dir := filepath.Join(t.TempDir(), "state")
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	c.Close()
	if _, errOut, code := runCLI(t, "init", "--state", dir, "--endpoint", fmt.Sprintf("127.0.0.1:%d", port), "--listen-port", strconv.Itoa(port)); code != 0 {
		t.Fatalf("init: %s", errOut)
	}
	errw := &signalWriter{want: path + ": no such file", seen: make(chan struct{})}
	seen := errw.seen
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: errw, getenv: func(string) string { return "" },
		signals: func(context.Context) (context.Context, context.CancelFunc) { return ctx, cancel }}
	code := make(chan int, 1)
	go func() {
		code <- run(context.Background(), e, []string{"run", "--state", dir, "--interface", "none", "--printer", "x=" + path})
	}()
	select {
	case <-seen:
	case c := <-code:
		t.Fatalf("run exited %d before logging the printer's error:\n%s", c, errw)
	}
	cancel()
	if c := <-code; c != 0 {
		t.Errorf("run exited %d:\n%s", c, errw)
	}
	if log := errw.String(); !strings.Contains(log, "marlin x: link "+path) {
		t.Errorf("default log lacks the link error:\n%s", log)
	}
}
