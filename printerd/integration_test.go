package printerd

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/printgate/printgate/printerd/marlin"
	"github.com/printgate/printgate/printerd/marlinsim"
	"github.com/printgate/printgate/printerd/policy"
)

// simPrinter runs the real controller against the Marlin simulator over an in-memory pipe,
// with the harness's policy as its filter, as the daemon wires a NAME=sim printer.
func simPrinter(t *testing.T, c *Config) (*marlinsim.Sim, *marlin.Controller) {
	t.Helper()
	pc := c.Printers["mk3"]
	sim := marlinsim.New(marlinsim.Config{AdvancedOK: true, Logf: t.Logf})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	ctl := marlin.New(marlin.Config{
		Name: "mk3", Port: "sim",
		Open: func(octx context.Context) (io.ReadWriteCloser, error) {
			host, fw := net.Pipe()
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := sim.Serve(ctx, fw); err != nil && !errors.Is(err, context.Canceled) {
					t.Logf("sim: %v", err)
				}
				fw.Close()
			}()
			return host, nil
		},
		Filter:       pc.Policy.(*policy.Policy),
		BootWait:     50 * time.Millisecond,
		PollInterval: 200 * time.Millisecond,
		Logf:         t.Logf,
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctl.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		wg.Wait()
	})
	pc.Printer = ctl
	c.Printers["mk3"] = pc
	return sim, ctl
}

// TestSlicerFlowOnSimulator: PrusaSlicer's upload-and-print and Cura's select-and-print and
// polling against the real controller and the simulator; the prints complete, and refused
// commands never reach the firmware.
func TestSlicerFlowOnSimulator(t *testing.T) {
	var sim *marlinsim.Sim
	var ctl *marlin.Controller
	h := newHarness(t, func(c *Config) { sim, ctl = simPrinter(t, c) })
	waitFor(t, "operational", func() bool { return ctl.Status().State == marlin.Operational })

	job := "; PrusaSlicer\n; estimated printing time (normal mode) = 1m 2s\nG28\nM104 S200\nM140 S60\nG1 X10 Y10 Z0.3 F3000\nG1 X20 E1.5\nG1 X30 E3\nM104 S0\nM140 S0\n"
	r := uploadReq(operatorAddr, "/api/files/local", []formPart{{name: "print", value: "true"}, {name: "path", value: ""}, {name: "file", filename: "sim.gcode", value: job}}, true)
	r.header, r.noCSRF = map[string]string{"X-Api-Key": "oscar-key"}, true
	w := h.do(r)
	if w.Code != http.StatusCreated || decode(t, w)["effectivePrint"] != true {
		t.Fatalf("upload and print = %d %s", w.Code, w.Body)
	}
	waitJobDone := func(file string) {
		t.Helper()
		waitFor(t, file+" done", func() bool {
			j := decode(t, h.do(req{method: "GET", target: "/api/job", from: viewerAddr}))
			p := j["progress"].(map[string]any)
			return j["state"] == "Operational" && p["completion"] == 100.0
		})
	}
	waitJobDone("sim.gcode")
	ex := strings.Join(sim.Executed(), "\n")
	for _, want := range []string{"G28", "M104 S200", "G1 X30 E3"} {
		if !strings.Contains(ex, want) {
			t.Errorf("simulator did not execute %q:\n%s", want, ex)
		}
	}

	// Cura: upload, select with print via the Location, poll.
	r = uploadReq(operatorAddr, "/api/files/local", []formPart{{name: "file", filename: "cura.gcode", value: "G28 X Y\nG1 X50 Y50 F6000\n"}}, true)
	w = h.do(r)
	_, rest, _ := strings.Cut(w.Header().Get("Location"), "api/")
	if w := h.do(req{method: "POST", target: "/api/" + rest, from: operatorAddr, body: `{"command":"select","print":true}`}); w.Code != http.StatusNoContent {
		t.Fatalf("select and print = %d %s", w.Code, w.Body)
	}
	waitJobDone("cura.gcode")
	if !strings.Contains(strings.Join(sim.Executed(), "\n"), "G1 X50 Y50 F6000") {
		t.Errorf("cura job not executed")
	}

	// Refused through the API and the terminal: none reaches the firmware.
	before := len(sim.Executed())
	for _, bad := range []string{"M104 S400", "M140 S200", "M303 S400", "M997", "M500", "M42 P13 S255", "M211 S0", "M302 P1", "M28 x.gco", "M575 B9600"} {
		w := h.do(req{method: "POST", target: "/api/printer/command", from: operatorAddr, body: `{"command":"` + bad + `"}`})
		if w.Code != http.StatusUnprocessableEntity {
			t.Errorf("%s = %d %s, want 422", bad, w.Code, w.Body)
		}
		w = h.do(req{method: "POST", target: "/api/v1/printers/mk3/terminal", from: adminAddr, to: gwAddr, body: `{"command":"` + bad + `"}`})
		if w.Code != http.StatusUnprocessableEntity {
			t.Errorf("terminal %s = %d %s, want 422", bad, w.Code, w.Body)
		}
	}
	if w := h.do(req{method: "POST", target: "/api/printer/command", from: operatorAddr, body: `{"command":"M106 S77"}`}); w.Code != http.StatusNoContent {
		t.Fatalf("M106 = %d %s", w.Code, w.Body)
	}
	waitFor(t, "M106 executed", func() bool { return strings.Contains(strings.Join(sim.Executed()[before:], "\n"), "M106 S77") })
	for _, l := range sim.Executed()[before:] {
		for _, bad := range []string{"S400", "M140 S200", "M303", "M997", "M500", "M42", "M211", "M302", "M28", "M575"} {
			if strings.Contains(l, bad) {
				t.Errorf("refused %q reached the simulator as %q", bad, l)
			}
		}
	}
	// The printer's state reads through: temperatures from the firmware.
	waitFor(t, "temperature report", func() bool { st := ctl.Status(); return len(st.Temps.Tools) > 0 && st.Temps.Bed != nil })
	pr := decode(t, h.do(req{method: "GET", target: "/api/printer", from: viewerAddr}))
	has(t, "printer on sim", pr, "temperature.tool0.actual", "temperature.bed.actual", "state.flags.operational")
}
