package e2e

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"go.bug.st/serial"

	"github.com/printgate/printgate/enroll/control"
	"github.com/printgate/printgate/printerd/marlinsim"
)

// TestKillMidHeatNoReset is issue 15 item 9: a board that does not reset when its port opens
// (native USB; here the simulator with NoReset on a pty) heats, hotend 200 °C and bed 60 °C;
// `printgate run` is killed with SIGKILL (no heaters-off path runs); a new `printgate run`
// opens the port. The first line the firmware runs after the restart turns the heaters off.
func TestKillMidHeatNoReset(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "ttyNative")
	p, err := marlinsim.OpenPTY(context.Background(), marlinsim.Config{
		NoReset: true, Link: link, Baud: 250000, OKLatency: 2 * time.Millisecond, TimeScale: 1,
	})
	if err != nil {
		t.Skipf("no pty here: %v", err)
	}
	t.Cleanup(func() { p.Close() })

	state := initLoopback(t, dir)
	start := func(name string) (*exec.Cmd, chan error) {
		run := exec.Command(binPath, "run", "--state", state, "--interface", "none", "--verbose", "--printer", "mk="+link)
		var runErr syncBuffer
		run.Stderr = &runErr
		if err := run.Start(); err != nil {
			t.Fatal(err)
		}
		keepLog(t, name+".log", &runErr)
		done := make(chan error, 1)
		go func() { done <- run.Wait() }()
		t.Cleanup(func() {
			run.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				run.Process.Kill()
				<-done
			}
		})
		return run, done
	}
	operational := func() {
		t.Helper()
		waitFor(t, "printer operational", 30*time.Second, func() bool {
			var st control.Status
			out, _, code := pg(t, "status", "--state", state, "--json")
			return code == 0 && json.Unmarshal([]byte(out), &st) == nil && len(st.Printers) == 1 && st.Printers[0].State == "operational"
		})
	}

	first, firstDone := start("daemon-1")
	operational()
	// Heat, as the gateway would on an operator's request: another host on the same port
	// (the simulator does not reset, so both share the firmware).
	hp, err := serial.Open(link, &serial.Mode{BaudRate: 250000})
	if err != nil {
		t.Fatal(err)
	}
	hp.Write([]byte("M104 S200\nM140 S60\n"))
	waitFor(t, "heating", 10*time.Second, func() bool {
		_, ht, _, bt := p.Sim.Temps()
		return ht == 200 && bt == 60
	})
	hp.Close()

	first.Process.Kill() // kill -9: no heaters-off path
	<-firstDone
	firstDone <- nil // for the cleanup
	mark := len(p.Sim.Record())
	if _, ht, _, bt := p.Sim.Temps(); ht != 200 || bt != 60 {
		t.Fatalf("after kill -9 the targets are %v/%v, want 200/60 still (a board that does not reset)", ht, bt)
	}

	restarted := time.Now()
	start("daemon-2")
	var off time.Duration
	waitFor(t, "heaters off after the restart", 30*time.Second, func() bool {
		_, ht, _, bt := p.Sim.Temps()
		off = time.Since(restarted)
		return ht == 0 && bt == 0
	})
	rec := p.Sim.Record()[mark:]
	if len(rec) < 2 || rec[0].Line != "M104 T0 S0" || rec[1].Line != "M140 S0" {
		var got []string
		for _, e := range rec[:min(len(rec), 6)] {
			got = append(got, e.Line)
		}
		t.Fatalf("after the restart the firmware ran %q first, want M104 T0 S0 then M140 S0", got)
	}
	operational()
	t.Logf("heaters off %v after the restarted daemon was started (process start included)", off.Round(time.Millisecond))
}
