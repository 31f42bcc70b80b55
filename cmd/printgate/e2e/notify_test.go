package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSystemdNotify: under Type=notify, `printgate run` says READY=1 once the tunnel is up,
// feeds the watchdog, says STOPPING=1 on SIGTERM, exits 0 and removes its control socket.
// Loopback only, no root needed (no UAPI socket).
func TestSystemdNotify(t *testing.T) {
	dir := t.TempDir()
	sockPath := filepath.Join(dir, "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	state := initLoopback(t, dir)

	cmd := exec.Command(binPath, "run", "--state", state, "--interface", "none")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sockPath, "WATCHDOG_USEC=200000")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	started := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	keepLog(t, "daemon.log", &stderr)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	read := func(want string) {
		t.Helper()
		buf := make([]byte, 1024)
		ln.SetReadDeadline(time.Now().Add(20 * time.Second))
		for {
			n, err := ln.Read(buf)
			if err != nil {
				t.Fatalf("waiting for %s: %v\n%s", want, err, stderr.String())
			}
			if strings.Contains(string(buf[:n]), want) {
				return
			}
		}
	}
	read("READY=1")
	t.Logf("process start to READY=1 (tunnel up, control socket listening): %v", time.Since(started))
	if _, err := os.Stat(filepath.Join(state, "control.sock")); err != nil {
		t.Errorf("READY=1 before the control socket exists: %v", err)
	}
	read("WATCHDOG=1")
	cmd.Process.Signal(syscall.SIGTERM)
	read("STOPPING=1")
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("no exit after SIGTERM")
	}
	if _, err := os.Stat(filepath.Join(state, "control.sock")); !os.IsNotExist(err) {
		t.Errorf("control socket left after exit: %v", err)
	}
}
