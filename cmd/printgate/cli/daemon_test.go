package cli

import (
	"bytes"
	"context"
	"path/filepath"
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
