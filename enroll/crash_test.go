package enroll

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	crashDirEnv  = "PRINTGATE_ENROLL_CRASH_DIR"
	crashNameEnv = "PRINTGATE_ENROLL_CRASH_NAME"
)

// TestCrashChild is the child of TestCrashDuringWrite: it opens the state directory, says
// "ready", enrolls one peer (one roster write) and exits. It does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("helper process for TestCrashDuringWrite")
	}
	r, err := Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	fmt.Println("ready")
	if _, err := r.Enroll(Request{Name: os.Getenv(crashNameEnv)}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(4)
	}
	fmt.Println("done")
	// Wait for the kill: exiting on our own costs a second under the race detector.
	time.Sleep(time.Minute)
	os.Exit(5)
}

// crashRun starts a child that enrolls name in dir and kills it with SIGKILL delay after it
// reports ready (delay < 0: once it reports done). It returns the time from ready to done.
func crashRun(t *testing.T, dir, name string, delay time.Duration) time.Duration {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashNameEnv+"="+name)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(out)
	line, err := rd.ReadString('\n')
	if err != nil || line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child did not get ready: %q, %v; stderr: %s", line, err, stderr.String())
	}
	start := time.Now()
	var elapsed time.Duration
	if delay < 0 {
		line, err = rd.ReadString('\n')
		elapsed = time.Since(start)
		if err != nil || line != "done\n" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child did not finish: %q, %v; stderr: %s", line, err, stderr.String())
		}
	} else if delay > 0 {
		time.Sleep(delay)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	return elapsed
}

// TestCrashDuringWrite kills a writer at random points of a roster write, 500 times, and
// checks that every time the roster loads as exactly the old or exactly the new content.
func TestCrashDuringWrite(t *testing.T) {
	runs := 500
	if testing.Short() {
		runs = 60
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))

	// Calibrate: how long one enrollment write takes here, uninterrupted.
	dir, _ := newState(t, InitOptions{})
	var took []time.Duration
	for i := range 5 {
		took = append(took, crashRun(t, dir, fmt.Sprintf("cal%d", i), -1))
	}
	slices.Sort(took)
	window := took[len(took)/2] * 3 / 2
	t.Logf("one write takes about %v; killing at uniform random points in [0, %v)", took[len(took)/2], window)

	var sawOld, sawNew, torn int
	for i := 0; i < runs; i++ {
		if i%50 == 0 { // keep rosters small
			dir, _ = newState(t, InitOptions{})
		}
		rosterPath := filepath.Join(dir, FileRoster)
		old, err := os.ReadFile(rosterPath)
		if err != nil {
			t.Fatal(err)
		}
		oldBody, err := decodeRosterFile(dir, old)
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("run%d", i)
		crashRun(t, dir, name, time.Duration(rng.Int64N(int64(window))))

		if tmps, _ := filepath.Glob(filepath.Join(dir, ".*.tmp")); len(tmps) > 0 {
			torn++
		}
		r, err := Open(dir)
		if err != nil {
			t.Fatalf("run %d: Open after SIGKILL = %v", i, err)
		}
		snap := r.Snapshot()
		r.Close()
		cur, _ := os.ReadFile(rosterPath)
		switch snap.Generation {
		case oldBody.Generation:
			sawOld++
			if !bytes.Equal(cur, old) {
				t.Fatalf("run %d: roster has the old generation %d but not the old bytes", i, snap.Generation)
			}
		case oldBody.Generation + 1:
			sawNew++
			n := len(oldBody.Peers)
			if len(snap.Peers) != n+1 || snap.Peers[n].Name != name || snap.Peers[n].State != Pending {
				t.Fatalf("run %d: new generation holds %v, want the old peers plus %s", i, snap.Peers, name)
			}
			for j, dp := range oldBody.Peers {
				if !peersEqual([]Peer{dp.peer()}, []Peer{snap.Peers[j]}) {
					t.Fatalf("run %d: peer %d changed in the new generation", i, j)
				}
			}
			prev, _ := os.ReadFile(filepath.Join(dir, FileRosterPrev))
			if !bytes.Equal(prev, old) {
				t.Fatalf("run %d: roster.prev.json is not the old generation", i)
			}
		default:
			t.Fatalf("run %d: generation %d, want %d or %d", i, snap.Generation, oldBody.Generation, oldBody.Generation+1)
		}
	}
	t.Logf("%d runs: %d old, %d new, %d killed with a temp file on disk", runs, sawOld, sawNew, torn)
	if sawOld == 0 || sawNew == 0 {
		t.Errorf("kills landed only on one side (%d old, %d new): the test did not exercise the write", sawOld, sawNew)
	}
}

// decodeRosterFile decodes roster bytes with dir's gateway.
func decodeRosterFile(dir string, data []byte) (*rosterBody, error) {
	g, err := loadGateway(dir)
	if err != nil {
		return nil, err
	}
	b, err := decodeRoster(data, g)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", strings.TrimSpace(string(data[:min(len(data), 40)])), err)
	}
	return b, nil
}
