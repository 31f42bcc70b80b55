package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// printerFlow is what a slicer does through the tunnel against a simulated printer's OctoPrint
// API (reference/octoprint-api.md): PrusaSlicer's connection test (GET /api/version with the
// API key), then upload-and-print (POST /api/files/local with print=true: 201 and an absolute
// Location); the gateway's native API then shows the job finish on the simulator.
func printerFlow(t *testing.T, l *lab, printerAddr, gwURL, apiKey string) {
	base := "http://" + printerAddr
	out, err := l.cl.cmd("curl", "-sS", "--max-time", "5", "-H", "X-Api-Key: "+apiKey, base+"/api/version").CombinedOutput()
	if err != nil {
		t.Fatalf("GET /api/version: %v\n%s", err, out)
	}
	var v map[string]any
	if err := json.Unmarshal(out, &v); err != nil || v["api"] == nil {
		t.Fatalf("GET /api/version = %s (%v), want a JSON object with \"api\"", out, err)
	}
	// A slicer sends to a printer that is up: wait for the controller to connect first.
	waitFor(t, "printer operational", 30*time.Second, func() bool {
		out, err := l.cl.cmd("curl", "-sS", "--max-time", "5", "-H", "X-Api-Key: "+apiKey, gwURL+"api/v1/printers/mk").Output()
		var st struct{ State string }
		return err == nil && json.Unmarshal(out, &st) == nil && st.State == "operational"
	})
	gcode := filepath.Join(t.TempDir(), "cube.gcode")
	os.WriteFile(gcode, []byte("; a small job\nG28\nG90\nG1 X10 Y10 Z1 F3000\nG1 X20 Y20\nG1 X10 Y10\nM400\n"), 0o644)
	out, err = l.cl.cmd("curl", "-sS", "--max-time", "10", "-D", "-", "-o", "/dev/null",
		"-H", "X-Api-Key: "+apiKey, "-F", "file=@"+gcode, "-F", "print=true", base+"/api/files/local").CombinedOutput()
	if err != nil {
		t.Fatalf("upload: %v\n%s", err, out)
	}
	head := string(out)
	if !regexp.MustCompile(`^HTTP/1.1 201`).MatchString(head) || !regexp.MustCompile(`(?im)^Location: http://[^/]+/api/files/local/cube.gcode\s*$`).MatchString(head) {
		t.Fatalf("upload answer, want 201 and an absolute Location:\n%s", head)
	}
	var job struct {
		State string
		Job   *struct {
			Done   bool
			Failed string
		}
	}
	waitFor(t, "the job done on the simulator", 60*time.Second, func() bool {
		out, err := l.cl.cmd("curl", "-sS", "--max-time", "5", "-H", "X-Api-Key: "+apiKey, gwURL+"api/v1/printers/mk").Output()
		if err != nil || json.Unmarshal(out, &job) != nil {
			return false
		}
		if job.Job != nil && job.Job.Failed != "" {
			t.Fatalf("job failed: %s", job.Job.Failed)
		}
		return job.Job != nil && job.Job.Done
	})
	if !strings.EqualFold(job.State, "operational") {
		t.Errorf("printer state after the job = %q, want operational", job.State)
	}
}
