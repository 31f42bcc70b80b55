package printerd

import (
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/printgate/printgate/printerd/marlin"
	"github.com/printgate/printgate/printerd/policy"
)

// One command per line on every path: a line with anything after an emergency word, or with a
// control character, is refused at the terminal (both faces), on the serial bridge, at upload
// and at send (the controller's Filter, which re-checks every job line), and nothing of it
// reaches the printer: neither whole nor cut down to the stop.
func TestOneCommandPerLineEveryPath(t *testing.T) {
	bad := []string{"M108 M104 S400", "M112 M997", "M410\rM997", "M112\x00", "G1 X1\x1bM997",
		"m410 G1 X1", "M108 ; fine\rM997", "M112\x1b"}
	h := newHarness(t)
	addr := h.serveAs(adminAddr, printerAddr, func(l net.Listener) error { return h.s.ServeBridge("mk3", l) })
	b := dialBridge(t, addr)
	for _, line := range bad {
		t.Run(strings.ToValidUTF8(line, "?"), func(t *testing.T) {
			body, _ := json.Marshal(map[string]any{"commands": []string{line}})
			for _, from := range []netip.Addr{adminAddr, operatorAddr, viewerAddr} {
				if w := h.do(req{method: "POST", target: "/api/printer/command", from: from, body: string(body)}); w.Code < 400 {
					t.Errorf("terminal (OctoPrint face) from %s: %d %s, want a refusal", from, w.Code, w.Body)
				}
			}
			body, _ = json.Marshal(map[string]string{"command": line})
			if w := h.do(req{method: "POST", target: "/api/v1/printers/mk3/terminal", from: adminAddr, to: gwAddr, body: string(body)}); w.Code < 400 {
				t.Errorf("terminal (native face): %d %s, want a refusal", w.Code, w.Body)
			}
			b.send(line)
			if got := b.until("ok"); len(got) != 2 || !strings.HasPrefix(got[0], "echo:printgate refused") {
				t.Errorf("bridge replies %q, want a refusal and ok", got)
			}
			up := uploadReq(adminAddr, "/api/files/local", []formPart{{name: "file", filename: "x.gcode", value: "G28\n" + line + "\nG1 X5\n"}}, true)
			if w := h.do(up); w.Code != 422 {
				t.Errorf("upload: %d %s, want 422", w.Code, w.Body)
			}
			// At send: the controller prepares a job or terminal line and asks its Filter.
			if l, err := marlin.Prepare(line); err == nil {
				if err := h.pr.filter.Check(l, marlin.Status{State: marlin.Printing}); !errors.Is(err, policy.ErrRefused) {
					t.Errorf("at send: Filter.Check(%q) = %v, want a refusal", l.Raw, err)
				}
			}
		})
	}
	if sent := h.pr.lines(); len(sent) != 0 {
		t.Errorf("printer got %q, want nothing", sent)
	}
	if h.pr.Status().State != marlin.Operational {
		t.Errorf("printer state %s, want operational: no stop went out", h.pr.Status().State)
	}
	// A bare stop still goes through every path.
	b.send("M108 ; break the wait")
	if got := b.line(); got != "ok" {
		t.Errorf("bridge M108 reply %q", got)
	}
	if got := strings.Join(h.pr.lines(), "|"); got != "M108" {
		t.Errorf("printer got %q, want the bare M108", got)
	}
}
