package e2e

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDemo: `printgate demo` brings a gateway up on a temporary state directory, prints the QR,
// the .conf path and the URL, and on Ctrl-C (SIGINT) removes everything it made.
func TestDemo(t *testing.T) {
	port := loopbackPort(t)
	cmd := exec.Command(binPath, "demo", "--endpoint", "127.0.0.1:"+port, "--listen-port", port)
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	keepLog(t, "demo.log", &stderr)
	done := make(chan error, 1)
	t.Cleanup(func() {
		cmd.Process.Kill()
	})
	var out strings.Builder
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		io.Copy(io.Discard, stdout)
		done <- cmd.Wait()
	}()
	deadline := time.After(30 * time.Second)
	for ready := false; !ready; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("demo exited early:\n%s\n%s", out.String(), stderr.String())
			}
			out.WriteString(l + "\n")
			ready = strings.HasPrefix(l, "Ctrl-C stops the demo")
		case <-deadline:
			t.Fatalf("demo not ready:\n%s\n%s", out.String(), stderr.String())
		}
	}
	text := out.String()
	conf := regexp.MustCompile(`wg-quick up (\S+\.conf)`).FindStringSubmatch(text)
	tmp := regexp.MustCompile(`removes (\S+)`).FindStringSubmatch(text)
	if conf == nil || tmp == nil || !strings.Contains(text, "http://10.77.0.1/") || !strings.Contains(text, "▀") && !strings.Contains(text, "▄") && !strings.Contains(text, "█") {
		t.Fatalf("demo output lacks the QR, the .conf path, the URL or its directory:\n%s", text)
	}
	// One TTL story: the demo's QR dies unused after 15 minutes, as the README says, and the
	// time it prints carries its zone.
	if !regexp.MustCompile(`until its first use or \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ \(15m0s\)`).MatchString(text) {
		t.Errorf("demo output does not say the QR dies after 15 minutes, at a time with its zone:\n%s", text)
	}
	if fi, err := os.Stat(conf[1]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("demo .conf %s: %v", conf[1], err)
	}
	cmd.Process.Signal(syscall.SIGINT)
	for l := range lines {
		out.WriteString(l + "\n")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("demo exit after Ctrl-C: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("demo ignored SIGINT")
	}
	if _, err := os.Stat(tmp[1]); !os.IsNotExist(err) {
		t.Errorf("demo left %s behind: %v", tmp[1], err)
	}
}
