package e2e

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/printgate/printgate/enroll/control"
)

// TestSimOnPTY: `printgate sim` prints a pty path; `printgate run --printer mk=PATH` drives it
// through go.bug.st/serial like a USB printer, and the printer becomes operational.
func TestSimOnPTY(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "ttyMarlin")
	sim := exec.Command(binPath, "sim", "--advanced-ok", "--link", link)
	out, err := sim.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var simErr syncBuffer
	sim.Stderr = &simErr
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	keepLog(t, "sim.log", &simErr)
	simDone := make(chan error, 1)
	go func() { simDone <- sim.Wait() }()
	t.Cleanup(func() {
		sim.Process.Signal(syscall.SIGINT)
		select {
		case <-simDone:
		case <-time.After(10 * time.Second):
			sim.Process.Kill()
			<-simDone
		}
	})
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		t.Fatalf("printgate sim printed no path: %s", simErr.String())
	}
	path := strings.TrimSpace(sc.Text())
	if !strings.HasPrefix(path, "/dev/pts/") {
		t.Fatalf("printgate sim printed %q, want a /dev/pts path", path)
	}

	state := initLoopback(t, dir)
	run := exec.Command(binPath, "run", "--state", state, "--interface", "none", "--verbose", "--printer", "mk="+link+",baud=250000")
	var runErr syncBuffer
	run.Stderr = &runErr
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	keepLog(t, "daemon.log", &runErr)
	runDone := make(chan error, 1)
	go func() { runDone <- run.Wait() }()
	t.Cleanup(func() {
		run.Process.Signal(syscall.SIGTERM)
		select {
		case <-runDone:
		case <-time.After(30 * time.Second):
			run.Process.Kill()
			<-runDone
		}
	})
	var st control.Status
	waitFor(t, "printer on the pty operational", 30*time.Second, func() bool {
		out, _, code := pg(t, "status", "--state", state, "--json")
		return code == 0 && json.Unmarshal([]byte(out), &st) == nil && len(st.Printers) == 1 && st.Printers[0].State == "operational"
	})
	if p := st.Printers[0]; p.Name != "mk" || p.Port != link || p.Address == "" {
		t.Errorf("status printer = %+v", p)
	}
	run.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-runDone:
		runDone <- err
		if err != nil {
			t.Errorf("run exit: %v\n%s", err, runErr.String())
		}
	case <-time.After(30 * time.Second):
		t.Errorf("run ignored SIGTERM")
	}
	if !strings.Contains(simErr.String(), "connection up") {
		t.Logf("sim log:\n%s", simErr.String())
	}
}
