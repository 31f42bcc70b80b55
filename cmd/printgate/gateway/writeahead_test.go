package gateway

import (
	"os"
	"strings"
	"testing"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/printerd/audit"
)

// TestWriteAhead: the daemon records an enrollment's and a revocation's intent before the
// roster changes, and refuses both, changing nothing, when its audit log cannot be written.
func TestWriteAhead(t *testing.T) {
	dir := newState(t)
	g := startGateway(t, dir)
	if _, err := g.Enroll(enroll.Request{Name: "phone"}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Revoke("phone"); err != nil {
		t.Fatal(err)
	}
	if h, open, err := audit.Unfinished(audit.Path(dir)); err != nil || h.Seq != 4 || len(open) != 0 {
		t.Errorf("audit after enroll and revoke: head %+v, unfinished %v, %v; want 4 records, none unfinished", h, open, err)
	}

	// An audit log that cannot be opened (here: a directory in its place).
	dir2 := newState(t)
	if err := os.Mkdir(audit.Path(dir2), 0o700); err != nil {
		t.Fatal(err)
	}
	g2 := startGateway(t, dir2)
	if _, err := g2.Enroll(enroll.Request{Name: "tablet"}); err == nil || !strings.Contains(err.Error(), audit.Path(dir2)) {
		t.Errorf("Enroll without an audit log = %v, want a refusal naming %s", err, audit.Path(dir2))
	}
	if got := peerState(g2, "tablet"); got != "" {
		t.Errorf("refused enrollment left tablet %q", got)
	}
}
