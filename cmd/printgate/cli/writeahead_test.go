package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/printgate/printgate/printerd/audit"
)

// TestOfflineWriteAhead: enroll and revoke with no gateway running record their intent and
// outcome in STATE/audit.log; with an audit log that cannot be written they change nothing
// and exit non-zero naming it; audit verify lists an intent without an outcome.
func TestOfflineWriteAhead(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "st")
	if _, errOut, code := runCLI(t, "init", "--state", dir, "--endpoint", "gw.example.org:51820"); code != 0 {
		t.Fatalf("init: %s", errOut)
	}
	if _, errOut, code := runCLI(t, "enroll", "--state", dir, "phone", "--qr", "none"); code != 0 {
		t.Fatalf("enroll: %s", errOut)
	}
	if _, errOut, code := runCLI(t, "revoke", "--state", dir, "phone"); code != 0 {
		t.Fatalf("revoke: %s", errOut)
	}
	path := audit.Path(dir)
	h, open, err := audit.Unfinished(path)
	if err != nil || h.Seq != 4 || len(open) != 0 {
		t.Fatalf("audit log after offline enroll and revoke: head %+v, unfinished %v, %v; want 4 records, none unfinished", h, open, err)
	}

	// An audit log that cannot be written: nothing changes.
	os.Rename(path, path+".aside")
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := runCLI(t, "enroll", "--state", dir, "tablet", "--qr", "none")
	if code == 0 || !strings.Contains(errOut, path) {
		t.Errorf("enroll with an unwritable audit log: exit %d, %q; want non-zero naming %s", code, errOut, path)
	}
	out, _, _ := runCLI(t, "peers", "--state", dir, "--json")
	if strings.Contains(out, "tablet") {
		t.Errorf("enroll with an unwritable audit log enrolled tablet: %s", out)
	}
	os.Remove(path)
	os.Rename(path+".aside", path)

	// A crash between intent and action: verify reports it.
	l, err := audit.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Begin(context.Background(), l, audit.Record{Action: audit.ActionRevoke, Args: map[string]string{"name": "laptop"}}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	out, errOut, code = runCLI(t, "audit", "verify", "--state", dir)
	if code != 0 || !strings.Contains(out, "1 intents without an outcome") || !strings.Contains(out, "revoke name=laptop") {
		t.Errorf("audit verify: exit %d, %q %q; want the laptop intent reported", code, out, errOut)
	}
}
