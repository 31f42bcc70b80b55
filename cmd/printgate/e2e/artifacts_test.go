package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// What a failed end-to-end test leaves for a person: its screenshots and the full logs of the
// processes it ran, in a folder that outlives the test and is named in the failure. A passing
// test's folder is removed, unless PRINTGATE_ARTIFACTS names where to keep them all.

// artifactDirs is the folder of each test that asked for one.
var artifactDirs struct {
	sync.Mutex
	m    map[*testing.T]string
	logs map[*testing.T]map[string]int // how many logs of each name the test keeps
}

// artifacts returns the test's artifact folder, made on first use:
// $PRINTGATE_ARTIFACTS/<test> when the variable is set, else a new folder under
// $TMPDIR/printgate-e2e-artifacts/.
func artifacts(t *testing.T) string {
	t.Helper()
	artifactDirs.Lock()
	defer artifactDirs.Unlock()
	if dir, ok := artifactDirs.m[t]; ok {
		return dir
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	var dir string
	keep := os.Getenv("PRINTGATE_ARTIFACTS")
	if keep != "" {
		dir = filepath.Join(keep, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatalf("artifact folder: %v", err)
		}
	} else {
		base := filepath.Join(os.TempDir(), "printgate-e2e-artifacts")
		if err := os.MkdirAll(base, 0o755); err != nil {
			t.Fatalf("artifact folder: %v", err)
		}
		d, err := os.MkdirTemp(base, name+"-")
		if err != nil {
			t.Fatalf("artifact folder: %v", err)
		}
		dir = d
	}
	if artifactDirs.m == nil {
		artifactDirs.m = map[*testing.T]string{}
	}
	artifactDirs.m[t] = dir
	t.Cleanup(func() {
		artifactDirs.Lock()
		delete(artifactDirs.m, t)
		delete(artifactDirs.logs, t)
		artifactDirs.Unlock()
		if t.Failed() {
			t.Logf("artifacts of this test kept in %s", dir)
			return
		}
		if keep == "" {
			os.RemoveAll(dir)
		}
	})
	return dir
}

// keepLog arranges that, if the test fails, the whole of log is written to the test's artifact
// folder as name and its last lines are printed with the failure. Call it before registering
// the cleanup that stops the process writing log, so that the log is complete when it runs.
func keepLog(t *testing.T, name string, log fmt.Stringer) {
	t.Helper()
	dir := artifacts(t)
	artifactDirs.Lock()
	if artifactDirs.logs == nil {
		artifactDirs.logs = map[*testing.T]map[string]int{}
	}
	if artifactDirs.logs[t] == nil {
		artifactDirs.logs[t] = map[string]int{}
	}
	artifactDirs.logs[t][name]++
	if n := artifactDirs.logs[t][name]; n > 1 {
		ext := filepath.Ext(name)
		name = fmt.Sprintf("%s-%d%s", strings.TrimSuffix(name, ext), n, ext)
	}
	artifactDirs.Unlock()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		text := log.String()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Logf("keep %s: %v", name, err)
		}
		t.Logf("last lines of %s (all of it in %s):\n%s", name, p, tailLines(text, 40))
	})
}

// tailLines returns the last n lines of s.
func tailLines(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[… %d lines before]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
