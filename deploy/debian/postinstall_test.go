package debian

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPostInstallPath follows docs/install.md after the package is installed: the service does
// not make the gateway's state with a guessed endpoint before the owner's `printgate init
// --endpoint …` (the unit waits for the file init makes, and its command line refuses the empty
// directory StateDirectory= leaves), and that init then succeeds where the condition looks.
func TestPostInstallPath(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skipf("needs the go command to build printgate: %v", err)
	}
	const stateDir = "/var/lib/printgate"
	unit := mustRead(t, "printgate.service")
	set := map[string][]string{}
	for _, line := range strings.Split(unit, "\n") {
		line = strings.TrimSpace(line)
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			set[k] = append(set[k], v)
		}
	}
	cond := set["ConditionPathExists"]
	if len(cond) != 1 || filepath.Dir(cond[0]) != stateDir {
		t.Fatalf("unit ConditionPathExists = %q, want one file in %s that init makes", cond, stateDir)
	}
	if len(set["ExecStart"]) != 1 || strings.Contains(set["ExecStart"][0], "--init") {
		t.Fatalf("unit ExecStart = %q, want one command line without --init", set["ExecStart"])
	}

	dir := t.TempDir()
	bin := filepath.Join(dir, "printgate")
	build := exec.Command("go", "build", "-o", bin, "./cmd/printgate")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	state := filepath.Join(dir, "var-lib-printgate")
	if err := os.Mkdir(state, 0o700); err != nil { // as StateDirectory= makes it
		t.Fatal(err)
	}
	pg := func(line string) (string, error) {
		t.Helper()
		var args []string
		for _, f := range strings.Fields(strings.ReplaceAll(line, stateDir, state)) {
			if f != "sudo" && f != "$PRINTGATE_ARGS" && f != "\\" {
				args = append(args, f)
			}
		}
		if len(args) == 0 || filepath.Base(args[0]) != "printgate" {
			t.Fatalf("not a printgate command line: %q", line)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, args[1:]...).CombinedOutput()
		return string(out), err
	}

	// Were the service started anyway (systemctl start by hand, an older systemd), its command
	// line refuses and leaves the directory empty.
	if out, err := pg(set["ExecStart"][0] + " --interface none"); err == nil || !strings.Contains(out, "printgate init") {
		t.Errorf("the unit's command on an empty state directory = %v, %q; want a refusal naming printgate init", err, out)
	}
	if ents, _ := os.ReadDir(state); len(ents) != 0 {
		t.Fatalf("the unit's command wrote %d files into the empty state directory", len(ents))
	}

	// docs/install.md: the package, then init with the endpoint, then start the service.
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "install.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	iApt := strings.Index(text, "apt install ./printgate_")
	iStart := strings.Index(text, "systemctl start printgate")
	var initLine string
	for _, line := range strings.Split(text, "\n") {
		if i := strings.Index(line, "printgate init --state "+stateDir+" --endpoint"); i >= 0 && iApt >= 0 && strings.Index(text, line) > iApt {
			initLine = line
			break
		}
	}
	if iApt < 0 || initLine == "" || iStart < strings.Index(text, initLine) {
		t.Fatalf("docs/install.md lacks the package path: apt install, then printgate init --state %s --endpoint …, then systemctl start printgate", stateDir)
	}
	if out, err := pg(initLine); err != nil {
		t.Fatalf("docs/install.md's %q after installing: %v\n%s", strings.TrimSpace(initLine), err, out)
	}
	if _, err := os.Stat(filepath.Join(state, filepath.Base(cond[0]))); err != nil {
		t.Errorf("after init the unit's condition %s does not hold: %v", cond[0], err)
	}
}
