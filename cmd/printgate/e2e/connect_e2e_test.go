package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/printgate/printgate/cmd/printgate/gateway"
)

// This file is issue 13's acceptance: `printgate connect` as an unprivileged user (nobody, by
// setpriv) in a client namespace that has no tunnel interface at all, joined with the QR image
// enroll wrote. Through its loopback forward: the slicer upload with select and print, the
// print to completion on the simulator, and the push websocket; through its SOCKS5 proxy:
// curl by printer name, and the refusal of a destination outside the tunnel.
//
// Run: go test -count=1 -v -run 'TestConnectEndToEnd' ./cmd/printgate/e2e/

const connPrinter = "mk4"

// connProc is a running `printgate connect`.
type connProc struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

// startConnect runs printgate connect as nobody inside ns and waits for its ready line.
func startConnect(t *testing.T, ns netns, bin, runtimeDir string, args ...string) *connProc {
	t.Helper()
	argv := append([]string{"--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", bin, "connect"}, args...)
	p := &connProc{stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = ns.cmd("setpriv", argv...)
	p.cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent", "XDG_RUNTIME_DIR=" + runtimeDir}
	p.cmd.Stdout, p.cmd.Stderr = p.stderr, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	waitFor(t, "printgate connect ready", 30*time.Second, func() bool {
		select {
		case <-p.done:
			t.Fatalf("printgate connect exited: %v\n%s", p.err, p.stderr)
		default:
		}
		return strings.Contains(p.stderr.String(), "ready (Ctrl-C ends)")
	})
	return p
}

// interrupt sends SIGINT (Ctrl-C) and waits for a clean exit.
func (p *connProc) interrupt(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("printgate connect ignored SIGINT for 20 s\n%s", p.stderr)
	}
	if p.err != nil {
		t.Errorf("printgate connect after SIGINT: %v\n%s", p.err, p.stderr)
	}
}

// publicDir makes a directory nobody can read (and, when owned, write), removed at cleanup.
func publicDir(t *testing.T, owned bool) string {
	t.Helper()
	d, err := os.MkdirTemp("", "pge-connect-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if owned {
		out, err := exec.Command("id", "-u", "nobody").Output()
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(strings.TrimSpace(string(out)))
		if err := os.Chown(d, uid, -1); err != nil {
			t.Fatal(err)
		}
		os.Chmod(d, 0o700)
	}
	return d
}

func TestConnectEndToEnd(t *testing.T) {
	requireRoot(t, "ip", "curl", "setpriv")
	if !gateway.SimAvailable {
		t.Skip("needs the in-process simulated printer (gateway.SimAvailable)")
	}
	l := newLab(t)
	state := filepath.Join(t.TempDir(), "state")
	pgOK(t, "init", "--state", state, "--endpoint", fmt.Sprintf("%s:%d", l.gwIP, listenPort), "--listen-port", strconv.Itoa(listenPort))
	d := startDaemon(t, l.gw, state, l.prefix+"w", "--printer", connPrinter+"=sim")
	defer func() {
		if t.Failed() {
			t.Logf("gateway log:\n%s", d.stderr)
		}
	}()

	// The laptop gets a QR image and an API key, nothing else; nobody may read both.
	pub := publicDir(t, false)
	png := filepath.Join(pub, "laptop.png")
	out := pgOK(t, "enroll", "--state", state, "laptop", "--role", "operator", "--png", png, "--qr", "none")
	m := uiAPIKeyRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("enroll printed no API key:\n%s", out)
	}
	key := m[1]
	os.Chmod(png, 0o644)
	bin := filepath.Join(pub, "printgate")
	if b, err := os.ReadFile(binPath); err != nil || os.WriteFile(bin, b, 0o755) != nil {
		t.Fatalf("copy the binary for nobody: %v", err)
	}
	runtimeDir := publicDir(t, true)

	// No tunnel interface in the client namespace, before or after.
	links := func() string { return l.cl.sh(t, "ip", "-o", "link") }
	if n := strings.Count(links(), "\n"); n != 2 {
		t.Fatalf("client namespace has %d links, want lo and the veth only:\n%s", n, links())
	}

	p := startConnect(t, l.cl, bin, runtimeDir, "--qr-png", png,
		"--forward", "18080="+connPrinter, "--forward", "18888="+connPrinter+":8888", "--socks", "11080", "--status-interval", "1s")
	defer func() {
		if t.Failed() {
			t.Logf("connect log:\n%s", p.stderr)
		}
	}()
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid)); err != nil || !bytes.Contains(st, []byte("\nUid:\t65534\t65534")) {
		t.Errorf("printgate connect does not run as nobody: %v\n%s", err, st)
	}
	if n := strings.Count(links(), "\n"); n != 2 {
		t.Errorf("connect made a link in the client namespace:\n%s", links())
	}

	base := "http://127.0.0.1:18080"
	op := &uiPeer{name: "laptop", role: "operator", ns: l.cl, key: key}
	waitFor(t, "the printer through the forward", 60*time.Second, func() bool {
		r, err := uiCurl(l.cl, "-H", "X-Api-Key: "+key, base+"/api/job")
		return err == nil && r.code == 200 && strings.Contains(string(r.body), `"Operational"`)
	})

	t.Run("SlicerPrintAndPush", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		ws := uiWS(t, ctx, op, "ws://127.0.0.1:18080/sockjs/websocket")
		printing := make(chan struct{})
		go func() {
			for {
				_, b, err := ws.Read(ctx)
				if err != nil {
					return
				}
				if bytes.Contains(b, []byte(`"Printing"`)) {
					close(printing)
					io.Copy(io.Discard, bytes.NewReader(b))
					for {
						if _, _, err := ws.Read(ctx); err != nil {
							return
						}
					}
				}
			}
		}()

		// PrusaSlicer's "Upload and print": multipart file, select and print.
		job := uiGcode(t, t.TempDir(), "laptop-print.gcode", 300, 0)
		r := uiMustCurl(t, l.cl, "-H", "X-Api-Key: "+key, "-F", "file=@"+job, "-F", "path=", "-F", "select=true", "-F", "print=true", base+"/api/files/local")
		if r.code != 201 {
			t.Fatalf("POST /api/files/local through the forward = %v, want 201", r)
		}
		var up struct {
			Done bool `json:"done"`
		}
		if json.Unmarshal(r.body, &up); !up.Done {
			t.Errorf("upload answer %s: want done", r.body)
		}
		select {
		case <-printing:
		case <-time.After(60 * time.Second):
			t.Errorf("no push message with state Printing through the forward")
		}
		uiWaitJobDone(t, op, base, key, "laptop-print.gcode")
		ws.Close(websocket.StatusNormalClosure, "")
	})

	t.Run("LargeUploadWithExpect", func(t *testing.T) {
		// libcurl, which PrusaSlicer uploads with, sends Expect: 100-continue for a large body.
		big := uiGcode(t, t.TempDir(), "laptop-big.gcode", 50, 4<<20)
		out, err := l.cl.cmd("curl", "-sS", "--max-time", "60", "-o", "/dev/null", "-w", "%{http_code}",
			"-H", "X-Api-Key: "+key, "-F", "file=@"+big, "-F", "path=", base+"/api/files/local").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "201" {
			t.Errorf("4 MB upload with Expect: 100-continue through the forward = %s %v, want 201", out, err)
		}
	})

	t.Run("SOCKS", func(t *testing.T) {
		r := uiMustCurl(t, l.cl, "--socks5-hostname", "127.0.0.1:11080", "-H", "X-Api-Key: "+key, "http://"+connPrinter+"/api/version")
		if r.code != 200 || !strings.Contains(string(r.body), `"api"`) {
			t.Errorf("curl --socks5-hostname http://%s/api/version = %v, want 200", connPrinter, r)
		}
		// The gateway's host address is not in the tunnel: refused, never dialed.
		for _, url := range []string{"http://" + l.gwIP + ":" + strconv.Itoa(listenPort) + "/", "http://example.com/"} {
			if r, err := uiCurl(l.cl, "--socks5-hostname", "127.0.0.1:11080", url); err == nil {
				t.Errorf("curl through SOCKS to %s = %v, want the proxy to refuse", url, r)
			} else if !strings.Contains(err.Error(), "(97)") && !strings.Contains(err.Error(), "SOCKS") {
				t.Errorf("curl through SOCKS to %s: %v, want a SOCKS refusal", url, err)
			}
		}
	})

	t.Run("SecondInstanceWarned", func(t *testing.T) {
		second := startConnect(t, l.cl, bin, runtimeDir, "--qr-png", png, "--status-interval", "0")
		if !strings.Contains(second.stderr.String(), "steal each other's sessions") {
			t.Errorf("a second connect with the same config did not warn:\n%s", second.stderr)
		}
		second.interrupt(t)
	})

	t.Run("StatusAndCtrlC", func(t *testing.T) {
		waitFor(t, "a status line with a handshake", 10*time.Second, func() bool {
			return strings.Contains(p.stderr.String(), "status: handshake")
		})
		p.interrupt(t)
		if !strings.Contains(p.stderr.String(), "stopping") {
			t.Errorf("connect log has no stopping line:\n%s", p.stderr)
		}
		if r, err := uiCurl(l.cl, "--max-time", "3", base+"/api/version"); err == nil {
			t.Errorf("the forward still answers after Ctrl-C: %v", r)
		}
	})
}
