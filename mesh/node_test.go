package mesh

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/printgate/printgate/mesh/meshtest"
)

// ours reports the stacks of goroutines running this package's or raft's code, less those
// that wait on a raft future a raft that shut down never answers (see orphaned).
func ours() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if orphaned(g) {
			continue
		}
		if strings.Contains(g, "printgate/mesh.") && !strings.Contains(g, "printgate/mesh.Test") && !strings.Contains(g, "testing.tRunner") ||
			strings.Contains(g, "hashicorp/raft") {
			out = append(out, g)
		}
	}
	return out
}

// orphaned reports whether the goroutine g is wait's helper blocked on a raft future. raft
// answers every future while it runs (a follower refuses what reaches its apply queue), but a
// future still queued when raft shuts down is never answered, and a barrier's or membership
// change's future has no shutdown channel to end its wait: the helper then stays blocked. That
// is one goroutine per write in flight at Close, which only a process exit ends; it is a
// limit of hashicorp/raft v1.7.2's futures, not state this package keeps.
func orphaned(g string) bool {
	return strings.Contains(g, "hashicorp/raft.(*deferError).Error") && strings.Contains(g, "printgate/mesh.wait.func1")
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.enroll(c.follower(), "dev")
	for _, tn := range c.running() {
		c.stop(tn)
	}
	deadline := time.Now().Add(eventually)
	for {
		left := ours()
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left after Close:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := c.nodes[0].Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
}

func TestOpenFailsClosedOnCorruptFiles(t *testing.T) {
	for _, file := range []string{FileRevocations, FileReplica} {
		t.Run(file, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, file), []byte(`{"version":1,"revoc`), 0o600); err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			n, err := Open(Config{ID: "gw1", Dir: dir, Listener: ln, Dial: meshtest.New().Dialer("x")})
			if err == nil {
				n.Close()
				t.Fatalf("Open with a corrupt %s succeeded", file)
			}
			if !strings.Contains(err.Error(), file) {
				t.Errorf("Open = %v, want it to name %s", err, file)
			}
		})
	}
}

func TestOpenRefusesIncompleteConfig(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dial := meshtest.New().Dialer("x")
	for _, cfg := range []Config{
		{Dir: t.TempDir(), Listener: ln, Dial: dial},
		{ID: "gw1", Listener: ln, Dial: dial},
		{ID: "gw1", Dir: t.TempDir(), Dial: dial},
		{ID: "gw1", Dir: t.TempDir(), Listener: ln},
	} {
		if n, err := Open(cfg); !errors.Is(err, ErrInvalid) {
			if n != nil {
				n.Close()
			}
			t.Errorf("Open(%+v) = %v, want ErrInvalid", cfg, err)
		}
	}
}

func TestBootstrapTwiceRefused(t *testing.T) {
	c := newCluster(t, 1, nil)
	_, err := c.nodes[0].Bootstrap(context.Background(), InitCmd{})
	if !errors.Is(err, ErrExists) {
		t.Errorf("second bootstrap = %v, want ErrExists", err)
	}
	if got := len(c.nodes[0].Roster().Gateways()); got != 1 {
		t.Errorf("mesh of one has %d gateways", got)
	}
}
