package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// lockedBuffer is a bytes.Buffer safe for a running command and a polling test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestConnectHelpAndUsage(t *testing.T) {
	out, _, code := runCLI(t, "connect", "--help")
	if code != 0 {
		t.Fatalf("connect --help exit %d", code)
	}
	for _, f := range []string{"--conf", "--qr-png", "--forward", "--socks", "--status-interval"} {
		if !strings.Contains(out, "\n  "+f) {
			t.Errorf("connect --help does not document %s", f)
		}
	}
	for _, args := range [][]string{
		{"connect"},
		{"connect", "--conf", "a", "--qr-png", "b"},
		{"connect", "--conf", "a", "--forward", "8080"},
		{"connect", "--conf", "a", "--forward", "8080=mk 4"},
		{"connect", "--conf", "a", "--socks", "example.com:1080"},
		{"connect", "--conf", "a", "extra"},
	} {
		if _, errOut, code := runCLI(t, args...); code != exitUsage {
			t.Errorf("printgate %q exit %d, want %d (stderr %q)", args, code, exitUsage, errOut)
		}
	}
}

// startConnectCLI runs `printgate connect` in the background until the returned stop is called;
// stop returns the exit code and stderr.
func startConnectCLI(t *testing.T, lockDir string, args ...string) (stderr *lockedBuffer, stop func() int) {
	t.Helper()
	errb := &lockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	e := &env{stdin: strings.NewReader(""), stdout: errb, stderr: errb,
		getenv:  func(k string) string { return map[string]string{"XDG_RUNTIME_DIR": lockDir}[k] },
		signals: func(c context.Context) (context.Context, context.CancelFunc) { return context.WithCancel(ctx) },
	}
	code := make(chan int, 1)
	go func() { code <- run(context.Background(), e, append([]string{"connect"}, args...)) }()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(errb.String(), "ready (Ctrl-C ends)") {
		select {
		case c := <-code:
			t.Fatalf("connect exited %d before ready:\n%s", c, errb)
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("connect not ready:\n%s", errb)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return errb, func() int { cancel(); return <-code }
}

func TestConnectWarnings(t *testing.T) {
	priv, _ := wgtypes.GeneratePrivateKey()
	gw, _ := wgtypes.GeneratePrivateKey()
	conf := filepath.Join(t.TempDir(), "laptop.conf")
	// The endpoint is a loopback port nobody answers: the client comes up without a handshake.
	text := "[Interface]\nPrivateKey = " + priv.String() + "\nAddress = 10.77.0.100/32\n\n[Peer]\nPublicKey = " +
		gw.PublicKey().String() + "\nAllowedIPs = 10.77.0.0/22\nEndpoint = 127.0.0.1:9\n"
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	lockDir := t.TempDir()
	first, stop1 := startConnectCLI(t, lockDir, "--conf", conf, "--forward", "0.0.0.0:0=10.77.0.11", "--status-interval", "0")
	if !strings.Contains(first.String(), "not loopback") {
		t.Errorf("a forward on 0.0.0.0 was not warned about:\n%s", first)
	}
	if strings.Contains(first.String(), "steal") {
		t.Errorf("the first connect warned about a second one:\n%s", first)
	}
	second, stop2 := startConnectCLI(t, lockDir, "--conf", conf, "--status-interval", "0")
	if !strings.Contains(second.String(), "steal each other's sessions") {
		t.Errorf("a second connect with the same config was not warned about:\n%s", second)
	}
	if strings.Contains(second.String(), "not loopback") {
		t.Errorf("loopback-only connect warned about exposure:\n%s", second)
	}
	if c := stop2(); c != 0 {
		t.Errorf("second connect exit %d after Ctrl-C:\n%s", c, second)
	}
	if c := stop1(); c != 0 {
		t.Errorf("connect exit %d after Ctrl-C:\n%s", c, first)
	}
	if !strings.Contains(first.String(), "stopping") {
		t.Errorf("no stopping line:\n%s", first)
	}
}
