package cli

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/printerd/audit"
)

const (
	crashStateEnv = "PRINTGATE_WRITEAHEAD_CRASH_STATE"
	crashNameEnv  = "PRINTGATE_WRITEAHEAD_CRASH_NAME"
)

// TestWriteAheadCrashChild is the child of TestWriteAheadCrash: it says "ready", runs
// `printgate enroll` (or `revoke` for a name starting with "-") with no gateway running, and
// waits for the kill. It does nothing in a normal run.
func TestWriteAheadCrashChild(t *testing.T) {
	state := os.Getenv(crashStateEnv)
	if state == "" {
		t.Skip("helper process for TestWriteAheadCrash")
	}
	name := os.Getenv(crashNameEnv)
	args := []string{"enroll", "--state", state, name, "--qr", "none"}
	if rest, ok := strings.CutPrefix(name, "-"); ok {
		args = []string{"revoke", "--state", state, rest}
	}
	fmt.Println("ready")
	var out bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: os.Stderr, getenv: func(string) string { return "" }}
	if code := run(context.Background(), e, args); code != 0 {
		os.Exit(code)
	}
	fmt.Println("done")
	time.Sleep(time.Minute) // wait for the kill
	os.Exit(5)
}

// crashChild runs one child and kills it delay after it is ready (delay < 0: once done). It
// returns how long the command took from ready to done.
func crashChild(t *testing.T, state, name string, delay time.Duration) time.Duration {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestWriteAheadCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashStateEnv+"="+state, crashNameEnv+"="+name)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Signal(syscall.SIGKILL)
	rd := bufio.NewReader(out)
	if line, err := rd.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("child not ready: %q, %v; stderr: %s", line, err, stderr.String())
	}
	start := time.Now()
	if delay < 0 {
		if line, err := rd.ReadString('\n'); err != nil || line != "done\n" {
			t.Fatalf("child did not finish: %q, %v; stderr: %s", line, err, stderr.String())
		}
		return time.Since(start)
	}
	time.Sleep(delay)
	return 0
}

// TestWriteAheadCrash kills `printgate enroll` and `printgate revoke` (no gateway running) at
// random points, 200 times, and checks that no roster change is ever without its record: every
// peer in the roster has an enroll intent in the audit log, every revoked one a revoke intent,
// and the log's chain stays intact.
func TestWriteAheadCrash(t *testing.T) {
	runs := 200
	if testing.Short() {
		runs = 40
	}
	state := filepath.Join(t.TempDir(), "st")
	if _, errOut, code := runCLI(t, "init", "--state", state, "--endpoint", "gw.example.org:51820"); code != 0 {
		t.Fatalf("init: %s", errOut)
	}
	var took []time.Duration
	for i := range 3 {
		took = append(took, crashChild(t, state, fmt.Sprintf("cal%d", i), -1))
	}
	window := max(took[0], took[1], took[2]) * 3 / 2
	t.Logf("one offline enroll takes about %v; killing at random points in [0, %v)", took[1], window)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))
	var enrolled []string
	for i := range runs {
		name := fmt.Sprintf("run%d", i)
		if i%4 == 3 && len(enrolled) > 0 {
			name = "-" + enrolled[rng.IntN(len(enrolled))]
		}
		crashChild(t, state, name, time.Duration(rng.Int64N(int64(window))))
		if !strings.HasPrefix(name, "-") {
			enrolled = append(enrolled, name)
		}
	}

	reg, err := enroll.Open(state)
	if err != nil {
		t.Fatal(err)
	}
	peers := reg.Peers()
	reg.Close()
	intents := map[string]bool{} // action + " " + name
	f, err := os.Open(audit.Path(state))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := audit.Scan(f, func(r audit.Record) error {
		if r.Result == audit.ResultIntent {
			intents[r.Action+" "+r.Args["name"]] = true
		}
		return nil
	}); err != nil {
		t.Fatalf("audit log after %d kills: %v", runs, err)
	}
	var unrecorded []string
	revoked := 0
	for _, p := range peers {
		if !intents["enroll "+p.Name] {
			unrecorded = append(unrecorded, "enroll "+p.Name)
		}
		if p.State == enroll.Revoked {
			revoked++
			if !intents["revoke "+p.Name] {
				unrecorded = append(unrecorded, "revoke "+p.Name)
			}
		}
	}
	t.Logf("%d kills: %d peers in the roster (%d revoked), %d intents recorded", runs, len(peers), revoked, len(intents))
	if len(unrecorded) > 0 {
		t.Errorf("%d roster changes without an audit record: %v", len(unrecorded), unrecorded)
	}
	if len(peers) == 0 {
		t.Error("no kill landed after an enrollment: the test did not exercise the write")
	}
}
