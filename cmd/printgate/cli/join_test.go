package cli

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/printgate/printgate/mesh"
)

func joinToken(t *testing.T, expires time.Time, endpoint string) string {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := mesh.NewToken(expires, netip.MustParseAddr("10.77.0.60"), mesh.Key(k.PublicKey()), netip.MustParseAddr("10.77.0.1"), endpoint)
	if err != nil {
		t.Fatal(err)
	}
	return tok.Encode()
}

// TestInitJoinRefusedBeforeTheNetwork: what can be refused without the inviter is refused
// before any packet, with a clear message, and leaves nothing on disk.
func TestInitJoinRefusedBeforeTheNetwork(t *testing.T) {
	good := joinToken(t, time.Now().Add(time.Hour), "127.0.0.1:1")
	expired := joinToken(t, time.Now().Add(-time.Minute), "127.0.0.1:1")
	swap := "A"
	if good[40] == 'A' {
		swap = "B"
	}
	damaged := good[:40] + swap + good[41:]
	initialized := t.TempDir()
	if err := os.WriteFile(filepath.Join(initialized, "gateway.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"damaged", []string{"--join", damaged, "--endpoint", "127.0.0.1:51821"}, exitError, "checksum"},
		{"truncated", []string{"--join", good[:len(good)-9], "--endpoint", "127.0.0.1:51821"}, exitError, "join token"},
		{"not a token", []string{"--join", "[Interface]", "--endpoint", "127.0.0.1:51821"}, exitError, "pgjoin1."},
		{"expired", []string{"--join", expired, "--endpoint", "127.0.0.1:51821"}, exitError, "expired at"},
		{"no endpoint", []string{"--join", good}, exitUsage, "--endpoint"},
		{"prefix", []string{"--join", good, "--endpoint", "127.0.0.1:51821", "--prefix", "10.9.0.0/24"}, exitUsage, "--prefix"},
		{"bad name", []string{"--join", good, "--endpoint", "127.0.0.1:51821", "--name", "-x"}, exitUsage, "--name"},
		{"initialized", []string{"--join", good, "--endpoint", "127.0.0.1:51821", "--state", initialized}, exitError, "already initialized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "state")
			args := append([]string{"init", "--state", state}, tt.args...)
			out, errOut, code := runCLI(t, args...)
			if code != tt.code || !strings.Contains(errOut, tt.want) {
				t.Errorf("printgate %q = exit %d, stderr %q; want exit %d saying %q", args, code, errOut, tt.code, tt.want)
			}
			if strings.Contains(errOut, "joining the mesh through") {
				t.Errorf("printgate %q reached for the network:\n%s", args, errOut)
			}
			if _, err := os.Stat(state); err == nil {
				t.Errorf("printgate %q left %s behind (stdout %q)", args, state, out)
			}
		})
	}
	if b, _ := os.ReadFile(filepath.Join(initialized, "gateway.json")); string(b) != "{}" {
		t.Errorf("an initialized state directory was touched: gateway.json = %q", b)
	}
}

// TestInitJoinUnreachableWritesNothing: a join whose inviter never answers names the
// endpoint it tried, and writes nothing.
func TestInitJoinUnreachableWritesNothing(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	ep := "127.0.0.1:9" // discard: nothing answers WireGuard there
	_, errOut, code := runCLI(t, "init", "--state", state, "--join", joinToken(t, time.Now().Add(time.Hour), ep),
		"--endpoint", "127.0.0.1:51821", "--join-timeout", "1s")
	if code != exitError || !strings.Contains(errOut, "unreachable") || !strings.Contains(errOut, ep) {
		t.Errorf("init --join to a silent inviter = exit %d, stderr %q; want exit 1, unreachable, %s", code, errOut, ep)
	}
	if _, err := os.Stat(state); err == nil {
		t.Errorf("a failed join left %s behind", state)
	}
}

// TestFirstBootJoin: the appliance's first boot (`run --init --boot-dir`) with join= in
// printgate.txt takes the join path, not init: an expired token fails there, saying so, and
// no state is made; a damaged one is refused with the settings file's line.
func TestFirstBootJoin(t *testing.T) {
	tests := []struct {
		name     string
		settings string
		want     []string
	}{
		{"expired", "endpoint=127.0.0.1:51821\njoin=" + joinToken(t, time.Now().Add(-time.Minute), "127.0.0.1:1") + "\n",
			[]string{"first boot: joining the mesh (join= in printgate.txt)", "expired at"}},
		{"damaged", "endpoint=127.0.0.1:51821\njoin=pgjoin1.AAAA\n", []string{"printgate.txt", "line 2", "join token"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			boot := t.TempDir()
			if err := os.WriteFile(filepath.Join(boot, "printgate.txt"), []byte(tt.settings), 0o644); err != nil {
				t.Fatal(err)
			}
			state := filepath.Join(t.TempDir(), "state")
			_, errOut, code := runCLI(t, "run", "--state", state, "--init", "--boot-dir", boot)
			if code != exitError {
				t.Errorf("first boot exit %d, want %d (stderr %q)", code, exitError, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("first boot stderr %q does not say %q", errOut, w)
				}
			}
			if _, err := os.Stat(state); err == nil {
				t.Errorf("a failed first-boot join left %s behind", state)
			}
		})
	}
}
