package gateway

import (
	"context"
	"io"
	"net/http"
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

// TestNoAuditLogRefusesPrinterActions: a gateway whose audit log could not be opened at start
// refuses printer actions through the tunnel (507 naming the disk and the log) instead of
// applying them unrecorded, and still passes an emergency stop.
func TestNoAuditLogRefusesPrinterActions(t *testing.T) {
	dir := newState(t)
	g := startGateway(t, dir)
	en, err := g.Enroll(enroll.Request{Name: "op", Role: enroll.Operator})
	if err != nil {
		t.Fatal(err)
	}
	g.Close()
	if err := os.Rename(audit.Path(dir), audit.Path(dir)+".aside"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(audit.Path(dir), 0o700); err != nil { // cannot be opened
		t.Fatal(err)
	}
	g, err = Start(context.Background(), Config{StateDir: dir, Printers: []PrinterSpec{{Name: "mk", Port: SimPort}}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	waitFor(t, "simulated printer operational", func() bool {
		st := g.Status()
		return len(st.Printers) == 1 && st.Printers[0].State == "operational"
	})
	base := "http://" + g.Status().Printers[0].Address
	hc := newClient(t, en.Config).httpClient(false)
	command := func(line string) (int, string) {
		req, _ := http.NewRequest("POST", base+"/api/printer/command", strings.NewReader(`{"command":"`+line+`"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Printgate", "1")
		var resp *http.Response
		waitFor(t, line+" answered", func() bool { resp, err = hc.Do(req); return err == nil })
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := command("M104 S190"); code != http.StatusInsufficientStorage || !strings.Contains(body, "disk") {
		t.Errorf("M104 S190 without an audit log = %d %s, want 507 naming the disk", code, body)
	}
	if code, body := command("M112"); code != http.StatusNoContent {
		t.Errorf("M112 without an audit log = %d %s, want 204", code, body)
	}
}
