package printerd

import (
	"context"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/printerd/audit"
)

// fullAudit is an audit log on a full disk.
type fullAudit struct{ memAudit }

func (a *fullAudit) Append(context.Context, audit.Record) error { return syscall.ENOSPC }

// TestDevicesWriteAhead: enroll and revoke write their intent before they change the roster,
// and are refused with 507, changing nothing, when it cannot be written.
func TestDevicesWriteAhead(t *testing.T) {
	h := newHarness(t)
	w := h.do(req{method: "POST", target: "/api/v1/devices", from: adminAddr, to: gwAddr, body: `{"name":"newphone","role":"viewer"}`})
	if w.Code != http.StatusCreated {
		t.Fatalf("enroll = %d (%s)", w.Code, w.Body)
	}
	w = h.do(req{method: "DELETE", target: "/api/v1/devices/newphone", from: adminAddr, to: gwAddr})
	if w.Code/100 != 2 {
		t.Fatalf("revoke = %d (%s)", w.Code, w.Body)
	}
	recs, _ := h.audit.Tail(10)
	var got []string
	for _, r := range recs {
		got = append(got, r.Action+":"+r.Result)
	}
	if want := "enroll:intent enroll:ok revoke:intent revoke:ok"; strings.Join(got, " ") != want {
		t.Errorf("audit = %q, want %q", got, want)
	}

	full := &fullAudit{}
	h = newHarness(t, func(c *Config) { c.Audit = full })
	before := len(h.devices.Peers())
	w = h.do(req{method: "POST", target: "/api/v1/devices", from: adminAddr, to: gwAddr, body: `{"name":"newphone","role":"viewer"}`})
	if w.Code != http.StatusInsufficientStorage || !strings.Contains(w.Body.String(), "disk") {
		t.Errorf("enroll on a full disk = %d (%s), want 507 naming the disk", w.Code, w.Body)
	}
	if n := len(h.devices.Peers()); n != before {
		t.Errorf("enroll on a full disk changed the roster: %d devices, want %d", n, before)
	}
	w = h.do(req{method: "DELETE", target: "/api/v1/devices/oscar", from: adminAddr, to: gwAddr})
	if w.Code != http.StatusInsufficientStorage {
		t.Errorf("revoke on a full disk = %d (%s), want 507", w.Code, w.Body)
	}
	for _, p := range h.devices.Peers() {
		if p.Name == "oscar" && p.State != enroll.Active {
			t.Errorf("revoke on a full disk changed oscar to %s", p.State)
		}
	}
}
